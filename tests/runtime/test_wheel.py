"""The wheel a camera box installs: every module of the source tree, and a runtime that runs.

The other tests use an editable install, which reads the source folders directly and so cannot
notice a subpackage the wheel leaves out. Here the wheel is built, installed without extras into a
fresh virtual environment (numpy, OpenCV, ONNX Runtime and click from pip's cache; no torch), and
used as a camera box would: `pixlm run` streams a clip through a bundle, and the Python API imports.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import VTEST, read_jsonl

ROOT = Path(__file__).resolve().parents[2]
# Source folder -> import name, as pyproject.toml's package-dir maps them.
LAYERS = {"sdk": "pixlm", "export": "pixlm/export", "runtime": "pixlm/runtime"}


def _run(*cmd: str, timeout: float = 600) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, (
        f"{' '.join(cmd)} exited {p.returncode}:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    )
    return p


def source_modules() -> set[str]:
    """Every module of the three layers, as the path it must have inside the wheel."""
    out = set()
    for folder, package in LAYERS.items():
        for f in (ROOT / folder).rglob("*.py"):
            rel = f.relative_to(ROOT / folder)
            if rel.parts[0] in LAYERS or "__pycache__" in rel.parts:
                continue
            out.add(f"{package}/{rel.as_posix()}")
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(out),
        str(ROOT),
    )
    (whl,) = out.glob("pixlm-*.whl")
    return whl


def test_wheel_holds_every_module_of_the_source_tree(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(source_modules() - names)
    assert not missing, f"the wheel lacks {missing}: list the package in pyproject.toml"
    assert any(n.startswith("pixlm/models/") and n.endswith(".pt") for n in names), "no shipped model"


@pytest.mark.slow
def test_installed_wheel_runs_without_torch(wheel, tiny_bundle, tmp_path):
    venv = tmp_path / "box"
    _run(sys.executable, "-m", "venv", str(venv))
    py, bin_ = venv / "bin" / "python", venv / "bin"
    _run(str(py), "-m", "pip", "install", "-q", str(wheel))  # no extras: the camera box's install
    installed = _run(str(py), "-m", "pip", "list", "--format=freeze").stdout.lower()
    assert "torch" not in installed, installed

    out = tmp_path / "out.jsonl"
    _run(
        str(bin_ / "pixlm"), "run", str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2",
        "--max-frames", "8", "--jsonl", str(out), "-q",
    )  # fmt: skip
    results = [r for r in read_jsonl(out) if r["type"] == "result"]
    assert len(results) == 32 and {r["region"]["name"] for r in results} == {"r0c0", "r0c1", "r1c0", "r1c1"}

    api = _run(str(py), "-c", "from pixlm import Recognizer; import pixlm.runtime.outputs; print(Recognizer)")
    assert "Recognizer" in api.stdout
