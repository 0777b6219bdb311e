"""`pixlm` command line: a thin layer over the library (train, eval).

User errors (bad paths, corrupt files, bad options) print one line and exit non-zero.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import click


def _fail(msg: str) -> None:
    raise click.ClickException(msg)


def _int_list(ctx, param, value: str | None) -> list[int] | None:
    """'3,5' -> [3, 5] for a comma-separated option; click's usage error names the option."""
    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"{value!r} must be comma-separated integers, e.g. 3,5") from None


def _grid(value: str | None) -> tuple[int, int] | None:
    from pixlm.runtime.cli import parse_grid  # the same RxC parsing as `pixlm run --grid`

    return parse_grid(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pixlm")
def main() -> None:
    """pixlm: read images as a language.

    A pixel-GPT learns images as sequences of palette tokens; recognition is the next token
    after the image (a label), and the per-pixel surprise is an anomaly map.

    \b
    Examples:
      pixlm eval --dataset fashion-mnist --split test      # the shipped model
      pixlm train --epochs 1 --max-images 5000 -o runs/small.pt
      pixlm train --data clip.avi --label-weight 0 -o runs/scene.pt   # self-supervised
      pixlm train --data clip.avi --tile 6x8 --motion --label-weight 0 -o runs/motion.pt
      pixlm study ood --quick                                         # what it can tell apart
      pixlm run clip.mp4 rtsp://cam/1 --grid 2x2 --jsonl out.jsonl     # stream (no torch needed)
      pixlm-export runs/small.pt -o build/small                        # ONNX + INT8 bundle
    """


@main.command()
@click.option(
    "--data",
    default="fashion-mnist",
    show_default=True,
    help="'fashion-mnist', a folder of idx files, a folder with one subfolder per class, "
    "or a video / frame folder (unlabeled: self-supervised).",
)
@click.option(
    "--eval-data", default=None, help="Held-out data scored each epoch [default: test split of --data]."
)
@click.option(
    "--eval-split",
    type=click.Choice(["test", "calib"]),
    default="test",
    show_default=True,
    help="Split of Fashion-MNIST-style data scored each epoch; 'calib' (training images 55,000-59,999) "
    "is the one to select checkpoints on (train with --max-images 55000 so it stays unseen).",
)
@click.option("-o", "--output", default="runs/pixlm.pt", show_default=True, help="Checkpoint file.")
@click.option(
    "--init",
    type=click.Path(dir_okay=False),
    default=None,
    help="Start from this checkpoint (fine-tune; keeps its palette and model shape).",
)
@click.option("--resume", is_flag=True, help="Continue --output from its last saved step.")
@click.option("--epochs", type=float, default=1.0, show_default=True)
@click.option("--max-images", type=int, default=None, help="Use only the first N training images.")
@click.option(
    "--classes",
    default=None,
    callback=_int_list,
    help="Train on these label indices only, comma-separated (e.g. 8: a one-class model of bags).",
)
@click.option(
    "--per-class",
    type=click.IntRange(min=1),
    default=None,
    help="Keep N random labelled images per class (few-label training), drawn with --subset-seed.",
)
@click.option("--subset-seed", type=int, default=0, show_default=True)
@click.option(
    "--frames",
    default=None,
    help="Video or frame folder: keep frames A:B (or every S-th, A:B:S); a decimal point means a "
    "fraction (0:0.6 = the first 60%, 0.6: = the rest).",
)
@click.option(
    "--tile",
    default=None,
    callback=lambda ctx, param, value: _grid(value),
    help="Video or frame folder: cut each frame into an RxC grid, one training image per tile, "
    "as `pixlm run --grid RxC` streams it (e.g. 3x4).",
)
@click.option(
    "--motion",
    is_flag=True,
    help="Video: learn how the scene moves (motion tokens: optical flow per second, with where it "
    "is), not what it looks like. Train with --label-weight 0; stream the bundle like any other.",
)
@click.option(
    "--eval-images",
    type=int,
    default=2000,
    show_default=True,
    help="Held-out images per evaluation (0 = all, -1 = none).",
)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Per process.")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--label-weight", type=float, default=1.0, show_default=True, help="0 = pixel loss only.")
@click.option(
    "--teacher",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Distil: also learn this (bigger) model's label distribution, e.g. a small model from "
    "sdk/models/fashion-mnist.pt. Its labels must match the data's.",
)
@click.option("--shift", type=int, default=0, show_default=True, help="Random shift augmentation, pixels.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    default="fp32",
    show_default=True,
    help="bf16: bfloat16 autocast, about 1.5x faster on CPUs with AVX512-BF16; weights stay fp32.",
)
@click.option("--max-minutes", type=float, default=None, help="Stop and save after this long (resume later).")
@click.option(
    "--keep-epochs",
    is_flag=True,
    help="Also keep each epoch's weights as OUTPUT-stem.eNN.pt, e.g. for `pixlm average`.",
)
@click.option("--size", default="28x28", show_default=True, help="Image size HxW the tokenizer resizes to.")
@click.option("--channels", type=click.Choice(["1", "3"]), default="1", show_default=True)
@click.option(
    "--patch", type=int, default=2, show_default=True, help="Pixels per token side (1 = per pixel)."
)
@click.option("--codes", type=int, default=256, show_default=True, help="Palette size (k-means).")
@click.option(
    "--resize", type=click.Choice(["stretch", "crop", "letterbox"]), default="stretch", show_default=True
)
@click.option("--layers", type=int, default=4, show_default=True)
@click.option("--heads", type=int, default=4, show_default=True)
@click.option("--d-model", type=int, default=128, show_default=True)
@click.option("--dropout", type=float, default=0.0, show_default=True)
def train(**o) -> None:
    """Train a pixel-GPT (next-pixel loss + label loss); checkpoints are resumable."""
    from pixlm import progress
    from pixlm.train import TrainConfig
    from pixlm.train import train as run

    try:
        h, w = (int(v) for v in o.pop("size").lower().split("x"))
    except ValueError:
        _fail("--size must look like 28x28")
    model = {
        "n_layer": o.pop("layers"),
        "n_head": o.pop("heads"),
        "d_model": o.pop("d_model"),
        "dropout": o.pop("dropout"),
    }
    o["eval_images"] = {0: None, -1: 0}.get(o["eval_images"], o["eval_images"])
    cfg = TrainConfig(**o, height=h, width=w, model=model)
    cfg.channels = int(cfg.channels)
    if cfg.init and not (cfg.resume and Path(cfg.output).exists()):
        _warn_init_keeps_its_shape(cfg)
    bar = None
    tty = sys.stderr.isatty()

    def on_step(e: dict) -> None:
        nonlocal bar
        acc = "" if e["accuracy"] is None else f" acc {100 * e['accuracy']:.1f}%"
        status = f"epoch {e['epoch']} loss {e['loss']:.3f}{acc}"
        if not tty:  # logs and CI: one line every 2% instead of a redrawn bar
            if e["step"] % max(1, e["total"] // 50) == 0 or e["step"] == e["total"]:
                click.echo(f"step {e['step']}/{e['total']} {status}", err=True)
            return
        if bar is None:
            bar = progress.bar(total=e["total"], desc="training", unit="step")
            bar.update(e["step"] - 1)
        bar.set_postfix_str(status, refresh=False)
        bar.update(1)

    try:
        run(cfg, on_progress=on_step, log=progress.above(lambda s: click.echo(s, err=True)))
    except ValueError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; last checkpoint kept in {cfg.output} (resume with --resume)", err=True)
        sys.exit(130)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"saved {cfg.output}")


def _warn_init_keeps_its_shape(cfg) -> None:
    """--init keeps the checkpoint's tokenizer and model: one warning line naming each shape option
    given on the command line that it overrides (they were ignored without a word)."""
    from click.core import ParameterSource

    from pixlm import checkpoint as ckpt

    asked = {
        "size": f"{cfg.height}x{cfg.width}",
        "channels": cfg.channels,
        "patch": cfg.patch,
        "codes": cfg.codes,
        "resize": cfg.resize,
        "layers": cfg.model["n_layer"],
        "heads": cfg.model["n_head"],
        "d_model": cfg.model["d_model"],
        "dropout": cfg.model["dropout"],
    }
    ctx = click.get_current_context()
    asked = {k: v for k, v in asked.items() if ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE}
    if not asked:
        return
    try:
        state = ckpt.load_state(cfg.init)
    except ValueError as e:
        _fail(str(e))
    t, m = state["tokenizer"], state["config"]
    kept = {
        "size": f"{t['height']}x{t['width']}",
        "channels": t["channels"],
        "patch": t["patch"],
        "codes": len(t["palette"]),
        "resize": t["resize"],
        "layers": m["n_layer"],
        "heads": m["n_head"],
        "d_model": m["d_model"],
        "dropout": m["dropout"],
    }
    differ = [
        f"--{k.replace('_', '-')} {kept[k]} (not {v})" for k, v in asked.items() if str(kept[k]) != str(v)
    ]
    if differ:
        click.echo(
            f"warning: --init {cfg.init} keeps its tokenizer and model: " + ", ".join(differ), err=True
        )


@main.command("eval")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--dataset",
    default="fashion-mnist",
    show_default=True,
    help="'fashion-mnist', a folder of idx files, or a class folder.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "test", "fit", "calib", "test-calib", "test-report"]),
    default="test",
    show_default=True,
    help="Fashion-MNIST-style data: 'calib' (training images 55,000-59,999) is where to choose "
    "checkpoints for a model trained on 'fit' (the first 55,000); report on 'test'.",
)
@click.option("--max-images", type=int, default=None, help="Score only the first N images.")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write metrics here."
)
@click.option("--threads", type=int, default=None, help="torch CPU threads.")
def eval_(checkpoint, dataset, split, max_images, batch_size, json_path, threads) -> None:
    """Accuracy, per-class accuracy, confusion matrix and bits per pixel of CHECKPOINT.

    Without CHECKPOINT, the shipped Fashion-MNIST model is scored.
    """
    import torch

    from pixlm import checkpoint as ckpt
    from pixlm import progress
    from pixlm.data import load_source
    from pixlm.evaluate import evaluate, format_report

    if threads:
        torch.set_num_threads(threads)
    path = checkpoint or ckpt.default_checkpoint()
    try:
        model, tok, _ = ckpt.load(path)
        data = load_source(dataset, split, tok, tok.config.channels).subset(max_images)
    except ValueError as e:
        _fail(str(e))
    with progress.bar(total=len(data), desc=f"scoring {Path(path).name}", unit="img") as bar:
        metrics = evaluate(model, tok, data, batch_size, on_batch=bar.update)
    metrics.update(checkpoint=str(path), dataset=dataset, split=split)
    click.echo(format_report(metrics))
    if json_path:
        _write_atomic(Path(json_path), json.dumps(metrics, indent=2))
        click.echo(f"wrote {json_path}")


@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.argument("output", type=click.Path(dir_okay=False))
def slim(checkpoint, output) -> None:
    """Copy CHECKPOINT to OUTPUT without its optimizer state (for shipping; --resume needs it)."""
    from pixlm import checkpoint as ckpt

    try:
        out = ckpt.slim(checkpoint, output)
    except ValueError as e:
        _fail(str(e))
    click.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


@main.command()
@click.argument("checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Averaged checkpoint.")
def average(checkpoints, output) -> None:
    """Average the weights of CHECKPOINTS (two or more epochs of one run) into OUTPUT.

    \b
    Example: keep each epoch, then average the last five:
      pixlm train --keep-epochs --epochs 10 ... -o runs/m.pt
      pixlm average runs/m.e0[6-9].pt runs/m.e10.pt -o runs/m.avg.pt
      pixlm eval runs/m.avg.pt
    """
    from pixlm import checkpoint as ckpt

    try:
        out = ckpt.average(list(checkpoints), output)
    except ValueError as e:
        _fail(str(e))
    click.echo(f"wrote {out}: mean of {len(checkpoints)} checkpoints ({out.stat().st_size / 1e6:.1f} MB)")


@main.group()
def study() -> None:
    """Measure what learning without labels buys, against baselines.

    Each study writes NAME.json and PNG figures to --out; --quick finishes in minutes with tiny
    models (what `make test` runs). The numbers in docs/studies.md come from the full runs.

    \b
    Examples:
      pixlm study one-class --quick
      pixlm study one-class --threads 1 --out docs/figures      # about 5 min per class on 1 core
      pixlm study new-task --quick                              # your own classes from --init
    """


def _study_options(f):
    f = click.option("--quick", is_flag=True, help="Minutes, not hours: tiny models, fewer images.")(f)
    f = click.option("--out", type=click.Path(file_okay=False), default="out/studies", show_default=True)(f)
    return click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        callback=_torch_threads,
        help="torch CPU threads.",
    )(f)


def _torch_threads(ctx, param, value: int | None) -> int | None:
    """--threads of every study: set before the study imports and runs anything."""
    if value:
        import torch

        torch.set_num_threads(value)
    return value


@study.command("one-class")
@_study_options
@click.option(
    "--classes", default="0,1,2,3,4,5,6,7,8,9", show_default=True, callback=_int_list, help="Label indices."
)
@click.option("--epochs", type=click.FloatRange(min=0.1), default=4.0, show_default=True)
@click.option(
    "--runs",
    type=click.Path(file_okay=False),
    default="runs/one-class",
    show_default=True,
    help="Where the per-class models go (resumed from here).",
)
@click.option("--max-minutes", type=float, default=None, help="Per class: stop and save; rerun to resume.")
def one_class(quick, out, threads, classes, epochs, runs, max_minutes) -> None:
    """Train a label-free model per Fashion-MNIST class, score all test images (AUROC).

    Classes already in OUT/one-class.json are kept when made with the same settings: an interrupted
    study continues; a changed one starts afresh.
    """
    from pixlm.studies import one_class as study_mod

    if any(not 0 <= c <= 9 for c in classes):
        _fail("--classes: Fashion-MNIST label indices are 0..9")
    opts = study_mod.OneClassOptions(
        out=Path(out),
        runs=Path(runs),
        classes=classes,
        epochs=epochs,
        threads=threads,
        max_minutes=max_minutes,
    )
    if quick:
        opts.quick, opts.epochs, opts.model = True, 2.0, {"n_layer": 2, "n_head": 2, "d_model": 32}
        opts.runs = opts.runs / "quick"
    try:
        results = study_mod.run(opts, log=lambda s: click.echo(s, err=True))
    except (ValueError, TimeoutError) as e:
        _fail(str(e))
    click.echo(study_mod.format_table(results))


@study.command("ood")
@_study_options
@click.option(
    "--checkpoint", type=click.Path(dir_okay=False), default=None, help="[default: the shipped model]"
)
def ood(quick, out, threads, checkpoint) -> None:
    """Which inputs the shipped model should call "unknown": AUROC per out-of-distribution set.

    Digits, street crops and tiles of vtest.avi, noise and constant images against Fashion-MNIST
    test images; raw likelihood, the PNG-corrected score, label confidence and the runtime's gate.
    """
    from pixlm.studies import ood as study_mod

    opts = study_mod.OODOptions(
        out=Path(out), checkpoint=Path(checkpoint) if checkpoint else None, quick=quick
    )
    try:
        results = study_mod.run(opts, log=lambda s: click.echo(s, err=True))
    except ValueError as e:
        _fail(str(e))
    click.echo(study_mod.format_table(results))


@study.command("scene")
@_study_options
@click.option("--video", default=None, help="[default: OpenCV's vtest.avi]")
@click.option(
    "--grid",
    default="6x8",
    show_default=True,
    callback=lambda ctx, param, value: _grid(value),
    help="Tiles per frame, RxC (as pixlm run --grid).",
)
@click.option("--epochs", type=click.FloatRange(min=0.1), default=6.0, show_default=True)
@click.option(
    "--model-path",
    type=click.Path(dir_okay=False),
    default="runs/scene/vtest-scene.pt",
    show_default=True,
    help="The scene model (resumed from here, kept for pixlm-export).",
)
@click.option("--channels", type=click.Choice(["1", "3"]), default="3", show_default=True)
@click.option("--max-minutes", type=float, default=None, help="Stop training and save; rerun to resume.")
def scene(quick, out, threads, video, grid, epochs, model_path, channels, max_minutes) -> None:
    """Learn a static camera's scene from video without labels; find pasted objects (vs MOG2).

    Trains on the first 60% of the clip's frames (tiles of --grid), pastes bags into half of the
    tiles of the rest, and reports region and pixel AUROC beside OpenCV's MOG2.
    """
    from pixlm.studies import scene as study_mod

    opts = study_mod.SceneOptions(
        out=Path(out),
        model_path=Path(model_path),
        grid=grid,
        epochs=epochs,
        channels=int(channels),
        threads=threads,
        max_minutes=max_minutes,
        quick=quick,
    )
    if video:
        opts.video = video
    if quick:
        opts.epochs, opts.model = 1.0, {"n_layer": 2, "n_head": 2, "d_model": 32}
        opts.train_frames, opts.model_path = "0:0.6:20", opts.model_path.with_suffix(".quick.pt")
    try:
        results = study_mod.run(opts, log=lambda s: click.echo(s, err=True))
    except (ValueError, TimeoutError) as e:
        _fail(str(e))
    click.echo(study_mod.format_table(results))


@study.command("alerts")
@_study_options
@click.option(
    "--bundle",
    type=click.Path(file_okay=False),
    default="build/vtest-scene",
    show_default=True,
    help="A scene bundle with calibrated alert thresholds (make demo exports this one).",
)
@click.option(
    "--video", default=None, help="The clip the bundle was trained on [default: OpenCV's vtest.avi]."
)
@click.option("--seeds", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--objects", type=click.IntRange(min=1), default=20, show_default=True, help="Per seed.")
@click.option(
    "--design",
    is_flag=True,
    help="Compare persistence rules on a design bundle instead (a model trained on an earlier part "
    "of the clip), scored on frames before the report part: how pixlm-export's rule was chosen.",
)
def alerts(quick, out, threads, bundle, video, seeds, objects, design) -> None:
    """Left objects pasted into a camera's held-out footage: found within 3 s, false alerts a minute.

    pixlm (the bundle's calibrated alerts) against OpenCV's MOG2 and a dual-background left-object
    detector, through the same persistence and life cycle, with thresholds from the same
    calibration frames; the table, and the curve of found against false alerts (NAME.png).

    \b
    Example (about 15 min on 2 cores):
      pixlm-export sdk/models/vtest-scene.pt --data vtest.avi --no-int8 --no-dynamic -o build/vtest-scene
      pixlm study alerts --out docs/figures
    """
    from pixlm.studies import alerts as study_mod

    opts = study_mod.AlertsOptions(
        bundle=Path(bundle), out=Path(out), seeds=seeds, objects_per_seed=objects, quick=quick, design=design
    )
    if video:
        opts.video = video
    try:
        results = study_mod.run(opts, log=lambda s: click.echo(s, err=True))
    except ValueError as e:  # a bundle without alert rules, a missing bundle (BundleError)
        _fail(str(e))
    click.echo(study_mod.format_table(results))


@study.command("motion")
@_study_options
@click.option(
    "--bundle",
    type=click.Path(file_okay=False),
    default="build/vtest-motion",
    show_default=True,
    help="A motion bundle with calibrated alert thresholds (make demo exports this one).",
)
@click.option(
    "--scene-bundle",
    type=click.Path(file_okay=False),
    default="build/vtest-scene",
    show_default=True,
    help="The appearance (scene) bundle of the same clip, measured on the same anomalies.",
)
@click.option(
    "--video", default=None, help="The clip the bundles were trained on [default: OpenCV's vtest.avi]."
)
@click.option("--seeds", type=click.IntRange(min=1), default=7, show_default=True)
@click.option(
    "--design",
    is_flag=True,
    help="Choose the alert margin on a design bundle instead (a motion model trained on the clip's "
    "first 40%, calibrated on 40-50%), scored on 50-60%: how pixlm-export's margin was chosen.",
)
def motion(quick, out, threads, bundle, scene_bundle, video, seeds, design) -> None:
    """Abnormal behaviour staged in a camera's held-out footage: running, intrusion, loitering.

    Walkers' own pixels, tracked and pasted by their masks: running at 3-4x speed, walking across
    the lawn where nobody walked in training, standing still for 10-14 s where people pass (and
    wrong way, where training shows one dominant direction). The motion bundle against per-tile
    optical-flow histograms (kNN) and frame differences learned from the same training frames,
    and the appearance bundle on the same anomalies: AUROC per kind over region-seconds (all, and
    with motion only), alerted within 3 s, false alerts a minute; NAME.json and NAME.jpg (a
    running walker and the motion-surprise map).

    \b
    Example (about 15 min on 2 cores):
      pixlm-export sdk/models/vtest-motion.pt --data vtest.avi --no-int8 --no-dynamic -o build/vtest-motion
      pixlm study motion --out docs/figures
    """
    from pixlm.studies import motion as study_mod

    opts = study_mod.MotionOptions(
        bundle=Path(bundle),
        scene_bundle=None if design else Path(scene_bundle),
        out=Path(out),
        seeds=seeds,
        quick=quick,
        design=design,
    )
    if video:
        opts.video = video
    try:
        results = study_mod.run(opts, log=lambda s: click.echo(s, err=True))
    except ValueError as e:  # a pixel bundle, no alert rules, a missing bundle (BundleError)
        _fail(str(e))
    click.echo(study_mod.format_table(results))


@study.command("few-labels")
@_study_options
@click.option(
    "--pretrained",
    type=click.Path(dir_okay=False),
    default="runs/fm-pretrain.pt",
    show_default=True,
    help="A model pretrained without labels (pixlm train --label-weight 0).",
)
@click.option(
    "--per-class", default="10,100", show_default=True, callback=_int_list, help="Labelled images per class."
)
@click.option("--draws", type=click.IntRange(min=1), default=5, show_default=True)
def few_labels(quick, out, threads, pretrained, per_class, draws) -> None:
    """Semi-supervised few labels: pixlm against a CNN and a pseudo-label CNN, 10 / 100 labels per class.

    Labelled draws and unlabeled images come from training images 0-54,999; every step count
    and checkpoint is chosen on 1,000 calibration images (55,000-59,999); accuracy is reported on
    all 10,000 test images, mean ± sd over the draws.

    \b
    First pretrain without labels on the first 55,000 images (about 3 h on 2 cores, resumable):
      pixlm train --max-images 55000 --label-weight 0 --eval-split calib --epochs 4 \\
        --precision bf16 -o runs/fm-pretrain.pt
    Runs already in OUT/few-labels.json are kept when made with the same protocol: an interrupted
    study continues; a changed one starts afresh.
    """
    from pixlm.studies import few_labels as study_mod

    opts = study_mod.FewLabelsOptions(
        pretrained=Path(pretrained),
        out=Path(out),
        per_class=per_class,
        draws=draws,
        threads=threads,
        quick=quick,
    )
    if quick:
        opts.draws = min(draws, 1)
    try:
        results = study_mod.run(opts, log=lambda s: click.echo(s, err=True))
    except ValueError as e:
        _fail(str(e))
    click.echo(study_mod.format_table(results))


@study.command("new-task")
@_study_options
@click.option(
    "--init",
    "init",
    type=click.Path(dir_okay=False),
    default=None,
    help="The checkpoint --init starts from [default: the shipped Fashion-MNIST model].",
)
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True)
@click.option(
    "--runs",
    type=click.Path(file_okay=False),
    default="runs/new-task",
    show_default=True,
    help="Folder for the generated class folders and the models (not for git).",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="pixlm epochs per run; the one kept is the best on the calibration folder.",
)
def new_task(quick, out, threads, init, seeds, runs, epochs) -> None:
    """Your own classes: --init from the shipped model against from scratch and a CNN.

    Writes labelled class folders of 20 distorted Hershey-font characters (train: 40 per class,
    calib: 20, report: 100; new glyphs per seed) under --runs, then per seed trains
    pixlm from the shipped model, pixlm from scratch and the small CNN on train/, keeps each run's
    epoch best on calib/ and reports accuracy on report/ (mean ± sd over the seeds). About
    20 min a seed on one core; runs already in OUT/new-task.json are kept.

    \b
    Examples:
      pixlm study new-task --quick
      pixlm study new-task --out docs/figures
    """
    from pixlm.studies import new_task as study_mod

    opts = study_mod.NewTaskOptions(
        out=Path(out), runs=Path(runs), seeds=seeds, epochs=epochs, threads=threads, quick=quick
    )
    if init:
        opts.init = Path(init)
    if quick:
        opts.seeds, opts.epochs, opts.cnn_epochs = 1, 6, 20
    try:
        results = study_mod.run(opts, log=lambda s: click.echo(s, err=True))
    except (ValueError, TimeoutError) as e:
        _fail(str(e))
    click.echo(study_mod.format_table(results))


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="out",
    show_default=True,
    help="Folder for everything (its files are replaced, snapshots/ is emptied).",
)
@click.option(
    "--bundle",
    type=click.Path(file_okay=False),
    default=None,
    help="The Fashion-MNIST bundle [default: the shipped model's, built on first use].",
)
@click.option(
    "--scene-bundle",
    type=click.Path(file_okay=False),
    default="build/vtest-scene",
    show_default=True,
    help="The scene model's bundle (exported from sdk/models/vtest-scene.pt; `make demo` does).",
)
@click.option(
    "--motion-bundle",
    type=click.Path(file_okay=False),
    default=None,
    help="The motion model's bundle (exported from sdk/models/vtest-motion.pt; `make demo` does): "
    "a walker running in the street, found or not [default: build/vtest-motion when it is there].",
)
@click.option("--video", default=None, help="The street clip [default: OpenCV's vtest.avi].")
@click.option(
    "--stride",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Surveillance: every Nth frame through the scene model (1: all, about twice as long).",
)
@click.option("--quick", is_flag=True, help="Seconds, not minutes: a small sheet, short clips (the tests).")
@click.option("--seed", type=int, default=0, show_default=True, help="Which items, objects and samples.")
def demo(out, bundle, scene_bundle, motion_bundle, video, stride, quick, seed) -> None:
    """Show what the shipped models do, in pictures: everything goes to OUT.

    \b
    1. recognition: a contact sheet of test items (contact-sheet.png), accuracy, and a conveyor
       clip streamed by `pixlm run --roi` (conveyor.mp4, .jsonl)
    2. surveillance: bags pasted into vtest.avi's held-out frames, streamed through the scene
       model learned without labels (surveillance.mp4, .jsonl, anomaly-score.png, snapshots/):
       pasted objects found, false events
    3. behaviour: a walker running in the same held-out frames, streamed through the motion model
       (street-with-runner.mp4, behaviour.jsonl): found within 3 s or not, false alerts
    4. open set: the Fashion-MNIST model calls street regions "unknown" (open-set.png)
    5. completion: the model draws the bottom half of test items (completion.png)
    then summary.txt and summary.json: the numbers, the files, frames/s of each stream.

    \b
    About 80 s on 2 cores shared with other work (--quick: about 20 s); `make demo` exports
    both bundles first (about 2 min more on 2 idle cores).
    Example:
      pixlm demo --out out --scene-bundle build/vtest-scene
    """
    from pixlm import demo as demo_mod
    from pixlm.runtime.cli import ensure_default_bundle

    opts = demo_mod.DemoOptions(
        bundle=Path(bundle) if bundle else ensure_default_bundle(),
        scene_bundle=Path(scene_bundle),
        motion_bundle=Path(motion_bundle) if motion_bundle else _if_there(Path("build/vtest-motion")),
        out=Path(out),
        stride=stride,
        seed=seed,
    )
    if video:
        opts.video = video
    if quick:
        opts.quick()
    try:
        summary = demo_mod.run(opts, log=lambda s: click.echo(s, err=True))
    except (ValueError, OSError) as e:
        _fail(str(e))
    click.echo(demo_mod.format_summary(summary))


def _if_there(bundle: Path) -> Path | None:
    return bundle if (bundle / "manifest.json").is_file() else None


def _add_runtime_commands() -> None:
    # `pixlm run` lives in the runtime layer (no torch); the group only lists it.
    from pixlm.runtime.bench import bench
    from pixlm.runtime.cli import run

    main.add_command(run)
    main.add_command(bench)


_add_runtime_commands()


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
