"""pixlm runtime: what runs on the camera box. numpy, OpenCV and ONNX Runtime only; never torch."""

from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig

__all__ = ["Tokenizer", "TokenizerConfig"]
