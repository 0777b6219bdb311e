"""The FLOP counts behind the frontier table (``benchmarks/frontier.py``) agree with torch's own
counter on the real models, so "MFLOP per image" and "% of MatMul peak" rest on checked numbers."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
from torch.utils.flop_counter import FlopCounterMode

from pixlm import checkpoint as ckpt
from pixlm import model as pixlm_model
from pixlm.export.measure import prefill_flops
from pixlm.studies.few_labels import SmallCNN

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import frontier  # noqa: E402


def counted(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def test_prefill_flops_match_torch_on_the_shipped_model(monkeypatch):
    # The exported graph's attention (spelled-out matmuls, which the counter sees; eager SDPA it
    # does not count), cut into one query per block: each query meets exactly the keys it may see.
    model, tok, _ = ckpt.load(ckpt.default_checkpoint())
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: True)
    monkeypatch.setattr(pixlm_model, "ONNX_QUERY_CHUNKS", tok.n_tokens + 1)
    ids = torch.zeros(2, tok.n_tokens + 1, dtype=torch.long)
    expected = prefill_flops(model.cfg.to_dict(), tok.n_tokens + 1)
    assert counted(model.eval(), ids) == 2 * expected  # batch of 2
    # An earlier estimate of 403 MFLOP per image counted the whole T x T score square; the causal half is 363.
    assert 362e6 < expected < 364e6


def test_cnn_flops_match_torch():
    assert counted(SmallCNN().eval(), torch.zeros(1, 1, 28, 28)) == round(frontier.cnn_mflop() * 1e6)


def test_the_cnn_files_and_pipeline_label_images_as_the_network_does(tmp_path):
    torch.manual_seed(0)
    net = SmallCNN().eval()
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    with torch.no_grad():
        expected = net(torch.from_numpy(images).float()[:, None] / 255).argmax(1).numpy()
    files = frontier.cnn_files(net, tmp_path)
    assert set(files) == {"fp32", "int8-dynamic", "int8-dynamic-conv"}
    ops = {k: {n.op_type for n in onnx.load(str(p)).graph.node} for k, p in files.items()}
    assert "ConvInteger" in ops["int8-dynamic-conv"] and "ConvInteger" not in ops["int8-dynamic"]
    assert (frontier.CnnPipeline(files["fp32"], threads=1)(list(images)) == expected).all()
    big = [cv2.resize(im, (56, 56), interpolation=cv2.INTER_NEAREST) for im in images]  # resized back
    assert (frontier.CnnPipeline(files["fp32"], threads=1)(big) == expected).mean() > 0.9


def test_the_best_cnn_file_is_the_fastest_within_half_a_point_on_calib():
    def row(file: str, calib: float, test: float, seconds: float) -> frontier.Row:
        return frontier.Row(
            frontier.CNN, file, test, 8.5, e2e_s={1: seconds, 16: seconds}, calib_accuracy=calib
        )

    fp32, slow, close, lossy = (
        row("fp32", 0.93, 0.93, 3.0),
        row("a", 0.93, 0.93, 4.0),
        row("b", 0.926, 0.90, 2.0),  # within half a point on calib: chosen, whatever the test says
        row("c", 0.92, 0.93, 1.0),  # a point worse on calib: never, however good on test
    )
    assert frontier.best_cnn_file([fp32, slow, close, lossy]).file == "b"
    assert frontier.best_cnn_file([fp32, slow]).file == "fp32"


def test_the_anchor_is_reused_only_when_made_by_the_same_recipe_and_epochs(tmp_path, monkeypatch):
    path = tmp_path / "cnn.pt"
    net = SmallCNN().eval()
    meta = {"epochs": 30, "chosen_epoch": 27, "recipe": frontier.RECIPE}
    torch.save({"state": net.state_dict(), "meta": meta}, path)
    loaded, got = frontier.anchor(path, epochs=30, threads=1)
    assert got["chosen_epoch"] == 27
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), net.state_dict().values(), strict=True)
    )
    trained = []

    def fake_train(*args, **kwargs) -> SmallCNN:
        trained.append(kwargs["epochs"])
        fresh = SmallCNN().eval()
        fresh.chosen, fresh.curve = {"epoch": 1, "accuracy": 0.5}, [0.5]
        return fresh

    monkeypatch.setattr(frontier.few_labels, "train_cnn", fake_train)
    frontier.anchor(path, epochs=60, threads=1)  # other epochs: trained again, and saved
    assert trained == [60] and torch.load(path, weights_only=True)["meta"]["epochs"] == 60
    old = {"epochs": 30, "schedule": "Adam 1e-3, constant"}  # a file from before the recipe was kept
    torch.save({"state": net.state_dict(), "meta": old}, path)
    frontier.anchor(path, epochs=30, threads=1)
    path.write_bytes(b"not a checkpoint")
    frontier.anchor(path, epochs=30, threads=1)
    assert trained == [60, 30, 30]
