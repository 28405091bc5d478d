"""trt-matte: alpha mattes for videos and images with U²-Net, TensorRT or ONNX Runtime."""

from .api import Matter, build, calibrate
from .errors import MatteError
from .version import __version__

__all__ = ["Matter", "MatteError", "build", "calibrate", "__version__"]
