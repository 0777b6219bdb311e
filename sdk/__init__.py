"""pixlm: read images as a language.

Layers (imports point one way, see README): ``pixlm.runtime`` (numpy, OpenCV, ONNX Runtime; no
torch) <- ``pixlm`` (this package, sdk/: model, training, evaluation; torch) <- ``pixlm.export``.
Importing ``pixlm`` itself loads nothing heavy, so ``pixlm.runtime`` works without torch.
"""

import os

# The tokenizer's matrix products are tiny (a few hundred rows): OpenBLAS threads only add wake-up
# latency and fight ONNX Runtime for the cores (measured: 2.3 ms -> 0.13 ms per batch of 16 frames).
# It must be set before numpy loads; a value the user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.4.0"
