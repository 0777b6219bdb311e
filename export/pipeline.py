"""The export, step by step: checkpoint -> ONNX -> validation -> INT8 + gate -> TensorRT -> bundle.

Each step is a library function from a sibling module; :func:`run_export` calls them in order,
reports one line per step through ``echo`` (``✓ onnx fp32  0.1s  model.fp32.onnx (0.2 MB)``),
and returns the rows of the summary table. Errors propagate with their own types (ValueError
subclasses for user errors, OSError for the file system); the CLI turns them into one line.
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
from pixlm.export import measure, quantize, validate
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
from pixlm.runtime import manifest as mf
from pixlm.runtime.engine import OrtEngine
from pixlm.runtime.novelty import GateInputs, OODGate

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


def _sequences(tokenizer, images: np.ndarray) -> np.ndarray:
    """Prepared images -> (B, N+1) int64: BOS, then the image tokens."""
    tokens = tokenizer.encode_prepared(images)
    return np.concatenate([np.full((len(tokens), 1), tokenizer.bos, dtype=np.int64), tokens], axis=1)


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

    with step("checkpoint"):
        path = Path(opts.checkpoint) if opts.checkpoint else ckpt.default_checkpoint()
        model, tok, state = ckpt.load(path)
        cfg = model.cfg
        step.detail = (
            f"{path.name}: {cfg.n_layer} layers × {cfg.d_model}, {tok.n_tokens} tokens, {cfg.n_labels} labels"
        )
    with step("data"):
        plan = calibration_plan(opts.data, state.get("train_config"))
        held_out, calib_images = _load_data(opts, tok, cfg.n_labels, plan)
        plan[mf.C_IMAGES] = len(held_out)
        eval_seqs = _sequences(tok, held_out.images)
        val_seqs = eval_seqs[: opts.validate_images]
        calib = None if calib_images is None else _sequences(tok, calib_images)
        step.detail = f"{opts.data}: {len(held_out)} held-out images of split {plan[mf.C_SPLIT]!r}" + (
            "" if calib is None else f", {len(calib)} calibration (train) images"
        )

    rows: list[Row] = []
    files, metrics, gates = {}, {}, {}

    def fit_gate(key: str, inputs: GateInputs) -> str:
        """Fit file ``key``'s open-set gate on its held-out outputs; a note for the step line."""
        if opts.ood_accept is None:
            return ""
        gates[key] = OODGate.fit(inputs, opts.ood_accept).to_dict()
        return f"; unknown-gate accepts {100 * opts.ood_accept:g}% (threshold {gates[key]['threshold']:.1f})"

    with staged(out_dir, opts.force) as stage:
        fp32_path = stage / mf.onnx_filename(mf.FP32)
        with step("onnx fp32"):
            export_onnx(model, fp32_path)
            step.detail = _mb(fp32_path)
        with step("validate fp32"):
            fp32 = OrtEngine(fp32_path, threads=opts.threads)
            m = validate.validate(model, fp32, val_seqs)
            agree = m.get(mf.M_LABEL_AGREEMENT)
            step.detail = (
                f"max|Δ logit| {m[mf.M_MAX_ABS_DIFF]:.1e}, decode {m[mf.M_KV_MAX_ABS_DIFF]:.1e} "
                f"on {len(val_seqs)} images" + ("" if agree is None else ", labels 100% agree")
            )
        rows.append(Row(mf.FP32, fp32_path, max_abs_diff=m[mf.M_MAX_ABS_DIFF]))
        metrics[mf.FP32] = m
        files[mf.FP32] = file_entry(stage, fp32_path.name, "fp32", mf.FORMAT_ONNX)

        reference = None
        if cfg.n_labels and not (held_out.labels < 0).any():
            with step("accuracy fp32"):
                reference, feats = measure.held_out_pass(
                    fp32, eval_seqs, held_out.labels, tok, desc="accuracy fp32"
                )
                step.detail = f"{100 * reference:.2f}% on {len(held_out)} held-out images"
                step.detail += fit_gate(mf.FP32, feats)
            rows[0].accuracy = reference
            metrics[mf.FP32].update({mf.M_ACCURACY: reference, mf.M_EVAL_IMAGES: len(held_out)})
        metrics[mf.FP32].update(reuse_metrics(fp32, val_seqs, cfg.n_labels))

        variants = []
        if opts.int8:
            variants.append(
                (
                    mf.INT8,
                    mf.QUANT_QDQ,
                    "int8 qdq",
                    lambda p: quantize.quantize_qdq(fp32_path, p, calib, cfg.to_dict()),
                )
            )
        if opts.dynamic:
            variants.append(
                (
                    mf.INT8_DYNAMIC,
                    mf.QUANT_DYNAMIC,
                    "int8 dynamic",
                    lambda p: quantize.quantize_dynamic_int8(fp32_path, p),
                )
            )
        rejected: dict[str, validate.AccuracyGateError] = {}
        for key, how, label, run in variants:
            q_path = stage / mf.onnx_filename(key)
            with step(f"quantize {label}"):
                n = run(q_path)
                step.detail = f"{_mb(q_path)}, {n} weight MatMuls" + (
                    f", calibrated on {len(calib)} train images" if how == mf.QUANT_QDQ else ""
                )
            with step(f"accuracy {label}"):
                engine = OrtEngine(q_path, threads=opts.threads)
                diff = validate.compare_logits(model, engine, val_seqs)  # names, shapes; Δ reported
                acc, feats = measure.held_out_pass(
                    engine, eval_seqs, held_out.labels, tok, desc=f"accuracy {label}"
                )
                reuse = reuse_metrics(engine, val_seqs, cfg.n_labels)
                step.detail = (
                    f"{100 * acc:.2f}% ({100 * (acc - reference):+.2f} points vs fp32, "
                    f"gate -{opts.max_drop:g}), max|Δ logit| {diff:.3f}, "
                    f"prefix reuse max|Δ logit| {reuse[mf.M_REUSE_MAX_ABS_DIFF]:.1e}"
                )
                try:
                    validate.check_gate(key, reference, acc, opts.max_drop, len(held_out))
                except validate.AccuracyGateError as e:
                    rejected[key] = e  # left out; fatal below if nothing else passes
                    step.failed = True
                    step.detail += f"; below the gate, {q_path.name} left out of the bundle"
                    del engine
                    q_path.unlink()
                    continue
                step.detail += fit_gate(key, feats)
            rows.append(Row(key, q_path, accuracy=acc, max_abs_diff=diff))
            metrics[key] = {mf.M_ACCURACY: acc, mf.M_EVAL_IMAGES: len(held_out), mf.M_MAX_ABS_DIFF: diff}
            metrics[key].update(reuse)
            files[key] = file_entry(stage, q_path.name, "int8", mf.FORMAT_ONNX, **{mf.F_QUANTIZATION: how})
        check_rejected(rejected, len(variants), opts)

        trt_source = stage / mf.onnx_filename(mf.INT8 if mf.INT8 in files else mf.FP32)
        with step("tensorrt lint"):
            lint = trt_export.lint_onnx(trt_source)
            if lint["problems"] and opts.tensorrt:
                raise trt_export.LintError(f"{trt_source.name}: " + "; ".join(lint["problems"]))
            step.detail = f"{trt_source.name}: {len(lint['op_types'])} op types" + (
                "; WARNING " + "; ".join(lint["problems"])
                if lint["problems"]
                else ", all parsed by TensorRT 10"
            )

        if opts.tensorrt:
            builds = [(mf.INT8, trt_source)] if mf.INT8 in files else []
            if opts.fp16:
                builds.append(("fp16", fp32_path))
            if not builds:
                builds.append(("fp32", fp32_path))
            for precision, source in builds:
                engine_path = stage / mf.engine_filename(precision)
                with step(f"tensorrt {precision}"):
                    meta = trt_export.build_engine(
                        source,
                        engine_path,
                        cfg.to_dict(),
                        precision,
                        opts.max_batch,
                        opts.workspace_mb,
                        opts.timing_cache,
                    )
                    step.detail = f"{_mb(engine_path)}, {meta['gpu']} (sm {meta['compute_capability']})"
                key = mf.TRT_PREFIX + precision
                files[key] = file_entry(
                    stage,
                    engine_path.name,
                    precision,
                    mf.FORMAT_TRT,
                    **{mf.F_METADATA: sidecar_entry(stage, f"{engine_path.name}.json")},
                )
                rows.append(Row(key, engine_path))
                if gates:  # the engine's numbers are not its ONNX file's: its own gate, on its outputs
                    with step(f"gate {key}"):
                        acc, feats = trt_export.held_out_pass(
                            engine_path, eval_seqs, held_out.labels, tok, opts.max_batch
                        )
                        step.detail = f"{100 * acc:.2f}% on {len(held_out)} held-out images"
                        step.detail += fit_gate(key, feats)
                    rows[-1].accuracy = acc
                    metrics[key] = {mf.M_ACCURACY: acc, mf.M_EVAL_IMAGES: len(held_out)}

        if opts.bench_seconds > 0:
            with step("benchmark"):
                timed = [r for r in rows if not r.format.startswith(mf.TRT_PREFIX)]  # TensorRT: trt_parity
                engines = [OrtEngine(r.path, threads=opts.threads) for r in timed]
                for _ in range(BENCH_ROUNDS):  # interleaved: a burst of other load hits every file alike
                    for row, engine in zip(timed, engines, strict=True):
                        ms1, fps16 = measure.speed(engine, eval_seqs, opts.bench_seconds / BENCH_ROUNDS)
                        row.ms_batch1 = min(ms1, row.ms_batch1 or ms1)
                        row.fps_batch16 = max(fps16, row.fps_batch16 or fps16)
                for row in timed:
                    metrics[row.format].update(
                        {mf.M_MS_BATCH1: row.ms_batch1, mf.M_FPS_BATCH16: row.fps_batch16}
                    )
                step.detail = (
                    f"ONNX Runtime CPU, {opts.threads or 'default'} threads, best of {BENCH_ROUNDS} rounds"
                )
        with step("bundle"):
            recommended = {"cpu": recommend_cpu(rows)}
            trt_keys = [k for k in files if k.startswith(mf.TRT_PREFIX)]
            if trt_keys:
                recommended["tensorrt"] = trt_keys[0]
            for key in metrics:
                metrics[key]["threads"] = opts.threads
            for key in gates:  # every gate is fitted on its own file's outputs, engines' included
                files[key][mf.F_GATE_SOURCE] = key
            manifest = build_manifest(
                cfg.to_dict(),
                tok,
                files,
                metrics,
                recommended,
                producer_versions(opts.tensorrt),
                io_extra={"exporter": EXPORTER, "tensorrt_lint": {"source": trt_source.name, **lint}},
            )
            if gates:
                manifest[mf.K_OOD] = gates
            manifest[mf.K_CALIBRATION] = plan
            write_manifest(stage, manifest)
            total = sum(p.stat().st_size for p in stage.iterdir()) / 1e6
            step.detail = f"{out_dir} ({len(files)} models, {total:.2f} MB), cpu: {recommended['cpu']}"
    for row in rows:
        row.path = out_dir / row.path.name
    return rows


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
