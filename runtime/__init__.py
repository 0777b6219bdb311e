"""pixlm runtime: what runs on the camera box. numpy, OpenCV and ONNX Runtime only; never torch.

``Recognizer`` and ``Streamer`` are imported on first access, so ``import pixlm.runtime`` stays cheap.
"""

import importlib
import logging

from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig

# A library logs; the application decides where to. Without this, Python's last-resort handler
# printed every source status warning a second time beside the CLI's own line.
logging.getLogger("pixlm").addHandler(logging.NullHandler())

__all__ = ["Recognizer", "Streamer", "Tokenizer", "TokenizerConfig"]

_LAZY = {"Recognizer": "pixlm.runtime.recognizer", "Streamer": "pixlm.runtime.stream"}


def __getattr__(name: str):  # PEP 562
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later accesses skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
