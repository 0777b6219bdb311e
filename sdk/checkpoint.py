"""Checkpoints: one file holding weights, model config, tokenizer (palette) and label names.

The file is a plain dict of tensors, numbers, strings and lists, so ``torch.load(path,
weights_only=True)`` reads it without unpickling arbitrary objects. Training state (optimizer,
step) is optional: ``pixlm train`` keeps it for resuming; the shipped model drops it.
Writes go to a temporary file renamed on success, so an interrupted save leaves the old file.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import torch

from pixlm.model import PixLM, PixLMConfig
from pixlm.runtime.defaults import shipped_model
from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig

FORMAT = "pixlm-checkpoint"
VERSION = 1


def default_checkpoint() -> Path:
    """The shipped Fashion-MNIST model, installed with the package (``pixlm.runtime.defaults``)."""
    return shipped_model()


def save(path: str | os.PathLike, model: PixLM, tokenizer: Tokenizer, **extra) -> None:
    """Atomically write a checkpoint; ``extra`` holds training state and metrics."""
    path = Path(path)
    state = {
        "format": FORMAT,
        "version": VERSION,
        "config": model.cfg.to_dict(),
        "tokenizer": tokenizer.config.to_dict(),
        "labels": list(tokenizer.labels),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    save_atomic(state, path)


def save_atomic(state: dict, path: Path) -> None:
    """torch.save to a temporary file in the same folder, renamed over ``path`` on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; a checkpoint is an ordinary file
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_state(path: str | os.PathLike) -> dict:
    """Read and check a checkpoint dict (safe: weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": lines before our error
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged file, some with many lines
        raise ValueError(f"{path}: not a readable checkpoint ({type(e).__name__}: {_gist(e)})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not a pixlm checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(f"{path}: checkpoint version {state.get('version')}, expected {VERSION}")
    return state


def _gist(error: Exception, limit: int = 160) -> str:
    """The first sentence of an error's message, on one line: torch's weights-only refusal is a
    dozen lines of advice (set weights_only=False: never, for a file of unknown origin)."""
    text = str(error).split("WeightsUnpickler error:", 1)[-1]  # what it refused, past the advice
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [""]
    text = " ".join(lines[:2]) if lines[0].endswith(":") else lines[0]  # "Error(s) in loading ...:"
    text = text.split(". ", 1)[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load(path: str | os.PathLike) -> tuple[PixLM, Tokenizer, dict]:
    """Checkpoint -> (model in eval mode, tokenizer, the whole state dict)."""
    state = load_state(path)
    tokenizer = Tokenizer(TokenizerConfig.from_dict(state["tokenizer"]), state["labels"])
    model = PixLM(PixLMConfig(**state["config"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ValueError(f"{path}: weights do not match the config ({_gist(e)})") from e
    model.eval()
    return model, tokenizer, state


def slim(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy a checkpoint without its optimizer state: what ships (about a third of the size)."""
    state = load_state(src)
    state.pop("optimizer", None)
    dst = Path(dst)
    save_atomic(state, dst)
    return dst


def average(srcs: list[str | os.PathLike], dst: str | os.PathLike) -> Path:
    """Write the mean of several checkpoints' weights (e.g. the last epochs of one run).

    Averaging the weights a run passes through late in training (as in stochastic weight
    averaging) lands nearer the centre of the region they explore, which usually generalises
    better than any one of them. The checkpoints must share model config, tokenizer and labels.
    The output is a slim checkpoint (no optimizer) whose ``averaged_from`` names its inputs.
    """
    if len(srcs) < 2:
        raise ValueError("average needs at least two checkpoints")
    states = [load_state(p) for p in srcs]
    first = states[0]

    def same(key: str, a: dict, b: dict) -> bool:  # tokenizers compare as configs: a field added
        if key == "tokenizer":  # since an early epoch was saved takes its default
            return TokenizerConfig.from_dict(a[key]) == TokenizerConfig.from_dict(b[key])
        return a[key] == b[key]

    for p, st in zip(srcs[1:], states[1:], strict=True):
        for key in ("config", "tokenizer", "labels"):
            if not same(key, st, first):
                raise ValueError(f"{p}: {key} differs from {srcs[0]}'s; average epochs of one model")
    weights = {}
    for k, v in first["model"].items():
        if v.is_floating_point():
            weights[k] = (sum(st["model"][k].double() for st in states) / len(states)).to(v.dtype)
        else:  # integer buffers are not learned: they must agree
            weights[k] = v
    out = {k: v for k, v in states[-1].items() if k not in ("optimizer", "metrics")}
    out.update(model=weights, averaged_from=[Path(p).name for p in srcs])
    dst = Path(dst)
    save_atomic(out, dst)
    return dst
