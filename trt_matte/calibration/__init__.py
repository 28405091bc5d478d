"""INT8 calibration: sample frames from the user's footage, build an explicit Q/DQ
matte graph and check it against the FP32 graph (``trt-matte calibrate``, planned)."""
