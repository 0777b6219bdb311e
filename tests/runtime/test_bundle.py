"""Bundle loading, torch-free: schema, version, checksums, paths that leave the bundle folder.

The bundle comes from the real exporter (``tiny_bundle`` runs ``pixlm-export`` in a subprocess);
each test damages its own copy.
"""

from __future__ import annotations

import json
import shutil
import warnings

import numpy as np
import pytest

from conftest import VTEST, pixlm_run
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle, BundleError, BundleWarning, manifest_sha256
from pixlm.runtime.engine import OrtEngine
from pixlm.runtime.io_spec import ATOL_FP32, KV_LAYOUT, OPSET, DecoderIO, input_names, with_bos


@pytest.fixture
def bundle_dir(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def edit_manifest(root, change, rehash: bool = True):
    """Change the manifest; ``rehash``: and its hash, as an exporter would have written it (the
    checks behind the hash are tested that way), else as someone editing it by hand leaves it."""
    path = root / mf.MANIFEST
    man = json.loads(path.read_text())
    change(man)
    if rehash and mf.K_MANIFEST_SHA256 in man:
        man[mf.K_MANIFEST_SHA256] = manifest_sha256(man)
    path.write_text(json.dumps(man))


def test_loads_a_real_bundle(tiny_bundle):
    b = Bundle.load(tiny_bundle)
    assert set(b.files) == {mf.FP32, mf.INT8, mf.INT8_DYNAMIC}
    assert all(f.path.is_file() and f.path.parent == tiny_bundle for f in b.files.values())
    assert b.files[mf.INT8].entry[mf.F_QUANTIZATION] == mf.QUANT_QDQ
    assert len(b.labels) == b.model_config["n_labels"] == 10
    assert b.tokenizer.n_codes == b.model_config["n_codes"] == b.vocabulary["n_codes"]
    assert b.io["inputs"] == input_names(b.model_config["n_layer"])
    assert b.io["kv_layout"] == KV_LAYOUT and b.io["opset"] == OPSET
    assert b.recommended("cpu") in b.files
    m = b.metrics
    assert m[mf.FP32][mf.M_MAX_ABS_DIFF] <= ATOL_FP32 and m[mf.FP32][mf.M_LABEL_AGREEMENT] == 1.0
    assert 100 * (m[mf.FP32][mf.M_ACCURACY] - m[mf.INT8][mf.M_ACCURACY]) <= 2  # TINY_EXPORT's gate
    assert {"pixlm", "torch", "onnx", "onnxruntime"} <= set(b.manifest[mf.K_PRODUCER])
    assert b.manifest[mf.K_MANIFEST_SHA256] == manifest_sha256(b.manifest) and b.warnings == []
    assert all(b.files[k].entry[mf.F_GATE_SOURCE] == k for k in b.files)  # each file's own gate
    with pytest.raises(BundleError, match="no 'tensorrt-int8' file"):
        b.path("tensorrt-int8")


def test_the_manifest_records_the_io_spec(tiny_bundle):
    """The manifest's io section is the spec's record of the model it holds (plus what the exporter
    adds), so a bundle and the engines reading it agree on names, axes and layout."""
    b = Bundle.load(tiny_bundle)
    record = DecoderIO.from_config(b.model_config).io_record()
    assert {k: b.io[k] for k in record} == record
    assert set(b.io) - set(record) == {"exporter", "tensorrt_lint"}


def test_bundle_runs_without_torch(tiny_bundle):
    """Tokenizer + engine from the bundle alone: a blank frame's label and a cached decode step."""
    b = Bundle.load(tiny_bundle)
    engine = OrtEngine(b.path(mf.INT8), threads=1)
    tokens = b.tokenizer.encode(np.zeros((28, 28), np.uint8))
    seq = with_bos(b.tokenizer.bos, tokens[None])
    full, past = engine.prefill(seq)
    assert full.shape == (1, len(tokens) + 1, b.vocabulary["size"])
    assert past[0][0].shape == (1, engine.n_head, len(tokens) + 1, engine.head_dim)
    head, past = engine.prefill(seq[:, :-1])
    last, _ = engine.run(seq[:, -1:], past)
    label = int(last[0, -1, b.vocabulary["first_label"] :].argmax())
    assert 0 <= label < len(b.labels)


def test_flipped_byte_fails_its_checksum(bundle_dir):
    target = bundle_dir / mf.onnx_filename(mf.INT8)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.onnx: sha256 mismatch"):
        Bundle.load(bundle_dir)
    Bundle.load(bundle_dir, verify=False)  # the size still matches: only the hash can tell


def test_truncated_and_missing_files(bundle_dir):
    fp32 = bundle_dir / mf.onnx_filename(mf.FP32)
    fp32.write_bytes(fp32.read_bytes()[:100])
    with pytest.raises(BundleError, match=r"model\.fp32\.onnx: 100 bytes"):
        Bundle.load(bundle_dir)
    fp32.unlink()
    with pytest.raises(BundleError, match=r"model\.fp32\.onnx: missing"):
        Bundle.load(bundle_dir)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update({mf.K_SCHEMA: "other"}), "not a pixlm-bundle manifest"),
        (lambda m: m.update({mf.K_SCHEMA_VERSION: mf.SCHEMA_VERSION + 1}), "schema version"),
        (lambda m: m.pop(mf.K_FILES), "missing key 'files'"),
        (lambda m: m[mf.K_MODEL].update(n_codes=3), "model n_codes 3"),
        (lambda m: m[mf.K_FILES][mf.FP32].update(path="../model.fp32.onnx"), "outside the bundle"),
        (lambda m: m[mf.K_FILES][mf.FP32].update(path="/etc/hostname"), "outside the bundle"),
        # typed schema: each wrong type is one BundleError naming the field
        (lambda m: m.update({mf.K_FILES: list(m[mf.K_FILES].values())}), "'files' must be an object"),
        (lambda m: m.update({mf.K_LABELS: "0123456789"}), "'labels' must be a list of non-empty strings"),
        (lambda m: m[mf.K_LABELS].append("extra"), "11 labels, but model.n_labels is 10"),
        (lambda m: m[mf.K_MODEL].update(n_layer="2"), "model.n_layer must be an integer >= 1"),
        (lambda m: m[mf.K_MODEL].update(n_head=0), "model.n_head must be an integer >= 1"),
        (lambda m: m.update({mf.K_METRICS: []}), "'metrics' must be an object"),
    ],
)
def test_bad_manifest_is_one_clear_error(bundle_dir, change, message):
    edit_manifest(bundle_dir, change)
    with pytest.raises(BundleError, match=message):
        Bundle.load(bundle_dir)


def remove_gates(m: dict) -> None:
    """The open-set gate taken out, as an export without it would have written the manifest."""
    m.pop(mf.K_OOD)
    for entry in m[mf.K_FILES].values():
        entry.pop(mf.F_GATE_SOURCE)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: m[mf.K_OOD][mf.INT8].update(threshold=m[mf.K_OOD][mf.INT8]["threshold"] * 3),
        lambda m: m[mf.K_LABELS].reverse(),
        remove_gates,  # the gate silently off
        lambda m: m[mf.K_FILES][mf.FP32].update(sha256="0" * 64),
    ],
)
def test_a_manifest_edited_after_export_is_refused(bundle_dir, change):
    """Before: only the model files were hashed; a changed gate threshold, a reordered label list
    or a removed gate loaded as if exported so. Now the manifest's own hash covers its content."""
    edit_manifest(bundle_dir, change, rehash=False)
    with pytest.raises(BundleError, match="manifest.json: content does not match its manifest_sha256"):
        Bundle.load(bundle_dir, verify=False)


def test_a_tampered_manifest_is_one_error_line_from_pixlm_run(bundle_dir):
    edit_manifest(bundle_dir, lambda m: m[mf.K_OOD][mf.FP32].update(threshold=1000.0), rehash=False)
    p = pixlm_run(str(VTEST), "--bundle", str(bundle_dir), "--max-frames", "2", "-q")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert err.startswith("Error: ") and err.count("\n") == 1 and "manifest_sha256" in err, err


def test_a_bundle_from_before_the_manifest_hash_loads_with_a_warning(bundle_dir):
    edit_manifest(bundle_dir, lambda m: m.pop(mf.K_MANIFEST_SHA256))
    with pytest.warns(BundleWarning, match="no manifest_sha256 .* re-export the bundle"):
        b = Bundle.load(bundle_dir)
    assert len(b.warnings) == 1 and "not verified" in b.warnings[0]
    edit_manifest(bundle_dir, lambda m: m.update({mf.K_MANIFEST_SHA256: 12}), rehash=False)
    with pytest.raises(BundleError, match="manifest_sha256 must be a string"):
        Bundle.load(bundle_dir)


def test_a_gate_source_must_name_a_gate(bundle_dir):
    edit_manifest(bundle_dir, lambda m: m[mf.K_FILES][mf.FP32].update({mf.F_GATE_SOURCE: "nope"}))
    with pytest.raises(BundleError, match=r"files\.fp32\.gate_source 'nope': no such gate in 'ood'"):
        Bundle.load(bundle_dir)
    edit_manifest(bundle_dir, lambda m: m[mf.K_FILES][mf.FP32].update({mf.F_GATE_SOURCE: mf.INT8}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a gate borrowed on purpose is no warning
        b = Bundle.load(bundle_dir)
    assert b.ood_gate(mf.FP32) is b.gates[mf.INT8]


def test_symlink_out_of_the_bundle_is_refused(bundle_dir, tmp_path):
    name = mf.onnx_filename(mf.FP32)
    outside = tmp_path / "elsewhere.onnx"
    shutil.move(bundle_dir / name, outside)  # same bytes, same sha256: only the location is wrong
    (bundle_dir / name).symlink_to(outside)
    with pytest.raises(BundleError, match="resolves outside the bundle"):
        Bundle.load(bundle_dir)


def test_not_a_bundle(tmp_path):
    with pytest.raises(BundleError, match="no such bundle folder"):
        Bundle.load(tmp_path / "nothing")
    with pytest.raises(BundleError, match="manifest.json: missing"):
        Bundle.load(tmp_path)
    (tmp_path / mf.MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable manifest"):
        Bundle.load(tmp_path)


def test_default_bundle_dir_names_version_and_model_hash(monkeypatch, tmp_path):
    """A new shipped model gets a new cache folder, so it never runs an old model's bundle."""
    import hashlib
    from importlib import resources

    from pixlm import __version__
    from pixlm.runtime.defaults import default_bundle_dir

    monkeypatch.setenv("PIXLM_HOME", str(tmp_path))
    model = resources.files("pixlm") / "models" / "fashion-mnist.pt"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()[:8]
    assert default_bundle_dir() == tmp_path / f"default-{__version__}-{digest}"


def test_a_file_onnx_runtime_cannot_read_is_a_bundle_error(bundle_dir):
    """A truncated model whose manifest size and sha256 were updated to match: the checksums pass,
    and ONNX Runtime's refusal is a BundleError."""
    from pixlm.runtime.bundle import sha256_of
    from pixlm.runtime.recognizer import Recognizer

    onnx_file = bundle_dir / "model.fp32.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:5000])
    edit_manifest(
        bundle_dir,
        lambda m: m[mf.K_FILES][mf.FP32].update(sha256=sha256_of(onnx_file), bytes=5000),
    )
    with pytest.raises(BundleError, match="ONNX Runtime cannot load it"):
        Recognizer.open(bundle_dir, backend="ort-cpu", precision="fp32")


def test_manifest_shape_must_match_the_graph(bundle_dir):
    from pixlm.runtime.recognizer import Recognizer

    edit_manifest(bundle_dir, lambda m: m[mf.K_MODEL].update(n_head=1))
    with pytest.raises(BundleError, match="the graph has n_head 2, the manifest says 1"):
        Recognizer.open(bundle_dir, backend="ort-cpu", precision="fp32")
