"""pixlm: read images as a language.

Layers (imports point one way, see docs/architecture.md): ``pixlm.runtime`` (numpy, OpenCV, ONNX Runtime; no
torch) <- ``pixlm`` (this package, sdk/: model, training, evaluation; torch) <- ``pixlm.export``.
Importing ``pixlm`` itself loads nothing heavy, so ``pixlm.runtime`` works without torch.
``from pixlm import Recognizer`` (or ``Streamer``) loads the runtime on first use, never torch.
"""

import importlib
import os

# The tokenizer's matrix products are tiny (a few hundred rows): OpenBLAS threads only add wake-up
# latency and fight ONNX Runtime for the cores (measured: 2.3 ms -> 0.13 ms per batch of 16 frames).
# It must be set before numpy loads; a value the user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.7.0"

# The runtime's public classes, imported on first access (PEP 562) from pixlm.runtime, which
# imports them lazily too: `import pixlm` stays light and never loads OpenCV or ONNX Runtime.
_RUNTIME = ("Recognizer", "Streamer")

__all__ = ["Recognizer", "Streamer", "__version__"]


def __getattr__(name: str):
    if name in _RUNTIME:
        return getattr(importlib.import_module("pixlm.runtime"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_RUNTIME})
