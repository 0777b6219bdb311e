"""Recognizer: frames in, labels, scores and anomaly maps out, from a bundle. numpy + an engine.

::

    rec = Recognizer.open("build/default")          # or None: the default bundle
    result = rec.predict(frame)                     # label, score, top_k, anomaly (bits/pixel)
    results = rec.predict_batch(crops)
    image = rec.complete(frame, known_rows=3)       # sample the rest of the image with the KV cache
    for r in rec.stream(["vtest.avi"], grid=(2, 2)):  # see pixlm.runtime.stream
        ...

Recognition is the model's next token after ``[BOS, image tokens]`` restricted to the label
tokens; the anomaly map is each image token's negative log-likelihood in bits, both from one
forward pass (the arithmetic, shared with the exporter, is ``pixlm.runtime.scoring``). Backends
all sit behind the ``Engine`` interface (``pixlm.runtime.engine``):

    ========== ===========================================================================
    ort-cpu    ONNX Runtime on the CPU (the bundle's recommended CPU file, INT8 by default)
    ort-cuda   ONNX Runtime's CUDA execution provider
    ort-trt    ONNX Runtime's TensorRT execution provider, engine cache in a folder, INT8 from QDQ
    tensorrt   native TensorRT engines built by ``pixlm-export --tensorrt`` (Jetson)
    auto       tensorrt if the bundle has an engine and TensorRT imports, else ort-cuda if
               available, else ort-cpu
    ========== ===========================================================================
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pixlm.runtime import defaults, scoring
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle, BundleError, check_engine, warn
from pixlm.runtime.engine import KV, Engine, OrtEngine
from pixlm.runtime.io_spec import with_bos
from pixlm.runtime.moved import moved_names
from pixlm.runtime.novelty import OODGate
from pixlm.runtime.prefix_reuse import Prefix, ReusePolicy, run_reusing
from pixlm.runtime.scoring import Result

BACKENDS = ("auto", "ort-cpu", "ort-cuda", "ort-trt", "tensorrt")

# Names whose home moved: still importable from here for one version, with a DeprecationWarning.
# (``Result``, the type ``predict`` returns, lives in pixlm.runtime.scoring and is imported here.)
_MOVED = {
    "LN2": scoring,
    "UNKNOWN": scoring,
    "log_softmax": scoring,
    "softmax": scoring,
    "default_bundle_dir": defaults,
}


__getattr__ = moved_names(__name__, _MOVED)


class BackendUnavailable(RuntimeError):
    """The asked-for backend's library or device is missing on this machine."""


class Recognizer:
    """A bundle's tokenizer and model behind one engine. Build with :meth:`open`."""

    def __init__(
        self,
        bundle: Bundle,
        engine: Engine,
        backend: str,
        file_key: str,
        top_k: int = 3,
        unknown: bool = True,
    ):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.bundle = bundle
        self.tokenizer = bundle.tokenizer
        self.engine = engine
        self.backend = backend
        self.file_key = file_key
        self.labels = bundle.labels
        self.top_k = top_k
        self.n_codes = self.tokenizer.n_codes
        self.pixels_per_token = self.tokenizer.config.patch**2
        # the open-set gate: None when the bundle has none or ``unknown`` is off; ``gate_off`` says why
        self.gate: OODGate | None = bundle.ood_gate(file_key) if unknown and self.labels else None
        self.gate_off: str | None = None
        if self.gate is None:
            self.gate_off = _why_no_gate(bundle, file_key, unknown)
            if unknown and self.labels:  # asked for, and silently missing: say so once
                warn(f"open-set gate off: {self.gate_off}")
        self.stats = {"frames": 0, "reuse_hits": 0, "tokens_total": 0, "tokens_saved": 0}
        self.reuse_policy = ReusePolicy()  # when a cached prefix is worth using (prefix_reuse.py)

    @classmethod
    def open(
        cls,
        bundle: str | os.PathLike | Bundle | None = None,
        backend: str = "auto",
        precision: str | None = None,
        threads: int | None = None,
        top_k: int = 3,
        trt_cache_dir: str | os.PathLike | None = None,
        exact_reuse: bool = False,
        unknown: bool = True,
    ) -> Recognizer:
        """Load and verify a bundle and start an engine on ``backend``.

        ``precision``: a file key of the bundle ("fp32", "int8", "int8-dynamic", ...); default: the
        exporter's recommendation for the backend (the file ``pixlm run`` picks), except that
        ``exact_reuse`` avoids the dynamic-INT8 file, whose per-call activation scales make a
        partial recompute differ from a full one (scores by up to 0.06 on vtest.avi), in favour of
        fp32: pass it for ``Streamer(..., prefix_reuse=True)``, as ``pixlm run --prefix-reuse``
        does (the streamer refuses reuse on a dynamic-INT8 file). ``unknown``: label inputs the bundle's
        open-set gate rejects "unknown" (``Result.known`` False); off, every input gets the
        model's best label, as a closed-set classifier would.
        """
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        if not isinstance(bundle, Bundle):
            path = Path(bundle) if bundle is not None else defaults.default_bundle_dir()
            if bundle is None and not (path / "manifest.json").exists():
                raise BundleError(
                    f"no default bundle at {path}: run `make demo` or `pixlm-export -o {path}`, "
                    "or pass --bundle DIR"
                )
            bundle = Bundle.load(path)
        if backend == "auto":
            backend = _auto_backend(bundle)
        if backend == "tensorrt":
            from pixlm.runtime.engine_trt import TrtEngine  # lazy: TensorRT is optional

            key = precision or bundle.recommended("tensorrt")
            meta = bundle.files[key].path.with_suffix(".json")
            engine = TrtEngine(bundle.path(key), meta if meta.exists() else None)
            check_engine(bundle, engine, key)
            return cls(bundle, engine, backend, key, top_k, unknown)
        key = precision or bundle.recommended("cpu")
        if precision is None and exact_reuse and not mf.exact_under_reuse(key) and "fp32" in bundle.files:
            key = "fp32"
        if backend == "ort-trt" and precision is None and "int8" in bundle.files:
            key = "int8"  # the QDQ model: TensorRT's explicit INT8
        providers = _providers(backend, trt_cache_dir or (bundle.root / "trt-cache"))
        try:
            engine = OrtEngine(bundle.path(key), providers=providers, threads=threads)
        except ValueError as e:  # a damaged or foreign file whose checksum the manifest agrees with
            raise BundleError(str(e)) from None
        check_engine(bundle, engine, key)
        return cls(bundle, engine, backend, key, top_k, unknown)

    # -- one pass over whole images ------------------------------------------------------------
    def analyze_tokens(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, N) image tokens -> the logits after the last image token (B, V: codes, BOS, labels)
        and next-token log-probs (B, N, n_codes)."""
        logits, _ = self.engine.prefill(with_bos(self.tokenizer.bos, tokens))
        return logits[:, -1].copy(), scoring.log_softmax(logits[:, :-1, : self.n_codes])

    def predict(self, image: np.ndarray, nll_map: bool = False) -> Result:
        """One image -> :class:`Result`."""
        return self.predict_batch([image], nll_map=nll_map)[0]

    def predict_batch(self, images: Sequence[np.ndarray], nll_map: bool = False) -> list[Result]:
        """Several images (any sizes) in one engine call (a pixel bundle's: a motion bundle reads
        how a stream's frames change, so it refuses single images)."""
        if self.tokenizer.kind == "motion":
            raise ValueError(
                f"{self.bundle.root}: a motion bundle reads how frames change, not single images: "
                "stream it (pixlm run, Recognizer.stream), or give predict_tokens the tokens of "
                "motion images (pixlm.runtime.motion.Motion)"
            )
        t0 = time.perf_counter()
        tokens = self.tokenizer.encode_batch(images)
        t1 = time.perf_counter()
        head, logp = self.analyze_tokens(tokens)
        t2 = time.perf_counter()
        results = self._results(tokens, head, logp, nll_map)
        t3 = time.perf_counter()
        n = len(images)
        for r in results:
            r.timings = {
                "tokenize": 1e3 * (t1 - t0) / n,
                "infer": 1e3 * (t2 - t1) / n,
                "post": 1e3 * (t3 - t2) / n,
            }
        self._count(tokens)
        return results

    def predict_tokens(self, tokens: np.ndarray, nll_map: bool = False) -> list[Result]:
        """Already tokenized images (B, N) -> results, one full engine pass."""
        results = self._results(tokens, *self.analyze_tokens(tokens), nll_map)
        self._count(tokens)
        return results

    def _count(self, tokens: np.ndarray) -> None:
        self.stats["frames"] += len(tokens)
        self.stats["tokens_total"] += tokens.size + len(tokens)

    # -- prefix reuse: static cameras (pixlm.runtime.prefix_reuse) -----------------------------
    def predict_reusing(
        self, tokens: np.ndarray, memory: Sequence[Prefix | None], nll_map: bool = False
    ) -> tuple[list[Result], list[Prefix]]:
        """Like ``predict_tokens``, running the engine only from each region's first token that
        changed since its previous frame (``memory``: one :class:`Prefix` or None per row), where
        ``self.reuse_policy`` expects that to pay; the other regions get a full pass. Returns the
        results and each region's new memory, for its next frame.

        Exact for a causal model: a token's output depends only on the tokens before it, so the
        cached KV of an unchanged prefix is what a full recompute would produce.
        """
        prefixes, cached = run_reusing(
            tokens, memory, self.reuse_policy, self.engine, self._prefill, self.n_codes
        )
        head = np.stack([p.head for p in prefixes])
        logp = np.stack([p.logp for p in prefixes])
        results = self._results(tokens, head, logp, nll_map)
        for r, c in zip(results, cached, strict=True):
            r.reused_tokens = c  # BOS + the tokens before the region's call came from the cache
            self.stats["reuse_hits"] += int(c > 0)
            self.stats["tokens_saved"] += c
        self._count(tokens)
        return results, prefixes

    def predict_tokens_reusing(
        self, tokens: np.ndarray, memory: list[Prefix | None], nll_map: bool = False
    ) -> list[Result]:
        """``predict_reusing`` that writes the regions' new memory into ``memory`` (deprecated)."""
        warnings.warn(
            "Recognizer.predict_tokens_reusing(tokens, memory) is deprecated: use "
            "results, memory = Recognizer.predict_reusing(tokens, memory)",
            DeprecationWarning,
            stacklevel=2,
        )
        results, prefixes = self.predict_reusing(tokens, memory, nll_map)
        memory[:] = prefixes
        return results

    def _prefill(self, tokens: np.ndarray) -> tuple[np.ndarray, list[KV]]:
        """Prefix reuse's full pass (new regions, changed first tokens, too little to keep): BOS +
        image tokens (B, N) from an empty cache -> logits (B, N + 1, V) and the KV cache."""
        return self.engine.prefill(with_bos(self.tokenizer.bos, tokens))

    # -- completion ----------------------------------------------------------------------------
    def complete(
        self,
        image: np.ndarray,
        known_rows: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Keep the first ``known_rows`` token rows of ``image`` and sample the rest with the KV
        cache (one engine call per new token). Returns the completed image (tokenizer size)."""
        rows, cols = self.tokenizer.grid
        if not 0 <= known_rows <= rows:
            raise ValueError(f"known_rows must be within 0..{rows}, got {known_rows}")
        rng = np.random.default_rng(seed)
        tokens = list(self.tokenizer.encode(image)[: known_rows * cols])
        logits, past = self.engine.prefill(with_bos(self.tokenizer.bos, np.asarray(tokens, np.int64)[None]))
        while len(tokens) < rows * cols:
            z = logits[0, -1, : self.n_codes].astype(np.float64) / max(temperature, 1e-6)
            if top_k is not None:
                z[z < np.sort(z)[-min(top_k, len(z))]] = -np.inf
            p = np.exp(z - z.max())
            tok = int(rng.choice(len(p), p=p / p.sum()))
            tokens.append(tok)
            logits, past = self.engine.run(np.array([[tok]], dtype=np.int64), past)
        return self.tokenizer.decode(np.array(tokens))

    # -- streaming -----------------------------------------------------------------------------
    def stream(self, sources: Sequence[str], **options) -> Iterator:
        """Open ``sources`` (URIs) and yield a ``FrameResult`` per frame; see ``pixlm.runtime.stream``.

        A scene bundle's calibrated alert rules apply unless ``alerts`` says otherwise (None: off),
        with the grid and frame stride they were calibrated for unless ``grid``/``rois``/``stride``
        are given."""
        from pixlm.runtime.stream import Streamer

        rules = self.bundle.alert_rules
        if rules is not None and "alerts" not in options:
            options["alerts"] = rules
            if rules.grid and "grid" not in options and "rois" not in options:
                options["grid"] = rules.grid
            options.setdefault("stride", int(rules.calibration.get("stride", 1)))

        with Streamer(self, sources, **options) as streamer:
            yield from streamer

    # -- shared post-processing ----------------------------------------------------------------
    def ood_scores(self, tokens: np.ndarray, token_bits: np.ndarray, head: np.ndarray) -> np.ndarray:
        """The open-set gate's score per image (see ``pixlm.runtime.novelty``): PNG length of the
        image the tokens decode to, the per-token bits and the logits after the last image token."""
        assert self.gate is not None
        return self.gate.score(scoring.gate_inputs_of(tokens, token_bits, head, self.tokenizer))

    def _results(self, tokens: np.ndarray, head: np.ndarray, logp: np.ndarray, nll_map: bool) -> list[Result]:
        nll = scoring.token_bits(logp, tokens)  # (B, N)
        labels = head[:, self.n_codes + 1 :]
        probs = np.stack([scoring.softmax(z) for z in labels]) if len(self.labels) else None
        known, ood = np.ones(len(tokens), bool), [None] * len(tokens)
        if self.gate is not None:
            scores = self.ood_scores(tokens, nll, head)
            known, ood = scores <= self.gate.threshold, scores.tolist()
        k = max(1, nll.shape[1] // 10)
        peak = np.partition(nll, -k, axis=1)[:, -k:].mean(1) / self.pixels_per_token
        out = []
        rows, cols = self.tokenizer.grid
        for i in range(len(tokens)):
            order = np.argsort(-probs[i])[: self.top_k] if probs is not None else []
            best = int(order[0]) if len(order) else -1
            out.append(
                Result(
                    label=(self.labels[best] if known[i] else scoring.UNKNOWN) if best >= 0 else "",
                    label_index=best if known[i] else -1,
                    score=float(probs[i, best]) if best >= 0 else 0.0,
                    top_k=[(self.labels[k], float(probs[i, k])) for k in order],
                    anomaly=float(nll[i].mean() / self.pixels_per_token),
                    anomaly_peak=float(peak[i]),
                    nll_map=nll[i].reshape(rows, cols).astype(np.float32) if nll_map else None,
                    known=bool(known[i]),
                    ood_score=ood[i],
                )
            )
        return out


def _why_no_gate(bundle: Bundle, file_key: str, unknown: bool) -> str:
    """Why a recognizer runs without an open-set gate, in words for a warning or a summary."""
    if not bundle.labels:
        return "a label-free model has no open-set gate"
    if not unknown:
        return "turned off (unknown=False, --no-unknown)"
    source = bundle.gate_source(file_key)
    where = f"no {mf.K_OOD!r} section" if not bundle.gates else f"no {mf.K_OOD}.{source} entry"
    return (
        f"{bundle.root / mf.MANIFEST} has {where} for file {file_key!r}: every input gets a label, none is "
        "'unknown' (re-export the bundle, or pass unknown=False / --no-unknown to run without it)"
    )


def _auto_backend(bundle: Bundle) -> str:
    if any(k.startswith("tensorrt") for k in bundle.files):
        try:
            from pixlm.runtime.engine_trt import import_tensorrt

            import_tensorrt()
            return "tensorrt"
        except Exception:
            pass
    import onnxruntime as ort

    return "ort-cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "ort-cpu"


def _providers(backend: str, trt_cache_dir: str | os.PathLike) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if backend == "ort-cpu":
        return ["CPUExecutionProvider"]
    if backend == "ort-cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendUnavailable(
                "backend ort-cuda needs onnxruntime-gpu and an NVIDIA GPU; this onnxruntime offers "
                f"{available}. Install onnxruntime-gpu (or use --backend ort-cpu)."
            )
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if "TensorrtExecutionProvider" not in available:
        raise BackendUnavailable(
            "backend ort-trt needs onnxruntime-gpu built with TensorRT (JetPack's onnxruntime-gpu) "
            f"and a GPU; this onnxruntime offers {available}"
        )
    Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
    trt = {
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(trt_cache_dir),
        "trt_int8_enable": True,
    }
    return [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", "CPUExecutionProvider"]
