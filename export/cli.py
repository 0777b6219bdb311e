"""`pixlm-export`: a thin layer over :func:`pixlm.export.pipeline.run_export`.

User errors (bad checkpoint, existing or unwritable output, too few calibration images, failed
validation or accuracy gate, full disk, missing TensorRT) print one line and exit non-zero.
"""

from __future__ import annotations

import errno
import signal
from pathlib import Path

import click


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pixlm")
@click.argument("checkpoint", required=False, type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False),
    help="Bundle folder to write (manifest.json + model files).",
)
@click.option(
    "--int8/--no-int8",
    default=True,
    show_default=True,
    help="Static QDQ INT8 model (ONNX Runtime and TensorRT), calibrated on training images.",
)
@click.option(
    "--dynamic/--no-dynamic", default=True, show_default=True, help="Also a dynamic-INT8 model (CPU only)."
)
@click.option(
    "--tensorrt", is_flag=True, help="Build TensorRT 10 engines (needs TensorRT, e.g. from JetPack)."
)
@click.option("--fp16", is_flag=True, help="With --tensorrt: also an FP16 engine from the FP32 model.")
@click.option(
    "--data",
    default="fashion-mnist",
    show_default=True,
    help="Labelled data. Fashion-MNIST: the calibration split (training images 55,000-59,999, or test "
    "images 0-4,999 for a model trained on all 60,000) validates, gates and fits the open-set gate; "
    "other data: its test split. Its train split calibrates INT8.",
)
@click.option(
    "--alert-frames",
    default=None,
    metavar="A:B[:S]",
    help="A scene model: calibrate its per-tile alert thresholds on these frames of --data (e.g. "
    "0.5:0.6:2, frames it did not train on) [default: the range its checkpoint names, if any].",
)
@click.option("--calib-data", default=None, help="Calibration images from here instead [default: --data].")
@click.option(
    "--calib-images", type=int, default=512, show_default=True, help="Training images for INT8 calibration."
)
@click.option(
    "--eval-images",
    type=int,
    default=0,
    show_default=True,
    help="Held-out images for accuracy and the gates (0 = the whole calibration split).",
)
@click.option(
    "--max-drop",
    type=float,
    default=0.5,
    show_default=True,
    help="Fail when INT8 accuracy is more than this many points below FP32.",
)
@click.option(
    "--ood-accept",
    type=click.FloatRange(0.5, 0.999),
    default=0.95,
    show_default=True,
    help="Open-set gate: the share of held-out images the runtime must call known; inputs less "
    "typical than that are labelled 'unknown' (pixlm run --no-unknown turns it off).",
)
@click.option("--no-ood", is_flag=True, help="Store no open-set gate: every input gets a label.")
@click.option(
    "--max-batch", type=int, default=16, show_default=True, help="Largest batch of the TensorRT profiles."
)
@click.option("--workspace-mb", type=int, default=1024, show_default=True, help="TensorRT builder workspace.")
@click.option(
    "--timing-cache",
    type=click.Path(dir_okay=False),
    default=None,
    help="TensorRT timing cache file (read and updated).",
)
@click.option(
    "--threads", type=int, default=None, help="CPU threads for ONNX Runtime and torch [default: all]."
)
@click.option(
    "--bench-seconds",
    type=float,
    default=1.0,
    show_default=True,
    help="Time per speed measurement (0 = skip the speed columns).",
)
@click.option("--force", is_flag=True, help="Replace OUT_DIR if it exists.")
def main(checkpoint, out_dir, eval_images, no_ood, **o) -> None:
    """Export CHECKPOINT (default: the shipped Fashion-MNIST model) to a deployable bundle.

    \b
    Steps: ONNX with KV cache -> validation against PyTorch on real images -> INT8 (QDQ and
    dynamic) with an accuracy gate -> TensorRT lint [-> TensorRT engines] -> bundle.

    \b
    Examples:
      pixlm-export -o build/default
      pixlm-export runs/small.pt -o build/small --eval-images 2000 --threads 2
      pixlm-export -o build/jetson --tensorrt --fp16        # on the Jetson itself
    """
    from pixlm.export.pipeline import ExportOptions, format_table, run_export

    opts = ExportOptions(
        out_dir=Path(out_dir),
        checkpoint=Path(checkpoint) if checkpoint else None,
        eval_images=eval_images or None,
        ood_accept=None if no_ood else o.pop("ood_accept"),
        timing_cache=Path(o.pop("timing_cache")) if o.get("timing_cache") else None,
        **{k: v for k, v in o.items() if k not in ("timing_cache", "ood_accept")},
    )
    from pixlm.export.tensorrt import EngineBuildError, TensorRTUnavailable

    previous = signal.signal(signal.SIGTERM, _terminate)  # the staging folder goes, as on Ctrl-C
    try:
        rows = run_export(opts, echo=click.echo)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise click.ClickException(
                f"disk full while writing {e.filename or opts.out_dir}: free space, retry"
            ) from e
        where = e.filename or opts.out_dir
        raise click.ClickException(f"{where}: {e.strerror or e}") from e
    except (ValueError, TensorRTUnavailable, EngineBuildError) as e:  # validation, gate, calibration ...
        raise click.ClickException(str(e)) from e
    except KeyboardInterrupt:
        raise click.ClickException("interrupted; no bundle written") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
    click.echo("")
    click.echo(format_table(rows))


if __name__ == "__main__":
    main()
