"""pixlm export: checkpoint -> ONNX (KV cache) -> validation -> INT8 -> TensorRT -> bundle."""
