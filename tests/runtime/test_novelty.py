"""The open-set gate ("unknown"), torch-free: its math, its manifest entry, and the runtime on real
inputs. The shipped model's bundle must call street-scene regions "unknown" and keep Fashion-MNIST
images known, through ``pixlm run`` and the Python API alike."""

from __future__ import annotations

import json
import shutil
import warnings

import cv2
import numpy as np
import pytest

from conftest import VTEST, pixlm_run, read_jsonl
from pixlm.data import load_fashion_mnist
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle, BundleError, BundleWarning, manifest_sha256
from pixlm.runtime.novelty import FEATURES, GateInputs, OODGate, png_bits_per_pixel
from pixlm.runtime.recognizer import Recognizer
from pixlm.runtime.scoring import UNKNOWN


def test_png_length_orders_images_by_complexity():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1, 28, 28), dtype=np.uint8)
    shirt = load_fashion_mnist(split="test").images[:1]
    flat = np.full((1, 28, 28), 128, np.uint8)
    bits = [png_bits_per_pixel(x)[0] for x in (noise, shirt, flat)]
    assert bits[0] > 8 > bits[1] > bits[2] > 0  # noise does not compress; a flat image does


def test_gate_accepts_the_asked_share_of_new_typical_inputs():
    rng = np.random.default_rng(1)
    cov = np.array([[2.0, 0.9], [0.9, 1.0]])
    gate = OODGate.fit(rng.multivariate_normal([1, -2], cov, 4000), accept=0.9)
    fresh = rng.multivariate_normal([1, -2], cov, 20000)
    assert gate.known(fresh).mean() == pytest.approx(0.9, abs=0.015)
    assert not gate.known(np.array([[1 + 6, -2 - 6]])).any()  # far off: unknown
    assert gate.images == 4000 and gate.threshold > 0


def test_gate_round_trips_and_refuses_bad_entries():
    rng = np.random.default_rng(2)
    gate = OODGate.fit(rng.normal(size=(100, len(FEATURES))))
    again = OODGate.from_dict(json.loads(json.dumps(gate.to_dict())))
    x = rng.normal(size=(5, len(FEATURES)))
    assert np.allclose(gate.score(x), again.score(x))
    for change in (
        {"kind": "other"},
        {"mean": [0.0] * 3},
        {"threshold": float("nan")},
        {"threshold": -1.0},
        {"inv_cov": "x"},
    ):
        with pytest.raises(ValueError):
            OODGate.from_dict({**gate.to_dict(), **change})


@pytest.mark.parametrize(
    "change, message",
    [
        ({"inv_cov": (-np.eye(len(FEATURES))).tolist()}, "inv_cov is not positive-definite"),
        ({"inv_cov": np.zeros((len(FEATURES),) * 2).tolist()}, "inv_cov is not positive-definite"),
        ({"inv_cov": np.diag([1.0, 1, 1, 1, 0]).tolist()}, "inv_cov is not positive-definite"),
        ({"inv_cov": np.triu(np.ones((len(FEATURES),) * 2)).tolist()}, "inv_cov is not symmetric"),
        ({"threshold": 1e300}, r"threshold 1e\+300 must lie in \(0, 10000\]"),
        ({"threshold": float("inf")}, "threshold inf must lie"),
        ({"mean": [0.0, 0.0, float("nan"), 0.0, 0.0]}, "mean: non-finite"),
        ({"images": 3}, "images 3 must be an integer >= 20"),
    ],
)
def test_gate_values_that_would_turn_it_off_are_refused(change, message):
    """Before: an inverse covariance of -I or zeros scores every input 0 or below ("known"), and a
    threshold of 1e300 accepts everything; all of them loaded. Now each is refused, naming the field."""
    gate = OODGate.fit(np.random.default_rng(3).normal(size=(100, len(FEATURES))))
    with pytest.raises(ValueError, match=message):
        OODGate.from_dict({**gate.to_dict(), **change})
    far = np.full((1, len(FEATURES)), 1e3)
    assert OODGate(gate.mean, -np.eye(len(FEATURES)), gate.threshold, 0.95, 100).known(far).all()  # why


def two_class_inputs(rng, n: int, vocab: int = 12) -> GateInputs:
    """Head logits of two classes far apart along one direction, ordinary summary features."""
    classes = rng.integers(0, 2, n)
    head = rng.normal(size=(n, vocab))
    head[:, 0] += np.where(classes == 1, 20.0, -20.0)
    return GateInputs(rng.normal(size=(n, len(FEATURES))), head, classes)


def test_head_distance_measures_to_the_nearest_class_not_the_overall_mean():
    rng = np.random.default_rng(4)
    gate = OODGate.fit(two_class_inputs(rng, 2000))
    fresh = two_class_inputs(rng, 4000)
    assert gate.known(fresh).mean() == pytest.approx(0.95, abs=0.02)
    between = GateInputs(np.zeros((1, len(FEATURES))), np.zeros((1, 12)), None)  # the overall mean
    assert not gate.known(between).any()  # typical summary, but like neither class: unknown
    summary_only = OODGate.fit(two_class_inputs(rng, 2000).summary)
    assert summary_only.known(between.summary).all()  # what the summary alone would call it
    with pytest.raises(ValueError, match="also reads the head logits"):
        gate.score(fresh.summary)


def test_gate_with_head_round_trips_and_refuses_what_would_mute_it():
    rng = np.random.default_rng(5)
    gate = OODGate.fit(two_class_inputs(rng, 400))
    d = json.loads(json.dumps(gate.to_dict()))
    assert d["kind"] == "mahalanobis-v2"
    again = OODGate.from_dict(d, vocab=12)
    x = two_class_inputs(rng, 50)
    assert np.allclose(gate.score(x), again.score(x), atol=1e-4)
    head = d["head"]
    for change, message in [
        ({"scale": [[1.0, 0.0], [1.0, 1.0]]}, "sd > 0"),
        ({"scale": [[1.0, 1.0]]}, "scale must be"),
        ({"head": {**head, "project": np.zeros_like(head["project"]).tolist()}}, "rank-deficient"),
        ({"head": {**head, "means": [[float("nan")] * len(head["means"][0])]}}, "non-finite"),
        ({"head": {"project": head["project"]}}, "head: missing"),
    ]:
        with pytest.raises(ValueError, match=message):
            OODGate.from_dict({**d, **change}, vocab=12)
    with pytest.raises(ValueError, match="12 rows, the model 267 logits"):
        OODGate.from_dict(d, vocab=267)
    old = OODGate.fit(rng.normal(size=(100, len(FEATURES)))).to_dict()  # a bundle before version 0.7.0
    assert old["kind"] == "mahalanobis-v1" and OODGate.from_dict(old).head is None


def copy_with_manifest(tiny_bundle, tmp_path, change):
    """A copy of the bundle whose manifest ``change`` edits, re-hashed as an exporter would write it."""
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    man = json.loads((dst / mf.MANIFEST).read_text())
    change(man)
    man[mf.K_MANIFEST_SHA256] = manifest_sha256(man)
    (dst / mf.MANIFEST).write_text(json.dumps(man))
    return dst


def test_an_absurd_threshold_in_a_bundle_is_one_error_naming_it(tiny_bundle, tmp_path):
    dst = copy_with_manifest(tiny_bundle, tmp_path, lambda m: m[mf.K_OOD][mf.INT8].update(threshold=1e300))
    with pytest.raises(BundleError, match=r"manifest.json: ood\.int8: threshold 1e\+300 must lie"):
        Bundle.load(dst)


def test_a_bundle_without_its_gate_says_so_once(tiny_bundle, tmp_path):
    """Before: a manifest with no "ood" section, or none for the file in use, ran every input as
    "known" without a word. Now loading says so once (a BundleWarning; ``pixlm run`` prints it as
    a ``warning:`` line and ends its summary with "open-set gate OFF")."""

    def drop(key):  # as an exporter without that gate wrote it: no entry, no gate_source naming it
        def change(m):
            for name in [key] if key else list(m[mf.K_OOD]):
                m[mf.K_OOD].pop(name)
                m[mf.K_FILES][name].pop(mf.F_GATE_SOURCE)
            if not key:
                m.pop(mf.K_OOD)

        return change

    dst = copy_with_manifest(tiny_bundle, tmp_path, drop(mf.FP32))
    with pytest.warns(
        BundleWarning, match=r"open-set gate off: .* no ood\.fp32 entry for file 'fp32'"
    ) as said:
        rec = Recognizer.open(dst, backend="ort-cpu", precision="fp32", threads=1)
    assert len(said) == 1 and rec.gate is None and "no ood.fp32 entry" in rec.gate_off
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: the file has its gate, or the gate is off on purpose
        assert Recognizer.open(dst, backend="ort-cpu", precision="int8", threads=1).gate is not None
        off = Recognizer.open(dst, backend="ort-cpu", precision="fp32", threads=1, unknown=False)
    assert off.gate is None and off.gate_off.startswith("turned off")

    dst = copy_with_manifest(tiny_bundle, tmp_path / "none", drop(None))
    args = ("--bundle", str(dst), "--backend", "ort-cpu", "--precision", "fp32", "--max-frames", "3", "-q")
    p = pixlm_run(str(VTEST), *args)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    lines = err.splitlines()
    assert [line for line in lines if line.startswith("warning:")] == [
        f"warning: open-set gate off: {dst / mf.MANIFEST} has no 'ood' section for file 'fp32': every input "
        "gets a label, none is 'unknown' (re-export the bundle, or pass unknown=False / --no-unknown to run "
        "without it)"
    ]
    assert "open-set gate OFF" in lines[-1]


def test_export_stores_a_gate_per_file_and_results_carry_it(tiny_bundle):
    b = Bundle.load(tiny_bundle)
    assert set(b.gates) == {mf.FP32, mf.INT8, mf.INT8_DYNAMIC}
    assert b.gates[mf.FP32].accept == 0.95 and b.gates[mf.FP32].images == 500  # TINY_EXPORT's held-out
    images = list(load_fashion_mnist(split="test").images[:200])
    rec = Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", threads=1)
    results = rec.predict_batch(images)
    known = [r.known for r in results]
    assert all(isinstance(r.ood_score, float) for r in results)
    assert 0.85 <= np.mean(known) <= 1.0  # these 200 are among the 500 the threshold accepts 95% of
    for r in results:
        assert (r.label == UNKNOWN) == (not r.known) and (r.label_index == -1) == (not r.known)
        assert r.to_dict()["known"] is r.known and r.top_k[0][1] == pytest.approx(r.score)
    closed = Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", threads=1, unknown=False)
    assert closed.gate is None
    assert all(r.known and r.ood_score is None and r.label != UNKNOWN for r in closed.predict_batch(images))


def test_a_damaged_gate_is_one_bundle_error(tiny_bundle, tmp_path):
    dst = tmp_path / "b"
    shutil.copytree(tiny_bundle, dst)
    path = dst / mf.MANIFEST
    man = json.loads(path.read_text())
    man[mf.K_OOD][mf.INT8]["inv_cov"] = [[1.0]]
    path.write_text(json.dumps(man))
    with pytest.raises(BundleError, match=r"ood\.int8: mean .* inv_cov"):
        Bundle.load(dst)
    man[mf.K_OOD] = ["not", "an", "object"]
    path.write_text(json.dumps(man))
    with pytest.raises(BundleError, match="'ood' is not an object"):
        Bundle.load(dst)


# -- the shipped model: street regions are "unknown", clothes are known -------------------------
def test_shipped_model_calls_street_regions_unknown(shipped_bundle, tmp_path):
    out = tmp_path / "out.jsonl"
    p = pixlm_run(
        str(VTEST),
        "--bundle",
        str(shipped_bundle),
        "--grid",
        "2x2",
        "--max-frames",
        "60",
        "--jsonl",
        str(out),
        "--threads",
        "2",
        "-q",
    )
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    results = [r for r in read_jsonl(out) if r["type"] == "result"]
    assert len(results) == 240
    unknown = np.mean([r["label"] == UNKNOWN and r["known"] is False for r in results])
    assert unknown >= 0.9, f"only {unknown:.0%} of street regions were called unknown"

    p = pixlm_run(
        str(VTEST),
        "--bundle",
        str(shipped_bundle),
        "--grid",
        "2x2",
        "--max-frames",
        "5",
        "--jsonl",
        str(out),
        "--no-unknown",
        "-q",
    )
    assert p.wait(timeout=300) == 0
    assert all(r["label"] != UNKNOWN for r in read_jsonl(out) if r["type"] == "result")


def test_shipped_model_keeps_fashion_images_known(shipped_bundle, tmp_path):
    data = load_fashion_mnist(split="test")
    images, labels = data.images[5000:5400], data.labels[5000:5400]  # not the gate's 2,000
    rec = Recognizer.open(shipped_bundle, backend="ort-cpu", precision="fp32", threads=2)
    results = rec.predict_batch([cv2.cvtColor(im, cv2.COLOR_GRAY2BGR) for im in images])
    known = np.array([r.known for r in results])
    assert known.mean() >= 0.88  # the gate was set to accept 95% of held-out images
    right = np.array([r.label_index == y for r, y in zip(results, labels, strict=True)])
    assert right[known].mean() >= 0.9  # what it accepts, it mostly labels right
