"""Model -> matte graph (here) -> FP16 graph -> serialized TensorRT engine (planned)."""
