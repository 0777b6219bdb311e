"""What pixlm uses when not told otherwise: the shipped model, its bundle's folder, the sample video.

The shipped model is package data of the distribution's root package ``pixlm`` (``models/*.pt``,
see pyproject.toml). It is looked up here, with ``importlib.resources`` on the root (already
imported with any ``pixlm.*`` module), so the runtime names its default bundle without importing
the sdk, and ``pixlm-export`` exports the same file by default (``pixlm.checkpoint``).
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from pixlm import __version__
from pixlm.runtime.bundle import sha256_of

# OpenCV's sample clip (Debian's opencv-doc; 768x576, 795 frames, people walking): the video of the
# demo, the scene and open-set studies, the benchmarks and the tests.
VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def shipped_model() -> Path:
    """The shipped Fashion-MNIST checkpoint, installed with the package (a runtime-only deployment
    may have left it out: the path need not exist)."""
    return Path(str(resources.files("pixlm") / "models" / "fashion-mnist.pt"))


def default_bundle_dir() -> Path:
    """Where the shipped model's bundle lives: ``$PIXLM_HOME/default-<version>-<model hash>``.

    ``PIXLM_HOME`` defaults to ``~/.cache/pixlm``. The version and the first 8 hex digits of the
    shipped model file's SHA-256 in the name mean a new shipped model never picks up the bundle of
    an old one, even between releases (hashing the 4 MB file takes a few milliseconds).
    """
    name = f"default-{__version__}"
    model = shipped_model()
    if model.is_file():  # a runtime-only deployment may have left the checkpoint out
        name += "-" + sha256_of(model)[:8]
    return Path(os.environ.get("PIXLM_HOME", "~/.cache/pixlm")).expanduser() / name
