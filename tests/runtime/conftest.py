"""Runtime tests run with ``import torch`` blocked: the camera box never has torch."""

from __future__ import annotations

import sys

import pytest


class _BlockTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError(f"import of {name} blocked: the pixlm runtime must not use torch")
        return None


if "torch" in sys.modules:
    raise pytest.UsageError("torch was imported before the runtime tests: run tests/runtime on its own")
sys.meta_path.insert(0, _BlockTorch())


@pytest.fixture
def procs(tmp_path):
    """Start helper processes (cameras); every one is killed at teardown, whatever the test did."""
    from cameras import start_process, stop_processes

    started = []

    def start(cmd: list[str], ready: str | None = None):
        started.append(start_process(cmd, tmp_path / f"proc{len(started)}.log", ready))
        return started[-1]

    try:
        yield start
    finally:
        stop_processes(started)
