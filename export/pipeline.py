"""The export, step by step: checkpoint -> ONNX -> validation -> INT8 + gate -> TensorRT -> bundle.

::

    run_export
      load_checkpoint -> load_held_out -> export_fp32 -> quantize_int8 -> lint_tensorrt
        -> build_engines (--tensorrt) -> benchmark -> write_bundle

Each step is a function here over library functions from sibling modules; it reports one line
through ``echo`` (``✓ onnx fp32  0.1s  model.fp32.onnx (0.2 MB)``). A file that makes it into the
bundle is one :class:`ExportedFile`: its row of the summary table, its manifest entry, metrics and
open-set gate. :func:`run_export` returns the rows. Errors propagate with their own types
(ValueError subclasses for user errors, OSError for the file system); the CLI turns them into one
line.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pixlm import checkpoint as ckpt
from pixlm.data import Dataset, held_out_splits, load_source, split_range
from pixlm.export import alerts, measure, quantize, validate
from pixlm.export import tensorrt as trt_export
from pixlm.export.bundle import (
    build_manifest,
    check_output,
    file_entry,
    sidecar_entry,
    staged,
    write_manifest,
)
from pixlm.export.onnx_export import EXPORTER, export_onnx
from pixlm.model import PixLM
from pixlm.runtime import manifest as mf
from pixlm.runtime.engine import OrtEngine
from pixlm.runtime.io_spec import with_bos
from pixlm.runtime.novelty import GateInputs, OODGate
from pixlm.runtime.tokenizer import Tokenizer

BENCH_ROUNDS = 3  # speed measurements per file, interleaved across files; the best one counts


@dataclass
class ExportOptions:
    out_dir: Path
    checkpoint: Path | None = None  # None: the shipped model
    int8: bool = True  # static QDQ INT8 (CPU and TensorRT)
    dynamic: bool = True  # also dynamic INT8 (CPU only)
    tensorrt: bool = False
    fp16: bool = False  # TensorRT: also an FP16 engine from the FP32 file
    data: str = "fashion-mnist"  # its calibration split validates, gates and fits the open-set gate
    calib_data: str | None = None  # training split for calibration; None: same source as data
    calib_images: int = 512
    eval_images: int | None = None  # None: the whole held-out split
    validate_images: int = 64
    max_drop: float = 0.5  # accuracy points INT8 may lose against FP32
    ood_accept: float | None = 0.95  # open-set gate: share of held-out images called known; None = no gate
    max_batch: int = 16  # TensorRT profiles
    workspace_mb: int = trt_export.DEFAULT_WORKSPACE_MB
    timing_cache: Path | None = None
    threads: int | None = None  # ONNX Runtime intra-op threads (and torch's) while measuring
    bench_seconds: float = 1.0  # per measurement; 0 skips the speed columns
    force: bool = False
    seed: int = 0
    alert_frames: str | None = None  # a scene model's calibration frames; None: the checkpoint's own


@dataclass
class Row:
    """One line of the summary table."""

    format: str
    path: Path
    accuracy: float | None = None
    ms_batch1: float | None = None
    fps_batch16: float | None = None
    max_abs_diff: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def size_mb(self) -> float:
        return self.path.stat().st_size / 1e6


class Steps:
    """Times each step and prints its ✓/✗ line. A step that raises prints ✗ and stops the export;
    one that sets ``failed`` (an optional file left out) prints ✗ and the export goes on."""

    def __init__(self, echo: Callable[[str], None]):
        self.echo = echo
        self.detail = ""
        self.failed = False

    @contextmanager
    def __call__(self, label: str) -> Iterator[Steps]:
        self.detail, self.failed = "", False
        t = time.perf_counter()
        try:
            yield self
        except BaseException as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.echo(f"✗ {label}  {time.perf_counter() - t:.1f}s  {msg}")
            raise
        mark = "✗" if self.failed else "✓"
        self.echo(f"{mark} {label}  {time.perf_counter() - t:.1f}s  {self.detail}".rstrip())


def _mb(path: Path) -> str:
    return f"{path.name} ({path.stat().st_size / 1e6:.2f} MB)"


def calibration_plan(data: str, train_config: dict | None) -> dict:
    """Which images the export fits on (gate, INT8 gate, recommendation) and which stay for reports.

    Fashion-MNIST: the calibration split of :func:`pixlm.data.held_out_splits`, never an image a
    reported number uses. Other data: its test split (the user's held-out images)."""
    if data != "fashion-mnist":
        return {mf.C_DATA: data, mf.C_SPLIT: "test", mf.C_REPORT_SPLIT: None}
    calib, report = held_out_splits(train_config)
    plan = {mf.C_DATA: data, mf.C_SPLIT: calib, mf.C_RANGE: list(split_range(calib))}
    return {**plan, mf.C_REPORT_SPLIT: report}


def _load_data(
    opts: ExportOptions, tokenizer, n_labels: int, plan: dict
) -> tuple[Dataset, np.ndarray | None]:
    ch = tokenizer.config.channels
    held_out = load_source(opts.data, plan[mf.C_SPLIT], tokenizer, ch).subset(opts.eval_images)
    if opts.int8 or opts.dynamic:
        if n_labels == 0 or (held_out.labels < 0).any():
            raise ValueError(
                f"{opts.data}: the INT8 accuracy gate needs labelled held-out images and a model with "
                "labels; pass labelled --data, or --no-int8 --no-dynamic"
            )
    if not opts.int8:
        return held_out, None
    if opts.calib_images < quantize.MIN_CALIBRATION_IMAGES:
        raise quantize.CalibrationError(
            f"--calib-images {opts.calib_images}: need at least {quantize.MIN_CALIBRATION_IMAGES}"
        )
    # INT8 ranges come from training images, never from the calibration split's held-out ones
    fit = "fit" if plan[mf.C_SPLIT] == "calib" and not opts.calib_data else "train"
    train = load_source(opts.calib_data or opts.data, fit, tokenizer, ch)
    if len(train) < opts.calib_images:
        raise quantize.CalibrationError(
            f"{opts.calib_data or opts.data}: {len(train)} training images, --calib-images asks for "
            f"{opts.calib_images}"
        )
    pick = np.random.default_rng(opts.seed).choice(len(train), opts.calib_images, replace=False)
    return held_out, train.images[np.sort(pick)]


def producer_versions(with_tensorrt: bool) -> dict:
    import onnx
    import onnxruntime

    versions = {
        "pixlm": importlib.metadata.version("pixlm"),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "exporter": EXPORTER,
    }
    if with_tensorrt:
        versions["tensorrt"] = trt_export.import_tensorrt().__version__
    return versions


@dataclass
class ExportedFile:
    """A file that made it into the bundle, with everything the manifest says about it."""

    row: Row  # its line of the summary table; ``row.format`` is the file's key ("fp32", "int8", ...)
    entry: dict  # manifest "files" entry: path, sha256, bytes, precision, format, ...
    metrics: dict | None = None  # manifest "metrics" entry; None: nothing measured (an ungated engine)
    gate: dict | None = None  # manifest "ood" entry: the open-set gate fitted on this file's outputs

    @property
    def key(self) -> str:
        return self.row.format


@dataclass
class HeldOut:
    """The images the export measures on, tokenized: ``seqs`` are BOS + tokens, (B, N+1) int64."""

    images: Dataset  # the held-out split: accuracy, the INT8 gate, the open-set gates
    plan: dict  # the manifest's "calibration" record: which images these are
    seqs: np.ndarray  # every held-out image
    validate: np.ndarray  # the first --validate-images of them: parity with PyTorch
    calib: np.ndarray | None  # training images that calibrate static INT8 (None without --int8)


@dataclass
class ExportRun:
    """What the steps after the data step share: the options, the step printer, the model, its
    data and the staging folder that becomes the bundle."""

    opts: ExportOptions
    step: Steps
    model: PixLM
    tok: Tokenizer
    data: HeldOut
    stage: Path
    alerts: dict | None = None  # manifest "alerts": a scene model's calibrated alert rules


def run_export(opts: ExportOptions, echo: Callable[[str], None] = print) -> list[Row]:
    """Run every step into a staged folder that becomes ``opts.out_dir`` only if all pass."""
    out_dir = Path(opts.out_dir)
    check_output(out_dir, opts.force)
    if opts.fp16 and not opts.tensorrt:
        raise ValueError("--fp16 builds a TensorRT engine: add --tensorrt")
    if opts.tensorrt:
        trt_export.import_tensorrt()  # fail now, not after minutes of work
    if opts.threads:
        torch.set_num_threads(opts.threads)
    step = Steps(echo)
    model, tok, state = load_checkpoint(opts, step)
    data = load_held_out(opts, tok, model.cfg.n_labels, state.get("train_config"), step)
    with staged(out_dir, opts.force) as stage:
        run = ExportRun(opts, step, model, tok, data, stage)
        files = [export_fp32(run)]
        files += quantize_int8(run, files[0])
        source, lint = lint_tensorrt(run, files)
        if opts.tensorrt:
            files += build_engines(run, files, source)
        if opts.bench_seconds > 0:
            benchmark(run, files)
        run.alerts = calibrate_alerts(run, state.get("train_config") or {})
        write_bundle(run, files, out_dir, tensorrt_lint={"source": source.name, **lint})
    rows = [f.row for f in files]
    for row in rows:
        row.path = out_dir / row.path.name
    return rows


def load_checkpoint(opts: ExportOptions, step: Steps) -> tuple[PixLM, Tokenizer, dict]:
    """The checkpoint to export (default: the shipped model): model, tokenizer, training state."""
    with step("checkpoint"):
        path = Path(opts.checkpoint) if opts.checkpoint else ckpt.default_checkpoint()
        model, tok, state = ckpt.load(path)
        cfg = model.cfg
        step.detail = (
            f"{path.name}: {cfg.n_layer} layers × {cfg.d_model}, {tok.n_tokens} tokens, {cfg.n_labels} labels"
        )
    return model, tok, state


def load_held_out(
    opts: ExportOptions, tok: Tokenizer, n_labels: int, train_config: dict | None, step: Steps
) -> HeldOut:
    """The held-out images (and INT8's calibration images), tokenized with BOS in front."""
    with step("data"):
        plan = calibration_plan(opts.data, train_config)
        held_out, calib_images = _load_data(opts, tok, n_labels, plan)
        plan[mf.C_IMAGES] = len(held_out)
        seqs = with_bos(tok.bos, tok.encode_prepared(held_out.images))
        calib = None if calib_images is None else with_bos(tok.bos, tok.encode_prepared(calib_images))
        step.detail = f"{opts.data}: {len(held_out)} held-out images of split {plan[mf.C_SPLIT]!r}" + (
            "" if calib is None else f", {len(calib)} calibration (train) images"
        )
    return HeldOut(held_out, plan, seqs, seqs[: opts.validate_images], calib)


def fit_gate(opts: ExportOptions, inputs: GateInputs) -> tuple[dict | None, str]:
    """A file's open-set gate fitted on its held-out outputs (None without one), and a note for
    the step line."""
    if opts.ood_accept is None:
        return None, ""
    gate = OODGate.fit(inputs, opts.ood_accept).to_dict()
    return gate, f"; unknown-gate accepts {100 * opts.ood_accept:g}% (threshold {gate['threshold']:.1f})"


def export_fp32(run: ExportRun) -> ExportedFile:
    """The FP32 ONNX file: exported, validated against PyTorch, its accuracy (the INT8 gate's
    reference) and gate on the held-out images, and how far prefix reuse moves it."""
    step, data, n_labels = run.step, run.data, run.model.cfg.n_labels
    path = run.stage / mf.onnx_filename(mf.FP32)
    with step("onnx fp32"):
        export_onnx(run.model, path)
        step.detail = _mb(path)
    with step("validate fp32"):
        engine = OrtEngine(path, threads=run.opts.threads)
        m = validate.validate(run.model, engine, data.validate)
        agree = m.get(mf.M_LABEL_AGREEMENT)
        step.detail = (
            f"max|Δ logit| {m[mf.M_MAX_ABS_DIFF]:.1e}, decode {m[mf.M_KV_MAX_ABS_DIFF]:.1e} "
            f"on {len(data.validate)} images" + ("" if agree is None else ", labels 100% agree")
        )
    fp32 = ExportedFile(
        Row(mf.FP32, path, max_abs_diff=m[mf.M_MAX_ABS_DIFF]),
        file_entry(run.stage, path.name, "fp32", mf.FORMAT_ONNX),
        metrics=m,
    )
    if n_labels and not (data.images.labels < 0).any():
        with step("accuracy fp32"):
            acc, feats = measure.held_out_pass(
                engine, data.seqs, data.images.labels, run.tok, desc="accuracy fp32"
            )
            fp32.gate, note = fit_gate(run.opts, feats)
            step.detail = f"{100 * acc:.2f}% on {len(data.images)} held-out images" + note
        fp32.row.accuracy = acc
        m.update({mf.M_ACCURACY: acc, mf.M_EVAL_IMAGES: len(data.images)})
    m.update(reuse_metrics(engine, data.validate, n_labels))
    return fp32


def quantize_int8(run: ExportRun, fp32: ExportedFile) -> list[ExportedFile]:
    """The INT8 files asked for (static QDQ, dynamic), each held to the accuracy gate against
    ``fp32``; one below the gate is left out (:func:`check_rejected` says when that is fatal)."""
    opts, step, data = run.opts, run.step, run.data
    variants = [k for k, wanted in ((mf.INT8, opts.int8), (mf.INT8_DYNAMIC, opts.dynamic)) if wanted]
    reference, images = fp32.row.accuracy, len(data.images)
    files: list[ExportedFile] = []
    rejected: dict[str, validate.AccuracyGateError] = {}
    for key in variants:
        static = key == mf.INT8
        how, label = (mf.QUANT_QDQ, "int8 qdq") if static else (mf.QUANT_DYNAMIC, "int8 dynamic")
        path = run.stage / mf.onnx_filename(key)
        with step(f"quantize {label}"):
            if static:
                n = quantize.quantize_qdq(fp32.row.path, path, data.calib, run.model.cfg.to_dict())
            else:
                n = quantize.quantize_dynamic_int8(fp32.row.path, path)
            step.detail = f"{_mb(path)}, {n} weight MatMuls" + (
                f", calibrated on {len(data.calib)} train images" if static else ""
            )
        with step(f"accuracy {label}"):
            engine = OrtEngine(path, threads=opts.threads)
            diff = validate.compare_logits(run.model, engine, data.validate)  # names, shapes; Δ reported
            acc, feats = measure.held_out_pass(
                engine, data.seqs, data.images.labels, run.tok, desc=f"accuracy {label}"
            )
            reuse = reuse_metrics(engine, data.validate, run.model.cfg.n_labels)
            step.detail = (
                f"{100 * acc:.2f}% ({100 * (acc - reference):+.2f} points vs fp32, "
                f"gate -{opts.max_drop:g}), max|Δ logit| {diff:.3f}, "
                f"prefix reuse max|Δ logit| {reuse[mf.M_REUSE_MAX_ABS_DIFF]:.1e}"
            )
            try:
                validate.check_gate(key, reference, acc, opts.max_drop, images)
            except validate.AccuracyGateError as e:
                rejected[key] = e  # left out; fatal below if nothing else passes
                step.failed = True
                step.detail += f"; below the gate, {path.name} left out of the bundle"
                del engine
                path.unlink()
                continue
            gate, note = fit_gate(opts, feats)
            step.detail += note
        files.append(
            ExportedFile(
                Row(key, path, accuracy=acc, max_abs_diff=diff),
                file_entry(run.stage, path.name, "int8", mf.FORMAT_ONNX, **{mf.F_QUANTIZATION: how}),
                metrics={mf.M_ACCURACY: acc, mf.M_EVAL_IMAGES: images, mf.M_MAX_ABS_DIFF: diff, **reuse},
                gate=gate,
            )
        )
    check_rejected(rejected, len(variants), opts)
    return files


def lint_tensorrt(run: ExportRun, files: list[ExportedFile]) -> tuple[Path, dict]:
    """TensorRT 10's parser support, checked on the file an engine would be built from (static
    INT8 if present, else FP32): a warning on the step line, fatal with ``--tensorrt``."""
    step = run.step
    source = run.stage / mf.onnx_filename(mf.INT8 if any(f.key == mf.INT8 for f in files) else mf.FP32)
    with step("tensorrt lint"):
        lint = trt_export.lint_onnx(source)
        if lint["problems"] and run.opts.tensorrt:
            raise trt_export.LintError(f"{source.name}: " + "; ".join(lint["problems"]))
        step.detail = f"{source.name}: {len(lint['op_types'])} op types" + (
            "; WARNING " + "; ".join(lint["problems"]) if lint["problems"] else ", all parsed by TensorRT 10"
        )
    return source, lint


def build_engines(run: ExportRun, files: list[ExportedFile], source: Path) -> list[ExportedFile]:
    """TensorRT engines: INT8 from ``source`` (the QDQ file), FP16 with ``--fp16``, FP32 when neither.
    Each gets its own gate, fitted on what the engine outputs, when the ONNX files have gates."""
    opts, step, data = run.opts, run.step, run.data
    fp32_path = run.stage / mf.onnx_filename(mf.FP32)
    builds = [(mf.INT8, source)] if any(f.key == mf.INT8 for f in files) else []
    if opts.fp16:
        builds.append(("fp16", fp32_path))
    if not builds:
        builds.append(("fp32", fp32_path))
    gated = any(f.gate is not None for f in files)
    engines: list[ExportedFile] = []
    for precision, onnx_path in builds:
        path = run.stage / mf.engine_filename(precision)
        with step(f"tensorrt {precision}"):
            meta = trt_export.build_engine(
                onnx_path,
                path,
                run.model.cfg.to_dict(),
                precision,
                opts.max_batch,
                opts.workspace_mb,
                opts.timing_cache,
            )
            step.detail = f"{_mb(path)}, {meta['gpu']} (sm {meta['compute_capability']})"
        key = mf.TRT_PREFIX + precision
        sidecar = sidecar_entry(run.stage, f"{path.name}.json")
        engine = ExportedFile(
            Row(key, path),
            file_entry(run.stage, path.name, precision, mf.FORMAT_TRT, **{mf.F_METADATA: sidecar}),
        )
        engines.append(engine)
        if gated:  # the engine's numbers are not its ONNX file's: its own gate, on its outputs
            with step(f"gate {key}"):
                acc, feats = trt_export.held_out_pass(
                    path, data.seqs, data.images.labels, run.tok, opts.max_batch
                )
                engine.gate, note = fit_gate(opts, feats)
                step.detail = f"{100 * acc:.2f}% on {len(data.images)} held-out images" + note
            engine.row.accuracy = acc
            engine.metrics = {mf.M_ACCURACY: acc, mf.M_EVAL_IMAGES: len(data.images)}
    return engines


def benchmark(run: ExportRun, files: list[ExportedFile]) -> None:
    """Speed of every ONNX file through the runtime's OrtEngine (TensorRT: ``trt_parity``)."""
    opts = run.opts
    with run.step("benchmark"):
        timed = [f for f in files if not f.key.startswith(mf.TRT_PREFIX)]
        engines = [OrtEngine(f.row.path, threads=opts.threads) for f in timed]
        for _ in range(BENCH_ROUNDS):  # interleaved: a burst of other load hits every file alike
            for f, engine in zip(timed, engines, strict=True):
                ms1, fps16 = measure.speed(engine, run.data.seqs, opts.bench_seconds / BENCH_ROUNDS)
                f.row.ms_batch1 = min(ms1, f.row.ms_batch1 or ms1)
                f.row.fps_batch16 = max(fps16, f.row.fps_batch16 or fps16)
        for f in timed:
            f.metrics.update({mf.M_MS_BATCH1: f.row.ms_batch1, mf.M_FPS_BATCH16: f.row.fps_batch16})
        run.step.detail = (
            f"ONNX Runtime CPU, {opts.threads or 'default'} threads, best of {BENCH_ROUNDS} rounds"
        )


def write_bundle(run: ExportRun, files: list[ExportedFile], out_dir: Path, tensorrt_lint: dict) -> None:
    """The manifest, written into the staging folder: every file, its metrics and gate, the pick
    per target, the I/O contract and the held-out images' plan."""
    opts = run.opts
    with run.step("bundle"):
        recommended = {"cpu": recommend_cpu([f.row for f in files])}
        trt_keys = [f.key for f in files if f.key.startswith(mf.TRT_PREFIX)]
        if trt_keys:
            recommended["tensorrt"] = trt_keys[0]
        for f in files:
            if f.metrics is not None:
                f.metrics["threads"] = opts.threads
            if f.gate is not None:  # every gate is fitted on its own file's outputs, engines' included
                f.entry[mf.F_GATE_SOURCE] = f.key
        manifest = build_manifest(
            run.model.cfg.to_dict(),
            run.tok,
            {f.key: f.entry for f in files},
            {f.key: f.metrics for f in files if f.metrics is not None},
            recommended,
            producer_versions(opts.tensorrt),
            io_extra={"exporter": EXPORTER, "tensorrt_lint": tensorrt_lint},
        )
        gates = {f.key: f.gate for f in files if f.gate is not None}
        if gates:
            manifest[mf.K_OOD] = gates
        manifest[mf.K_CALIBRATION] = run.data.plan
        if run.alerts is not None:
            manifest[mf.K_ALERTS] = run.alerts
        write_manifest(run.stage, manifest)
        total = sum(p.stat().st_size for p in run.stage.iterdir()) / 1e6
        run.step.detail = f"{out_dir} ({len(files)} models, {total:.2f} MB), cpu: {recommended['cpu']}"


def calibrate_alerts(run: ExportRun, train_config: dict) -> dict | None:
    """A scene model's (no labels, trained on a video's tiles) alert thresholds, fitted on
    calibration frames of its video (:mod:`pixlm.export.alerts`); None for other models."""
    if run.model.cfg.n_labels or not train_config.get("tile"):
        return None
    with run.step("alerts") as step:
        frames = alerts.calibration_frames(train_config, run.opts.alert_frames)
        if frames is None:
            step.detail = "none: give --alert-frames A:B (frames the model did not train on)"
            return None
        video = run.opts.data if run.opts.data != "fashion-mnist" else train_config.get("data")
        rules = alerts.fit_alert_rules(run.model, run.tok, video, frames, train_config)
        th = list(rules.thresholds.values())
        step.detail = (
            f"frames {frames} of {Path(video).name}: {len(th)} tiles, thresholds "
            f"{min(th):.2f}-{max(th):.2f} bits/px, alert after {rules.after_s:g} s"
        )
    return rules.to_dict()


def reuse_metrics(engine: OrtEngine, seqs: np.ndarray, n_labels: int) -> dict:
    """Prefix reuse's deviation from a full prefill on 16 validation images (manifest metrics)."""
    diff, agree = measure.prefix_reuse_deviation(engine, seqs[:16], n_labels)
    out = {mf.M_REUSE_MAX_ABS_DIFF: diff}
    if n_labels:
        out[mf.M_REUSE_LABEL_AGREEMENT] = agree
    return out


def check_rejected(
    rejected: dict[str, validate.AccuracyGateError], n_variants: int, opts: ExportOptions
) -> None:
    """The gate's verdict on the export as a whole. A variant below the gate is left out and the
    export goes on, unless nothing INT8 is left (the user asked for INT8 and would get none) or
    ``--tensorrt`` needs the static INT8 file as its engine's source: then the first error stands."""
    if not rejected:
        return
    if len(rejected) == n_variants:
        raise next(iter(rejected.values()))
    if opts.tensorrt and mf.INT8 in rejected:
        raise rejected[mf.INT8]


def recommend_cpu(rows: list[Row]) -> str:
    """The ONNX file CPUs should run: the fastest at batch 16 among those in the bundle, all of which
    passed the accuracy gate (fp32 is the gate's reference). Without speed figures: static INT8,
    then dynamic INT8, then fp32, whichever is present."""
    onnx_rows = [r for r in rows if not r.format.startswith(mf.TRT_PREFIX)]
    timed = [r for r in onnx_rows if r.fps_batch16]
    if timed:
        return max(timed, key=lambda r: r.fps_batch16).format
    present = {r.format for r in onnx_rows}
    return next(k for k in (mf.INT8, mf.INT8_DYNAMIC, mf.FP32) if k in present)


def format_table(rows: list[Row]) -> str:
    """The summary table, Markdown so it pastes into docs/export.md."""

    def f(v, fmt):
        return "—" if v is None else format(v, fmt)

    lines = [
        "| format | size MB | held-out accuracy | ms/frame batch 1 | frames/s batch 16 "
        "| max abs Δ logit vs PyTorch |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        acc = None if r.accuracy is None else 100 * r.accuracy
        lines.append(
            f"| {r.format} | {r.size_mb:.2f} | {f(acc, '.2f')}{'%' if acc is not None else ''} | "
            f"{f(r.ms_batch1, '.2f')} | {f(r.fps_batch16, ',.0f')} | {f(r.max_abs_diff, '.1e')} |"
        )
    return "\n".join(lines)
