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
    "--eval-images",
    type=int,
    default=2000,
    show_default=True,
    help="Held-out images per evaluation (0 = all).",
)
@click.option("--batch-size", type=int, default=64, show_default=True, help="Per process.")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--label-weight", type=float, default=1.0, show_default=True, help="0 = pixel loss only.")
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
    o["eval_images"] = o["eval_images"] or None
    cfg = TrainConfig(**o, height=h, width=w, model=model)
    cfg.channels = int(cfg.channels)
    bar = None
    tty = sys.stderr.isatty()

    def progress(e: dict) -> None:
        nonlocal bar
        acc = "" if e["accuracy"] is None else f" acc {100 * e['accuracy']:.1f}%"
        status = f"epoch {e['epoch']} loss {e['loss']:.3f}{acc}"
        if not tty:  # logs and CI: one line every 2% instead of a redrawn bar
            if e["step"] % max(1, e["total"] // 50) == 0 or e["step"] == e["total"]:
                click.echo(f"step {e['step']}/{e['total']} {status}", err=True)
            return
        if bar is None:
            bar = click.progressbar(
                length=e["total"],
                label="training",
                show_pos=True,
                item_show_func=lambda s: s,
                file=sys.stderr,
            )
            bar.__enter__()
            bar.update(e["step"] - 1)
        bar.update(1, status)

    try:
        run(cfg, on_progress=progress, log=lambda s: click.echo(("\n" if bar else "") + s, err=True))
    except ValueError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted; last checkpoint kept in {cfg.output} (resume with --resume)", err=True)
        sys.exit(130)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    click.echo(f"saved {cfg.output}")


@main.command("eval")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--dataset",
    default="fashion-mnist",
    show_default=True,
    help="'fashion-mnist', a folder of idx files, or a class folder.",
)
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
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
    from pixlm.data import load_source
    from pixlm.evaluate import evaluate, format_report

    if threads:
        torch.set_num_threads(threads)
    path = checkpoint or ckpt.default_checkpoint()
    try:
        model, tok, _ = ckpt.load(path)
        data = load_source(dataset, split, tok.prepare, tok.config.channels).subset(max_images)
    except ValueError as e:
        _fail(str(e))
    with click.progressbar(length=len(data), label=f"scoring {Path(path).name}", file=sys.stderr) as bar:
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
