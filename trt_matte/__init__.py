"""trt-matte: alpha mattes for videos and images with U²-Net, TensorRT or ONNX Runtime."""

__version__ = "0.1.0"
