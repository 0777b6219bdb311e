"""Shared fixtures: a tiny checkpoint trained on real Fashion-MNIST images, built once per session.

Fixtures that need torch run it in a subprocess (the ``pixlm`` CLI), so the runtime tests can
block ``import torch`` in this process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixlm.runtime import defaults

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
VTEST = Path(defaults.VTEST)
BIN = Path(sys.executable).parent

# Small enough to train in ~20 s on 2 cores, good enough (~70%) for parity and gate tests.
TINY_TRAIN = [
    "--max-images",
    "3000",
    "--epochs",
    "2",
    "--eval-images",
    "500",
    "--patch",
    "4",
    "--codes",
    "64",
    "--layers",
    "2",
    "--heads",
    "2",
    "--d-model",
    "32",
    "--threads",
    "2",
    "--lr",
    "3e-3",
    "--seed",
    "0",
]


def run_cli(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a console script from this environment; returns the completed process."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}:\n{p.stdout}\n{p.stderr}")
    return p


# `pixlm run` in a subprocess whose `import torch` is blocked, as on a camera box
NO_TORCH = (
    "import sys\n"
    "class B:\n"
    "    def find_spec(self, n, p=None, t=None):\n"
    "        if n.split('.')[0] == 'torch': raise ImportError('torch blocked')\n"
    "sys.meta_path.insert(0, B())\n"
    "from pixlm.cli import main\n"
    "main(prog_name='pixlm')\n"
)


def pixlm_run(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", NO_TORCH, "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def read_jsonl(path: Path) -> list[dict]:
    text = path.read_text() if path.exists() else ""
    assert text == "" or text.endswith("\n"), "a truncated last line"
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    if not FASHION_MNIST.exists():
        pytest.fail("Fashion-MNIST missing: install Debian's dataset-fashion-mnist (make setup)")
    out = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    run_cli("pixlm", "train", *TINY_TRAIN, "-o", str(out))
    return out


# Export settings for test bundles: small held-out and calibration sets, speed columns barely timed,
# and a gate with slack (on 500 images one image is 0.2 points; the tiny model is noisy).
TINY_EXPORT = "--max-drop 2 --eval-images 500 --calib-images 64 --threads 2 --bench-seconds 0.05".split()


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory) -> Path:
    """A bundle exported from the tiny checkpoint by the real CLI (fp32, int8 QDQ, int8 dynamic)."""
    out = tmp_path_factory.mktemp("bundle") / "tiny"
    run_cli("pixlm-export", str(tiny_checkpoint), "-o", str(out), *TINY_EXPORT)
    return out


SCENE_MODEL = Path(__file__).parents[1] / "sdk" / "models" / "vtest-scene.pt"
MOTION_MODEL = Path(__file__).parents[1] / "sdk" / "models" / "vtest-motion.pt"


def export_video_bundle(model: Path, out: Path) -> Path:
    """A shipped vtest.avi model's bundle (fp32), its alert thresholds calibrated on the frames its
    checkpoint names (vtest.avi 50-60%), exported as `make demo` does (about 30 s)."""
    run_cli(
        "pixlm-export", str(model), "--data", str(VTEST), "--no-int8", "--no-dynamic",
        "--eval-images", "64", "--bench-seconds", "0", "-o", str(out),
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def scene_bundle(tmp_path_factory) -> Path:
    """The shipped scene (appearance) model's bundle."""
    return export_video_bundle(SCENE_MODEL, tmp_path_factory.mktemp("scene") / "bundle")


@pytest.fixture(scope="session")
def motion_bundle(tmp_path_factory) -> Path:
    """The shipped motion model's bundle (named as `make demo` names it)."""
    return export_video_bundle(MOTION_MODEL, tmp_path_factory.mktemp("motion") / "vtest-motion")


@pytest.fixture(scope="session")
def shipped_bundle(tmp_path_factory) -> Path:
    """The shipped Fashion-MNIST model's bundle (fp32 only), its open-set gate fitted on the first
    2,000 images of its calibration split (test images 0-1,999: the model trained on all 60,000
    training images), exported by the real CLI."""
    out = tmp_path_factory.mktemp("shipped") / "bundle"
    run_cli(
        "pixlm-export",
        "-o",
        str(out),
        "--no-int8",
        "--no-dynamic",
        "--eval-images",
        "2000",
        "--bench-seconds",
        "0",
        "--threads",
        "2",
    )
    return out
