"""`pixlm-export` end to end (in-process click runner): the gate, bad input, no half bundles."""

from __future__ import annotations

import errno
import json
import os

import pytest
from click.testing import CliRunner

from pixlm.export import cli, pipeline
from pixlm.runtime import manifest as mf
from pixlm.runtime.io_spec import ATOL_FP32

# The tiny model on 200 images: one image is 0.5 points, so the gate gets slack (2 points) here.
FAST = [
    "--max-drop",
    "2",
    "--eval-images",
    "200",
    "--calib-images",
    "64",
    "--threads",
    "2",
    "--bench-seconds",
    "0",
    "--no-dynamic",
]


def export(*args: str):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def leftovers(parent):
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


def test_export_writes_a_bundle(tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    r = export(str(tiny_checkpoint), "-o", str(out), *FAST)
    assert r.exit_code == 0, r.output
    for step in (
        "onnx fp32",
        "validate fp32",
        "quantize int8 qdq",
        "accuracy int8 qdq",
        "tensorrt lint",
        "bundle",
    ):
        assert f"✓ {step}" in r.output
    assert "| format | size MB | held-out accuracy |" in r.output
    man = json.loads((out / mf.MANIFEST).read_text())
    assert set(man[mf.K_FILES]) == {mf.FP32, mf.INT8}
    assert man[mf.K_METRICS][mf.FP32][mf.M_MAX_ABS_DIFF] <= ATOL_FP32
    fp32, int8 = man[mf.K_METRICS][mf.FP32][mf.M_ACCURACY], man[mf.K_METRICS][mf.INT8][mf.M_ACCURACY]
    assert 100 * (fp32 - int8) <= 2
    assert man[mf.K_IO]["tensorrt_lint"]["problems"] == []
    assert leftovers(tmp_path) == []


def test_gate_failure_exits_nonzero_and_leaves_nothing(tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    r = export(str(tiny_checkpoint), "-o", str(out), *FAST, "--max-drop", "-1")
    assert r.exit_code == 1
    assert "✗ accuracy int8 qdq" in r.output
    assert "Error: int8 accuracy" in r.output and "--max-drop -1" in r.output
    assert "Traceback" not in r.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_existing_output_needs_force(tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "old.txt").write_text("previous bundle")
    r = export(str(tiny_checkpoint), "-o", str(out), *FAST)
    assert r.exit_code == 1 and "--force" in r.output
    r = export(str(tiny_checkpoint), "-o", str(out), *FAST, "--no-int8", "--force")
    assert r.exit_code == 0, r.output
    assert not (out / "old.txt").exists() and (out / mf.MANIFEST).is_file()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "case, extra, message",
    [
        ("missing checkpoint", [], "checkpoint not found"),
        ("corrupt checkpoint", [], "not a readable checkpoint"),
        ("few calibration images", ["--calib-images", "8"], "--calib-images 8: need at least"),
        ("fp16 without tensorrt", ["--fp16"], "add --tensorrt"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_checkpoint, tmp_path, case, extra, message):
    ckpt = tiny_checkpoint
    if case == "missing checkpoint":
        ckpt = tmp_path / "nope.pt"
    elif case == "corrupt checkpoint":
        ckpt = tmp_path / "corrupt.pt"
        ckpt.write_bytes(tiny_checkpoint.read_bytes()[:1000])
    out = tmp_path / "b"
    r = export(str(ckpt), "-o", str(out), *FAST, *extra)
    assert r.exit_code == 1
    assert message in r.output and "Traceback" not in r.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_unwritable_output(tiny_checkpoint, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = export(str(tiny_checkpoint), "-o", str(blocker / "b"), *FAST, "--no-int8")
    assert r.exit_code == 1 and str(blocker) in r.output and "Traceback" not in r.output


def test_disk_full_is_reported_and_cleaned_up(tiny_checkpoint, tmp_path, monkeypatch):
    def full(root, manifest):
        raise OSError(errno.ENOSPC, "No space left on device", str(root / mf.MANIFEST))

    monkeypatch.setattr(pipeline, "write_manifest", full)
    out = tmp_path / "b"
    r = export(str(tiny_checkpoint), "-o", str(out), *FAST, "--no-int8")
    assert r.exit_code == 1 and "disk full while writing" in r.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_tensorrt_missing_is_explained(tiny_checkpoint, tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    r = export(str(tiny_checkpoint), "-o", str(tmp_path / "b"), *FAST, "--tensorrt")
    assert r.exit_code == 1 and "TensorRT is not installed" in r.output and "JetPack" in r.output


def test_publishing_over_a_bundle_never_leaves_it_missing(tmp_path, monkeypatch):
    """Replacing a bundle (--force): at no rename is OUT_DIR absent, and the new files are fsynced
    before they are published."""
    from pixlm.export.bundle import publish

    out = tmp_path / "bundle"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    stage = tmp_path / ".bundle.partial-x"
    stage.mkdir()
    (stage / "manifest.json").write_text("new")
    missing, synced = [], []
    real_replace, real_fsync = os.replace, os.fsync

    def replace(a, b):
        real_replace(a, b)
        missing.append(not (out / "manifest.json").exists())

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    publish(stage, out, force=True)
    assert (out / "manifest.json").read_text() == "new" and not stage.exists()
    assert not any(missing), "OUT_DIR was missing after a rename"
    assert str(out / "manifest.json") in synced or str(stage / "manifest.json") in synced
    assert str(tmp_path) in synced  # the folder holding the rename


REAL_DYNAMIC_INT8 = pipeline.quantize.quantize_dynamic_int8


def _damaged_dynamic_int8(fp32_path, out_path):
    """A real dynamic-INT8 file whose int8 weights are reversed: it runs, its accuracy collapses."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    n = REAL_DYNAMIC_INT8(fp32_path, out_path)
    proto = onnx.load(str(out_path))
    for init in proto.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.int8 and w.ndim == 2:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w[::-1]), init.name))
    onnx.save(proto, str(out_path))
    return n


def test_a_variant_below_the_gate_is_left_out_and_named(tiny_checkpoint, tmp_path, monkeypatch):
    """One INT8 variant below the gate: the export goes on without it, with a ✗ line that says so;
    the CPU recommendation is picked among the files that passed."""
    monkeypatch.setattr(pipeline.quantize, "quantize_dynamic_int8", _damaged_dynamic_int8)
    out = tmp_path / "b"
    fast = [a for a in FAST if a != "--no-dynamic"]
    r = export(str(tiny_checkpoint), "-o", str(out), *fast, "--dynamic")
    assert r.exit_code == 0, r.output
    assert (
        "✗ accuracy int8 dynamic" in r.output and "model.int8-dynamic.onnx left out of the bundle" in r.output
    )
    assert "✓ accuracy int8 qdq" in r.output
    man = json.loads((out / mf.MANIFEST).read_text())
    assert set(man[mf.K_FILES]) == {mf.FP32, mf.INT8}
    assert mf.INT8_DYNAMIC not in man[mf.K_METRICS] and mf.INT8_DYNAMIC not in man.get(mf.K_OOD, {})
    assert not (out / mf.onnx_filename(mf.INT8_DYNAMIC)).exists()
    assert man[mf.K_RECOMMENDED]["cpu"] in man[mf.K_FILES]
    assert man[mf.K_METRICS][mf.INT8][mf.M_REUSE_MAX_ABS_DIFF] < 1.0
    assert man[mf.K_METRICS][mf.FP32][mf.M_REUSE_MAX_ABS_DIFF] <= ATOL_FP32


def test_every_variant_below_the_gate_fails_the_export(tiny_checkpoint, tmp_path):
    out = tmp_path / "b"
    fast = [a for a in FAST if a != "--no-dynamic"]
    r = export(str(tiny_checkpoint), "-o", str(out), *fast, "--dynamic", "--max-drop", "-1")
    assert r.exit_code == 1
    assert "✗ accuracy int8 qdq" in r.output and "✗ accuracy int8 dynamic" in r.output
    assert "Error: int8 accuracy" in r.output and "Traceback" not in r.output
    assert not out.exists() and leftovers(tmp_path) == []


def test_recommendation_is_the_fastest_file_in_the_bundle(tmp_path):
    path = tmp_path / "m.onnx"
    rows = [
        pipeline.Row(mf.FP32, path, fps_batch16=100.0),
        pipeline.Row(mf.INT8, path, fps_batch16=120.0),
        pipeline.Row(mf.INT8_DYNAMIC, path, fps_batch16=180.0),
        pipeline.Row(mf.TRT_PREFIX + "int8", path, fps_batch16=None),
    ]
    assert pipeline.recommend_cpu(rows) == mf.INT8_DYNAMIC
    assert pipeline.recommend_cpu(rows[:2]) == mf.INT8
    untimed = [pipeline.Row(r.format, path) for r in rows]
    assert pipeline.recommend_cpu(untimed) == mf.INT8  # no speed figures: static INT8 first
    assert pipeline.recommend_cpu(untimed[:1]) == mf.FP32


def test_tensorrt_needs_the_static_int8_file(tmp_path):
    """--tensorrt builds its INT8 engine from model.int8.onnx: that file below the gate is fatal
    even when the dynamic one passed."""
    from pixlm.export import validate

    err = validate.AccuracyGateError(mf.INT8, 0.9, 0.8, 0.5, 100)
    opts = pipeline.ExportOptions(out_dir=tmp_path / "b")
    pipeline.check_rejected({mf.INT8: err}, 2, opts)  # CPU bundle: left out, no error
    with pytest.raises(validate.AccuracyGateError):
        pipeline.check_rejected({mf.INT8: err}, 2, pipeline.ExportOptions(out_dir=tmp_path, tensorrt=True))
    with pytest.raises(validate.AccuracyGateError):
        pipeline.check_rejected({mf.INT8: err}, 1, opts)  # nothing INT8 left
