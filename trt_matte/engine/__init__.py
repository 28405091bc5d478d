"""Inference backends: the Backend interface (``backend``) and its implementations,
ONNX Runtime on the CPU or CUDA and TensorRT. Which one runs is the API's choice."""
