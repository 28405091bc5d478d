"""INT8 calibration: frames sampled as inference reads them (``sampling``), Q/DQ networks
(``quantize``), the procedure and its accuracy check (``calibrate``), and the store of
calibrations (``store``)."""
