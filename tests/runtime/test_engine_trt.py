"""The TensorRT engine's device check (runs without TensorRT: it compares metadata only)."""

from __future__ import annotations

import pytest

from pixlm.runtime.engine_trt import EngineMismatchError, check_engine_metadata

META = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "precision": "int8"}
HERE = {"gpu": "Orin", "compute_capability": "8.7"}


def test_same_device_and_version_is_accepted():
    check_engine_metadata(META, "m.engine", device=HERE, trt_version="10.3.0")


@pytest.mark.parametrize(
    "device, version",
    [(HERE, "10.7.0"), ({"gpu": "NVIDIA A100", "compute_capability": "8.0"}, "10.3.0")],
)
def test_engine_for_another_device_is_refused(device, version):
    with pytest.raises(EngineMismatchError, match="rebuild it on this device: pixlm-export .* --tensorrt"):
        check_engine_metadata(META, "m.engine", device=device, trt_version=version)
