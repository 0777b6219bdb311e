"""Training: next-pixel loss plus weighted label loss, resumable, on one process or many.

One process: ``pixlm train ...``. Several (CPU: gloo, GPU: nccl): ``torchrun --nproc-per-node 2
-m pixlm.cli train ...``; each rank takes every world_size-th image of the same per-epoch
shuffle and DistributedDataParallel averages the gradients, so all ranks hold identical weights.

Determinism: the model is initialised from ``seed``, epoch e shuffles with ``seed + e``, and step
s augments with ``(seed, s)``; a run resumed from a checkpoint therefore continues exactly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from pixlm import checkpoint, distill
from pixlm.data import Dataset, load_source, shift_batch
from pixlm.evaluate import evaluate
from pixlm.model import PixLM, PixLMConfig
from pixlm.palette import fit_palette
from pixlm.progress import bar
from pixlm.runtime.motion import MotionConfig
from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig


@dataclass
class TrainConfig:
    data: str = "fashion-mnist"  # 'fashion-mnist', an idx folder, a class folder, a video or frame folder
    eval_data: str | None = None  # default: the `eval_split` of `data` when it has one
    eval_split: str = "test"  # which split of eval_data is scored each epoch ("calib" to select on)
    output: str = "runs/pixlm.pt"  # checkpoint written every `save_every` steps and each epoch
    init: str | None = None  # start from these weights and palette (e.g. fine-tune a pre-trained model)
    resume: bool = False  # continue `output` from its saved step
    epochs: float = 1.0
    max_images: int | None = None  # use only the first N training images
    classes: list[int] | None = None  # keep only images of these label indices (one-class models)
    per_class: int | None = None  # keep N images per class, drawn with `subset_seed` (few labels)
    subset_seed: int = 0
    frames: str | None = None  # video/frame data: "A:B" keeps frames A..B-1, fractions allowed ("0:0.6")
    tile: tuple[int, int] | None = None  # video/frame data: cut each frame into a rows x cols grid
    motion: bool = False  # video data: learn motion tokens (pixlm.runtime.motion), not pixel tokens
    eval_images: int | None = 2000  # held-out images scored after each epoch (None = all, 0 = none)
    batch_size: int = 64  # per process
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 200
    label_weight: float = 1.0  # 0 = self-supervised (pixel loss only)
    teacher: str | None = None  # distil: also learn this model's label distribution (pixlm.distill)
    shift: int = 0  # random translation augmentation, pixels
    seed: int = 0
    threads: int | None = None  # torch CPU threads (default: torch's choice)
    precision: str = "fp32"  # "bf16": forward and backward under bfloat16 autocast (~1.5x on AVX512-BF16)
    save_every: int = 200  # steps
    max_minutes: float | None = None  # stop (and save) after this long; resume later
    keep_epochs: bool = False  # also keep each epoch's weights as <output stem>.eNN.pt (to average)
    # tokenizer, used when not starting from `init`
    height: int = 28
    width: int = 28
    channels: int = 1
    patch: int = 2
    codes: int = 256
    resize: str = "stretch"
    # model, used when not starting from `init`
    model: dict = field(default_factory=lambda: {"n_layer": 4, "n_head": 4, "d_model": 128})


def _lr(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up (at most a fifth of the run), then cosine decay to a tenth of ``lr``."""
    warmup = max(1, min(cfg.warmup_steps, total // 5))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def _distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _setup(cfg: TrainConfig, log: Callable[[str], None]) -> tuple[PixLM, Tokenizer, dict | None]:
    """Model and tokenizer from a resume file, an init checkpoint, or fresh (fitting a palette)."""
    if cfg.resume and Path(cfg.output).exists():
        model, tok, state = checkpoint.load(cfg.output)
        _same_kind(tok, cfg, cfg.output)
        log(f"resuming {cfg.output} at step {state.get('step', 0)}")
        return model, tok, state
    if cfg.init:
        model, tok, _ = checkpoint.load(cfg.init)
        _same_kind(tok, cfg, cfg.init)
        log(f"starting from {cfg.init}")
        return model, tok, None
    return None, None, None  # type: ignore[return-value]


def _same_kind(tok: Tokenizer, cfg: TrainConfig, path: str) -> None:
    """A checkpoint of pixel tokens cannot go on learning motion tokens, nor the reverse."""
    want = "motion" if cfg.motion else "pixels"
    if tok.kind != want:
        hint = "drop --motion" if cfg.motion else "add --motion"
        raise ValueError(f"{path} is a {tok.kind} model, this run learns {want} tokens: {hint}")


@dataclass
class TrainResult:
    model: PixLM
    tokenizer: Tokenizer
    metrics: dict  # the last held-out evaluation (empty when none ran)
    step: int
    finished: bool  # False when --max-minutes stopped it first (resume to finish)


def train(
    cfg: TrainConfig, on_progress: Callable[[dict], None] | None = None, log: Callable[[str], None] = print
) -> TrainResult:
    """Train; checkpoints go to ``cfg.output`` (every ``save_every`` steps and each epoch)."""
    rank, world = _distributed()
    log = log if rank == 0 else (lambda s: None)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tok, state = _setup(cfg, log)

    if tok is None:  # fresh run: fit the palette on training images
        motion = MotionConfig().to_dict() if cfg.motion else None
        channels = 3 if cfg.motion else cfg.channels  # grey, horizontal and vertical velocity
        plain = Tokenizer(
            TokenizerConfig(
                cfg.height,
                cfg.width,
                channels,
                cfg.patch,
                cfg.resize,
                palette=[[0] * cfg.patch**2 * channels, [255] * cfg.patch**2 * channels],
                motion=motion,
            )
        )
        data = _training_data(cfg, plain)
        t0 = time.time()
        palette = fit_palette(data.images, cfg.codes, cfg.patch, seed=cfg.seed)
        log(f"palette: {len(palette)} codes of {cfg.patch}x{cfg.patch} px fitted in {time.time() - t0:.1f}s")
        tok = Tokenizer(
            TokenizerConfig(
                cfg.height, cfg.width, channels, cfg.patch, cfg.resize, palette=palette, motion=motion
            ),
            data.label_names,
        )
        torch.manual_seed(cfg.seed)
        rows, cols = tok.grid
        model = PixLM(PixLMConfig(tok.n_codes, len(tok.labels), rows, cols, **cfg.model))
    else:
        data = _training_data(cfg, tok)
        if data.label_names and tuple(data.label_names) != tok.labels:
            if state is not None:  # a resumed run must keep its vocabulary
                raise ValueError(
                    f"{cfg.data}: labels {data.label_names} differ from the model's {tok.labels}"
                )
            # --init on a new task: the image tokens (and what the model learned of them) stay,
            # the old label tokens, if any, are replaced by fresh ones for the new label set
            if tok.labels:
                log(f"replacing the model's {len(tok.labels)} labels by {len(data.label_names)} new ones")
            model, tok = _set_labels(model, tok, data.label_names)
    if data.images.shape[1:3] != (tok.config.height, tok.config.width):
        raise ValueError(
            f"{cfg.data}: images are {data.images.shape[1:3]}, tokenizer expects "
            f"{(tok.config.height, tok.config.width)}"
        )
    eval_data = _eval_data(cfg, tok)

    objective: torch.nn.Module = Objective(model)
    if world > 1:  # gradients are averaged across ranks during backward()
        objective = torch.nn.parallel.DistributedDataParallel(objective)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    step = 0
    if state is not None:
        step = int(state.get("step", 0))
        if "optimizer" in state:
            opt.load_state_dict(state["optimizer"])
    per_epoch = len(data) // (cfg.batch_size * world)
    if per_epoch == 0:
        raise ValueError(
            f"{cfg.data}: {len(data)} images is fewer than one batch of {cfg.batch_size * world}"
        )
    total = max(1, round(cfg.epochs * per_epoch))
    log(
        f"{len(data)} training images, {per_epoch} steps/epoch, {total} steps, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, world {world}"
    )

    t_start, metrics = time.time(), {}
    history = list(state.get("history", [])) if state else []
    labelled = cfg.label_weight > 0 and bool((data.labels >= 0).any())
    soft = None
    if state is not None and state.get("train_config", {}).get("teacher") != cfg.teacher:
        was = state.get("train_config", {}).get("teacher")
        raise ValueError(
            f"{cfg.output} was trained with --teacher {was}, this run asks for {cfg.teacher}: "
            "resume with the same teacher (or none), or write to a new --output"
        )
    if cfg.teacher:
        if not labelled or (data.labels < 0).any():
            raise ValueError("--teacher needs labelled training images and a label weight above 0")
        cache = Path(cfg.output).with_suffix(".teacher.pt")
        soft = distill.teacher_logits(cfg.teacher, data.images, tuple(data.label_names), cache)
        log(f"teacher {cfg.teacher}: label logits of {len(soft)} training images")

    def save() -> None:
        if rank == 0:
            checkpoint.save(
                cfg.output,
                model,
                tok,
                step=step,
                optimizer=opt.state_dict(),
                train_config=_jsonable(asdict(cfg)),
                history=history,
                metrics=metrics,
            )

    model.train()
    run_loss = run_acc = None
    while step < total:
        epoch, offset = divmod(step, per_epoch)
        order = np.random.default_rng(cfg.seed + epoch).permutation(len(data))[rank::world]
        i = offset * cfg.batch_size
        idx = np.sort(order[i : i + cfg.batch_size])
        rng = np.random.default_rng([cfg.seed, step, rank])
        images = shift_batch(data.images[idx], cfg.shift, rng)
        tokens = torch.from_numpy(tok.encode_prepared(images))
        labels = torch.from_numpy(data.labels[idx]) if labelled else None
        for g in opt.param_groups:
            g["lr"] = _lr(step, total, cfg)
        teacher = soft[idx] if soft is not None else None
        loss, pix, lab_logits = train_step(
            objective, opt, tokens, labels, cfg.label_weight, cfg.precision, teacher
        )
        step += 1
        acc = float((lab_logits.argmax(1) == labels).float().mean()) if labels is not None else None
        loss_v = loss.item()
        run_loss = loss_v if run_loss is None else 0.98 * run_loss + 0.02 * loss_v
        if acc is not None:
            run_acc = acc if run_acc is None else 0.98 * run_acc + 0.02 * acc
        if on_progress and rank == 0:
            on_progress(
                {
                    "step": step,
                    "total": total,
                    "epoch": epoch,
                    "loss": run_loss,
                    "pixel_loss": pix.item(),
                    "accuracy": run_acc,
                }
            )
        end_of_epoch = step % per_epoch == 0 or step == total
        out_of_time = cfg.max_minutes is not None and time.time() - t_start > 60 * cfg.max_minutes
        if end_of_epoch and eval_data is not None and rank == 0:
            with bar(desc="held-out scoring", total=len(eval_data), leave=False, unit="img") as scoring:
                metrics = evaluate(model, tok, eval_data, on_batch=scoring.update)
            metrics.pop("confusion", None)
            history.append({"step": step, "epoch": step / per_epoch, **_short(metrics)})
            log(
                f"epoch {step / per_epoch:.2f}: "
                + ", ".join(f"{k} {v:.4f}" for k, v in _short(metrics).items())
            )
            model.train()
        if end_of_epoch or step % cfg.save_every == 0 or out_of_time:
            save()
        if rank == 0 and cfg.keep_epochs and step % per_epoch == 0:  # whole epochs only
            checkpoint.slim(cfg.output, epoch_path(cfg.output, step // per_epoch))
        if out_of_time:
            log(f"stopped after {cfg.max_minutes} min at step {step}/{total}; resume with --resume")
            break
    if world > 1:
        dist.barrier()
    return TrainResult(model, tok, metrics, step, step >= total)


def epoch_path(output: str | Path, epoch: int) -> Path:
    """Where ``keep_epochs`` puts epoch ``epoch``'s weights: runs/x.pt -> runs/x.e07.pt."""
    return Path(output).with_suffix(f".e{epoch:02d}.pt")


class Objective(torch.nn.Module):
    """The losses as a module's forward(), which is what DistributedDataParallel wraps."""

    def __init__(self, model: PixLM):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor | None):
        return self.model.losses(tokens, labels)


def train_step(
    objective: torch.nn.Module,
    opt: torch.optim.Optimizer,
    tokens: torch.Tensor,
    labels: torch.Tensor | None,
    label_weight: float = 1.0,
    precision: str = "fp32",
    teacher: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One update: losses (under bfloat16 autocast if asked), backward, clip to norm 1, AdamW step.
    ``teacher``: the batch's teacher label logits; the label loss is then the distilled one.

    Returns (total loss, pixel loss, label logits). ``benchmarks/train_bench.py`` times this.
    """
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        pix, lab, lab_logits = objective(tokens, labels)
    if teacher is not None and lab is not None:
        lab = distill.label_loss(lab_logits.float(), teacher, labels)
    loss = pix + (label_weight * lab if lab is not None else 0.0)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
    opt.step()
    return loss, pix, lab_logits


def _training_data(cfg: TrainConfig, tok: Tokenizer) -> Dataset:
    """The training split of ``cfg.data``, cut down as the config asks (frames, tiles, classes)."""
    data = load_source(cfg.data, "train", tok, tok.config.channels, frames=cfg.frames, tile=cfg.tile)
    if cfg.classes is not None:
        data = data.of_classes(cfg.classes)
    if cfg.per_class is not None:
        data = data.per_class(cfg.per_class, cfg.subset_seed)
    return data.subset(cfg.max_images)


def _eval_data(cfg: TrainConfig, tok: Tokenizer) -> Dataset | None:
    if cfg.eval_images == 0:
        return None
    source = cfg.eval_data or cfg.data
    try:
        d = load_source(source, cfg.eval_split, tok, tok.config.channels)
    except ValueError:
        return None
    if (
        cfg.eval_data is None
        and source != "fashion-mnist"
        and not Path(source, "t10k-images-idx3-ubyte.gz").exists()
    ):
        return None  # a folder or video has no separate test split: skip unless given one
    return d.subset(cfg.eval_images)


def _set_labels(model: PixLM, tok: Tokenizer, names: tuple[str, ...]) -> tuple[PixLM, Tokenizer]:
    """The same model with label tokens ``names``: code and BOS rows kept, label rows fresh."""
    cfg = PixLMConfig(**{**model.cfg.to_dict(), "n_labels": len(names)})
    new = PixLM(cfg)
    sd = model.state_dict()
    keep = cfg.n_codes + 1  # palette codes and BOS
    for key in ("tok_emb.weight", "head.weight"):
        w = new.state_dict()[key].clone()
        w[:keep] = sd[key][:keep]
        sd[key] = w
    new.load_state_dict(sd)
    return new, Tokenizer(tok.config, names)


def _short(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, float)}


def _jsonable(d: dict) -> dict:
    out = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
    return {k: v for k, v in out.items() if v is None or isinstance(v, (str, int, float, bool, dict, list))}
