"""trt-matte: alpha mattes for videos and images with U²-Net, TensorRT or ONNX Runtime.

``Matter``, ``build`` and ``calibrate`` load on first use: importing the package (as the
``trt-matte`` command does before anything else) stays instant, so Ctrl-C at any moment
reaches code that handles it.
"""

from .errors import MatteError
from .version import __version__

__all__ = ["Matter", "MatteError", "build", "calibrate", "__version__"]
_FROM_API = ("Matter", "build", "calibrate")


def __getattr__(name: str) -> object:
    if name in _FROM_API:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'trt_matte' has no attribute {name!r}")
