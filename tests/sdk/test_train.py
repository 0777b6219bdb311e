"""Training and evaluation on real Fashion-MNIST images: CLI, resume, checkpoints, DDP."""

from __future__ import annotations

import datetime
import json
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import BIN, VTEST, run_cli
from pixlm import checkpoint, distill
from pixlm.data import load_fashion_mnist, parse_frame_range
from pixlm.evaluate import predict
from pixlm.train import TrainConfig, train

TINY = dict(patch=4, codes=32, threads=2, eval_images=200, model={"n_layer": 1, "n_head": 2, "d_model": 32})


def test_tiny_checkpoint_learns_and_evaluates(tiny_checkpoint, tmp_path):
    state = torch.load(tiny_checkpoint, weights_only=True)  # no arbitrary pickles
    assert state["format"] == "pixlm-checkpoint" and len(state["labels"]) == 10
    assert state["history"][-1]["accuracy"] > 0.5  # 3,000 images, 2 epochs: well above chance
    out = tmp_path / "m.json"
    p = run_cli("pixlm", "eval", str(tiny_checkpoint), "--max-images", "500", "--json", str(out))
    m = json.loads(out.read_text())
    assert m["images"] == 500 and 0.5 < m["accuracy"] <= 1
    assert np.array(m["confusion"]).sum() == 500 and len(m["per_class_accuracy"]) == 10
    assert 0 < m["bits_per_pixel"] < 8
    assert "accuracy" in p.stdout and "Ankle boot" in p.stdout


def test_resume_continues_exactly(tmp_path):
    a = TrainConfig(output=str(tmp_path / "a.pt"), max_images=640, epochs=2, batch_size=32, **TINY)
    full = train(a, log=lambda s: None)
    # The same run, stopped by the clock after its first step, then resumed from its checkpoint.
    c = TrainConfig(**{**a.__dict__, "output": str(tmp_path / "c.pt"), "max_minutes": 0.0})
    part = train(c, log=lambda s: None)
    assert part.step == 1
    resumed = train(TrainConfig(**{**c.__dict__, "max_minutes": None, "resume": True}), log=lambda s: None)
    assert resumed.step == full.step
    for k, v in full.model.state_dict().items():
        assert torch.allclose(v, resumed.model.state_dict()[k], atol=1e-6), k


def test_bf16_autocast_trains_like_fp32(tmp_path):
    a = TrainConfig(output=str(tmp_path / "a.pt"), max_images=640, epochs=2, batch_size=32, **TINY)
    fp32 = train(a, log=lambda s: None)
    b = TrainConfig(**{**a.__dict__, "output": str(tmp_path / "b.pt"), "precision": "bf16"})
    bf16 = train(b, log=lambda s: None)
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())  # master weights stay fp32
    w32, w16 = fp32.model.state_dict(), bf16.model.state_dict()
    assert any(not torch.equal(w32[k], w16[k]) for k in w32)  # autocast really ran in bfloat16
    # ... and lands where fp32 does: same data, same seed, pixel loss within 2%.
    bpp32, bpp16 = fp32.metrics["bits_per_pixel"], bf16.metrics["bits_per_pixel"]
    assert abs(bpp16 - bpp32) < 0.02 * bpp32, (bpp32, bpp16)


def test_self_supervised_on_video_then_labelled_fine_tune(tmp_path):
    frames = tmp_path / "scene.pt"
    cfg = TrainConfig(
        data=str(VTEST),
        output=str(frames),
        max_images=96,
        epochs=1,
        batch_size=32,
        label_weight=0,
        height=24,
        width=32,
        **{**TINY, "patch": 4},
    )
    res = train(cfg, log=lambda s: None)
    assert res.tokenizer.labels == () and res.model.cfg.n_labels == 0
    # fine-tune it with labels from a class folder (two classes of real frames)
    cap = cv2.VideoCapture(str(VTEST))
    for i in range(64):
        ok, frame = cap.read()
        assert ok
        d = tmp_path / "classes" / ("early" if i < 32 else "late")
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i:03d}.png"), frame)
    tuned = train(
        TrainConfig(
            data=str(tmp_path / "classes"),
            init=str(frames),
            output=str(tmp_path / "t.pt"),
            epochs=1,
            batch_size=32,
            **TINY,
        ),
        log=lambda s: None,
    )
    assert tuned.tokenizer.labels == ("early", "late") and tuned.model.cfg.n_labels == 2
    assert tuned.tokenizer.config.palette == res.tokenizer.config.palette


def test_cli_bad_input_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    p = run_cli("pixlm", "eval", str(bad), check=False)
    assert p.returncode != 0 and "not a readable checkpoint" in p.stderr and "Traceback" not in p.stderr
    p = run_cli("pixlm", "train", "--data", str(tmp_path / "missing"), check=False)
    assert p.returncode != 0 and "no such dataset" in p.stderr and "Traceback" not in p.stderr


def test_checkpoint_save_is_atomic(tiny_checkpoint, tmp_path):
    model, tok, _ = checkpoint.load(tiny_checkpoint)
    target = tmp_path / "x.pt"
    shutil.copy(tiny_checkpoint, target)
    before = target.read_bytes()
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):  # save fails midway
        checkpoint.save(target, model, tok, step=lambda: 0)  # a lambda cannot be pickled
    assert target.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_ddp_two_cpu_ranks_end_identical(tmp_path):
    torchrun = shutil.which("torchrun", path=str(BIN))
    p = run_cli(
        "torchrun",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(Path(__file__).with_name("ddp_worker.py")),
        str(tmp_path),
        timeout=300,
    )
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert torchrun and r0["world"] == r1["world"] == 2 and r0["step"] == r1["step"] == 8  # 512/(32*2)
    for k, v in r0["weights"].items():
        assert torch.equal(v, r1["weights"][k]), k
    assert p.returncode == 0


def test_fashion_mnist_loader_reads_real_idx():
    d = load_fashion_mnist(split="test")
    assert d.images.shape == (10000, 28, 28) and d.images.dtype == np.uint8
    assert sorted(np.unique(d.labels)) == list(range(10))


def test_slim_drops_training_state(tiny_checkpoint, tmp_path):
    out = tmp_path / "slim.pt"
    run_cli("pixlm", "slim", str(tiny_checkpoint), str(out))
    state = torch.load(out, weights_only=True)
    assert "optimizer" not in state and out.stat().st_size < tiny_checkpoint.stat().st_size
    model, _, _ = checkpoint.load(out)
    full, _, _ = checkpoint.load(tiny_checkpoint)
    for k, v in full.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])


def test_keep_epochs_then_average(tmp_path):
    """--keep-epochs leaves one slim file per epoch; `pixlm average` writes their mean weights."""
    a = TrainConfig(
        output=str(tmp_path / "a.pt"), max_images=640, epochs=2, batch_size=32, keep_epochs=True, **TINY
    )
    final = train(a, log=lambda s: None)
    e1, e2 = tmp_path / "a.e01.pt", tmp_path / "a.e02.pt"
    assert sorted(p.name for p in tmp_path.glob("a.e*.pt")) == [e1.name, e2.name]
    assert "optimizer" not in torch.load(e1, weights_only=True)
    w1, w2 = checkpoint.load(e1)[0].state_dict(), checkpoint.load(e2)[0].state_dict()
    assert all(torch.equal(w2[k], v) for k, v in final.model.state_dict().items())  # last epoch = final
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # epoch 1 is a different point

    out = tmp_path / "avg.pt"
    p = run_cli("pixlm", "average", str(e1), str(e2), "-o", str(out))
    assert "mean of 2 checkpoints" in p.stdout
    avg, _, state = checkpoint.load(out)
    assert state["averaged_from"] == [e1.name, e2.name] and "optimizer" not in state
    for k, v in avg.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, (w1[k] + w2[k]) / 2, atol=1e-6), k
    run_cli("pixlm", "eval", str(out), "--max-images", "200", "--json", str(tmp_path / "m.json"))
    assert json.loads((tmp_path / "m.json").read_text())["images"] == 200  # a usable model


def test_average_refuses_different_models(tiny_checkpoint, tmp_path):
    other = tmp_path / "other.pt"
    train(
        TrainConfig(output=str(other), max_images=64, epochs=1, batch_size=32, **{**TINY, "codes": 16}),
        log=lambda s: None,
    )
    p = run_cli(
        "pixlm", "average", str(tiny_checkpoint), str(other), "-o", str(tmp_path / "x.pt"), check=False
    )
    assert p.returncode != 0 and "differs" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()
    p = run_cli("pixlm", "average", str(tiny_checkpoint), "-o", str(tmp_path / "x.pt"), check=False)
    assert p.returncode != 0 and "at least two" in p.stderr


def test_average_takes_epochs_saved_before_and_after_a_new_tokenizer_field(tiny_checkpoint, tmp_path):
    """A run resumed across versions: its early epochs were saved before the tokenizer gained a
    field (``motion``), its late ones after. The tokenizers are the same; averaging them was
    refused as 'tokenizer differs'."""
    old = tmp_path / "old.pt"
    state = torch.load(tiny_checkpoint, weights_only=False)
    state["tokenizer"].pop("motion")  # as saved before the field existed
    torch.save(state, old)
    out = tmp_path / "mean.pt"
    run_cli("pixlm", "average", str(old), str(tiny_checkpoint), "-o", str(out))
    assert checkpoint.load(out)[1].config == checkpoint.load(tiny_checkpoint)[1].config


def three_class_folder(folder: Path) -> Path:
    """A labelled folder of a new task: bags, boots and trousers, 40 Fashion-MNIST test images each."""
    fm = load_fashion_mnist(split="test")
    for name, cls in (("bags", 8), ("boots", 9), ("trousers", 1)):
        (folder / name).mkdir(parents=True)
        for i in np.flatnonzero(fm.labels == cls)[:40]:
            cv2.imwrite(str(folder / name / f"{i}.png"), fm.images[i])
    return folder


def test_init_replaces_another_label_set(tiny_checkpoint, tmp_path):
    """--init from a Fashion-MNIST model onto a task with other labels: new label tokens, same
    image tokens (this was refused with 'labels ... differ from the model's')."""
    folder = three_class_folder(tmp_path / "task")
    fm = load_fashion_mnist(split="test")
    old, _, _ = checkpoint.load(tiny_checkpoint)
    out = tmp_path / "new.pt"
    p = run_cli(
        "pixlm",
        "train",
        "--data",
        str(folder),
        "--init",
        str(tiny_checkpoint),
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--eval-images",
        "-1",
        "--threads",
        "2",
        "-o",
        str(out),
    )
    assert "replacing the model's 10 labels by 3 new ones" in p.stderr
    model, tok, _ = checkpoint.load(out)
    assert tok.labels == ("bags", "boots", "trousers") and model.cfg.n_labels == 3
    assert model.cfg.vocab_size == old.cfg.n_codes + 1 + 3
    # the new model classifies the new task well above chance (3 classes: 33%)
    probs, _ = predict(model, tok, np.stack([fm.images[i] for i in np.flatnonzero(fm.labels == 8)[40:140]]))
    assert (probs.argmax(1) == 0).mean() > 0.6


def test_class_and_per_class_subsets():
    fm = load_fashion_mnist(split="test")
    bags = fm.of_classes([8])
    assert len(bags) == 1000 and (bags.labels == 8).all()
    few = fm.per_class(10, seed=3)
    assert len(few) == 100 and (np.bincount(few.labels) == 10).all()
    assert not np.array_equal(few.images, fm.per_class(10, seed=4).images)
    assert np.array_equal(few.images, fm.per_class(10, seed=3).images)  # a seed is one draw
    with pytest.raises(ValueError, match="out of range"):
        fm.of_classes([10])
    with pytest.raises(ValueError, match="fewer than"):
        fm.per_class(2000)


def test_frame_ranges():
    assert parse_frame_range("0:0.6", 795) == slice(0, 477, 1)
    assert parse_frame_range("0.6:", 795) == slice(477, 795, 1)
    assert parse_frame_range("10:20:5", 795) == slice(10, 20, 5)
    assert parse_frame_range("0:0.6:2", 10) == slice(0, 6, 2)
    for bad in ("5", "a:b", "20:10", "0:0.5:0"):
        with pytest.raises(ValueError):
            parse_frame_range(bad, 100)


def test_train_on_video_tiles_of_a_frame_range(tmp_path):
    """The scene recipe: tiles of the first 60% of a clip, every 50th frame, label-free."""
    out = tmp_path / "scene.pt"
    p = run_cli(
        "pixlm",
        "train",
        "--data",
        str(VTEST),
        "--frames",
        "0:0.6:50",
        "--tile",
        "2x3",
        "--label-weight",
        "0",
        "--patch",
        "4",
        "--codes",
        "16",
        "--layers",
        "1",
        "--heads",
        "2",
        "--d-model",
        "16",
        "--batch-size",
        "8",
        "--eval-images",
        "-1",
        "-o",
        str(out),
    )
    assert "60 training images" in p.stderr  # frames 0, 50, ..., 450 of 795: 10 frames x 6 tiles
    _, tok, state = checkpoint.load(out)
    assert tok.labels == () and state["train_config"]["tile"] == [2, 3]
    p = run_cli("pixlm", "train", "--data", str(VTEST), "--tile", "0x3", "-o", str(out), check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "--tile" in p.stderr


def test_init_warns_which_shape_it_keeps(tiny_checkpoint, tmp_path):
    """--init keeps the checkpoint's tokenizer and model; a different --patch or --channels was
    ignored without a word. One warning line names what is kept (options equal to it are not named)."""
    out = tmp_path / "tuned.pt"
    shape = "--patch 2 --channels 3 --layers 2".split()  # the checkpoint: patch 4, 1 channel, 2 layers
    quick = "--max-images 64 --batch-size 16 --eval-images -1 --threads 2".split()
    p = run_cli("pixlm", "train", "--init", str(tiny_checkpoint), *shape, *quick, "-o", str(out))
    warnings = [line for line in p.stderr.splitlines() if line.startswith("warning:")]
    kept = "keeps its tokenizer and model: --channels 1 (not 3), --patch 4 (not 2)"
    assert warnings == [f"warning: --init {tiny_checkpoint} {kept}"], p.stderr
    _, tok, _ = checkpoint.load(out)
    assert tok.config.patch == 4 and tok.config.channels == 1


def test_a_file_that_is_no_checkpoint_is_one_error_line(tmp_path):
    """torch's refusal to unpickle was six lines after the Error: line (and a warning before it)."""
    image = tmp_path / "baboon.pt"
    shutil.copy(VTEST.parent / "baboon.jpg", image)
    foreign = tmp_path / "foreign.pt"
    torch.save({"when": datetime.date(2024, 1, 1)}, foreign)  # a global torch refuses
    protocol4 = tmp_path / "protocol4.pt"
    protocol4.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=4))
    for path, words in ((image, "Unsupported operand"), (foreign, "datetime.date"), (protocol4, "")):
        for cmd in (["train", "--init", str(path), "-o", str(tmp_path / "x.pt")], ["eval", str(path)]):
            p = run_cli("pixlm", *cmd, check=False)
            assert p.returncode == 1 and p.stdout == "", p.stderr
            assert p.stderr.splitlines() == [p.stderr.strip()], p.stderr  # one line
            assert p.stderr.startswith(f"Error: {path}: not a readable checkpoint") and words in p.stderr


def test_tile_follows_the_grid_rule_of_run(tmp_path):
    """--tile 100x100 was accepted (10,000 tiles a frame) while `pixlm run --grid 100x100` was
    refused: one rule, a usage error (exit 2) in both."""
    out = tmp_path / "x.pt"
    tiny = "--frames 0:1 --max-images 64 --patch 4 --codes 16 --layers 1 --heads 2 --d-model 16".split()
    for cmd in (
        ["train", "--data", str(VTEST), "--tile", "100x100", *tiny, "--eval-images", "-1", "-o", str(out)],
        ["run", str(VTEST), "--grid", "100x100", "--bundle", str(tmp_path)],
    ):
        p = run_cli("pixlm", *cmd, check=False, timeout=300)
        assert p.returncode == 2, (cmd[0], p.returncode, p.stderr)
        assert "grid 100x100: more than 1024 regions per frame" in p.stderr and "Traceback" not in p.stderr
    assert not out.exists()


def test_distilled_label_loss_is_the_paper_mix():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    teacher = torch.tensor([[0.0, 3.0, 0.0], [1.0, 1.0, -2.0]])
    labels = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(student, labels)
    t = distill.TEMPERATURE
    p_t, log_q = (teacher / t).softmax(1), (student / t).log_softmax(1)
    kl = (p_t * (p_t.log() - log_q)).sum(1).mean()  # KL(teacher || student), per image, T^2 scaled
    expected = (1 - distill.MIX) * ce + distill.MIX * t**2 * kl
    assert torch.allclose(distill.label_loss(student, teacher, labels), expected)
    assert torch.allclose(distill.label_loss(student, student.clone(), labels), (1 - distill.MIX) * ce)


def test_a_distilled_student_comes_closer_to_its_teacher(tiny_checkpoint, tmp_path):
    base = dict(max_images=1280, epochs=1, batch_size=32, **{**TINY, "eval_images": 0})
    plain = train(TrainConfig(output=str(tmp_path / "plain.pt"), **base), log=lambda s: None)
    said = []
    out = tmp_path / "not" / "yet" / "kd.pt"  # the teacher's cache is written before any checkpoint
    student = train(TrainConfig(output=str(out), teacher=str(tiny_checkpoint), **base), log=said.append)
    cache = out.with_suffix(".teacher.pt")
    assert cache.exists() and any("label logits of 1280 training images" in s for s in said)
    images = load_fashion_mnist(split="train").images[:1280]
    teacher = distill.teacher_logits(tiny_checkpoint, images, student.tokenizer.labels, cache).softmax(1)

    def kl_to_teacher(model) -> float:
        p, _ = predict(model, student.tokenizer, images)
        return float((teacher * (teacher.log() - torch.from_numpy(p).clamp_min(1e-9).log())).sum(1).mean())

    assert kl_to_teacher(student.model) < 0.8 * kl_to_teacher(plain.model)


def test_teacher_mistakes_are_one_error_line(tiny_checkpoint, tmp_path):
    args = ["pixlm", "train", "--max-images", "320", "--epochs", "1", "--eval-images", "-1"]
    args += ["--patch", "4", "--codes", "16", "--layers", "1", "--heads", "2", "--d-model", "16"]
    folder = three_class_folder(tmp_path / "three")
    p = run_cli(
        *args,
        "--data",
        str(folder),
        "--teacher",
        str(tiny_checkpoint),
        "-o",
        str(tmp_path / "a.pt"),
        check=False,
    )
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith("Error:") and "labels" in p.stderr
    labels = checkpoint.load(tiny_checkpoint)[1].labels
    with pytest.raises(ValueError, match="reads 28x28x1 pixels images; the data are 32x32x1"):
        distill.teacher_logits(tiny_checkpoint, np.zeros((4, 32, 32), np.uint8), labels)
    out = tmp_path / "c.pt"
    run_cli(*args, "-o", str(out))  # no teacher...
    p = run_cli(*args, "--resume", "--teacher", str(tiny_checkpoint), "-o", str(out), check=False)
    assert p.returncode != 0 and "Traceback" not in p.stderr and "same teacher" in p.stderr  # ...then one
