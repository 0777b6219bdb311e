"""pixlm runtime: what runs on the camera box. numpy, OpenCV and ONNX Runtime only; never torch."""

import logging

from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig

# A library logs; the application decides where to. Without this, Python's last-resort handler
# printed every source status warning a second time beside the CLI's own line.
logging.getLogger("pixlm").addHandler(logging.NullHandler())

__all__ = ["Tokenizer", "TokenizerConfig"]
