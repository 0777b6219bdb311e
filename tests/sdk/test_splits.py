"""One rule for every number: what an export fits on and what a report scores never overlap."""

from __future__ import annotations

import json

import pytest

from pixlm import checkpoint
from pixlm.data import FASHION_MNIST_SPLITS, held_out_splits, load_fashion_mnist, split_range
from pixlm.demo import report_split


def overlap(a: str, b: str) -> int:
    (fa, a0, a1), (fb, b0, b1) = split_range(a), split_range(b)
    return 0 if fa != fb else max(0, min(a1, b1) - max(a0, b0))


def test_named_splits_are_slices_of_the_files():
    calib, fit = load_fashion_mnist(split="calib"), load_fashion_mnist(split="fit")
    train = load_fashion_mnist(split="train")
    assert len(fit) == 55_000 and len(calib) == 5_000
    assert (calib.images == train.images[55_000:]).all() and (fit.labels == train.labels[:55_000]).all()
    assert overlap("fit", "calib") == 0 and overlap("test-calib", "test-report") == 0
    with pytest.raises(ValueError, match="split must be one of"):
        load_fashion_mnist(split="validation")


def test_a_model_calibrates_on_images_it_never_trained_on():
    shipped = checkpoint.load_state(checkpoint.default_checkpoint())["train_config"]
    assert shipped["max_images"] == 55_000  # the shipped model never saw training images 55,000+
    assert held_out_splits(shipped) == ("calib", "test")
    everything = {**shipped, "max_images": None}  # trained on all 60,000: half the test file calibrates
    assert held_out_splits(everything) == ("test-calib", "test-report")
    for cfg in (shipped, everything):
        calib, report = held_out_splits(cfg)
        assert overlap(calib, report) == 0
        if cfg["max_images"]:
            assert overlap(calib, "fit") == 0 and split_range("fit")[2] <= cfg["max_images"]
    assert set(held_out_splits(None)) <= set(FASHION_MNIST_SPLITS)


def test_export_calibration_and_demo_report_images_are_disjoint(shipped_bundle):
    cal = json.loads((shipped_bundle / "manifest.json").read_text())["calibration"]
    assert cal["data"] == "fashion-mnist" and cal["images"] == 2000  # the fixture's --eval-images
    file, first, end = cal["range"]
    report = report_split(shipped_bundle)
    r_file, r_first, r_end = split_range(report)
    assert (file, first, end) == tuple(split_range(cal["split"]))
    assert file != r_file or end <= r_first or r_end <= first, (cal, report)
