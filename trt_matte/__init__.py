"""trt-matte: alpha mattes for videos and images with U²-Net, TensorRT or ONNX Runtime."""

__version__ = "0.1.0"

from .api import Matter, calibrate  # noqa: E402  (after __version__, which the CLI imports)
from .errors import MatteError  # noqa: E402

__all__ = ["Matter", "MatteError", "calibrate", "__version__"]
