"""pixlm: read images as a language.

Layers (imports point one way, see README): ``pixlm.runtime`` (numpy, OpenCV, ONNX Runtime; no
torch) <- ``pixlm`` (this package, sdk/: model, training, evaluation; torch) <- ``pixlm.export``.
Importing ``pixlm`` itself loads nothing heavy, so ``pixlm.runtime`` works without torch.
"""

__version__ = "0.1.0"
