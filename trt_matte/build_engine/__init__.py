"""Model -> matte graph (``matte_graph``, ``fp16``) -> serialized TensorRT engine
(``tensorrt_build``), kept in the engine cache (``engine_cache``)."""
