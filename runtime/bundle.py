"""Bundles: the folder ``pixlm-export`` writes and the runtime loads (never a checkpoint).

::

    bundle = Bundle.load("build/default")     # checks schema, version, every file's sha256
    bundle.tokenizer.encode(frame)            # the model's own tokenizer and palette
    bundle.path("int8")                       # -> Path of model.int8.onnx
    engine = OrtEngine(bundle.path(bundle.recommended("cpu")))

Every name in ``manifest.json`` is declared in :mod:`pixlm.runtime.manifest`. Each check that
fails raises one :class:`BundleError` naming the file; nothing here imports torch. The manifest
carries its own sha256 (``manifest_sha256``, over the rest of it), so an edited gate threshold or
label list is refused like a flipped byte in a model file; a bundle exported before the hash existed
loads with a :class:`BundleWarning`, also kept in ``Bundle.warnings``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pixlm.runtime import manifest as mf
from pixlm.runtime.alerts import AlertRules
from pixlm.runtime.novelty import OODGate
from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig

_CHUNK = 1 << 20
log = logging.getLogger(__name__)


class BundleError(ValueError):
    """A bundle that cannot be used: missing, malformed, tampered with or from another version."""


class BundleWarning(UserWarning):
    """A bundle that loads but checks less than it should: no manifest hash, an open-set gate off."""


def warn(message: str) -> None:
    """Say ``message`` once: a :class:`BundleWarning` (the CLI prints it as a ``warning:`` line)."""
    log.warning(message)
    warnings.warn(message, BundleWarning, stacklevel=3)


@contextmanager
def warnings_to(echo: Callable[[str], None]) -> Iterator[None]:
    """Inside: each :class:`BundleWarning` goes to ``echo`` as one ``warning: ...`` line (a CLI's
    console) instead of Python's ``file:line: BundleWarning`` form; other warnings pass as usual."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", BundleWarning)
        yield
    for w in said:
        if issubclass(w.category, BundleWarning):
            echo(f"warning: {w.message}")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def manifest_sha256(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON (sorted keys, no spaces), its own hash field left out.

    Floats print as Python's shortest round-trip form, so parsing the file and hashing again gives
    the exporter's hash; a tool that rewrites numbers (``1.0`` as ``1``) changes it."""
    body = {k: v for k, v in manifest.items() if k != mf.K_MANIFEST_SHA256}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class BundleFile:
    """One file of a bundle, already checked: its key in ``files``, path and manifest entry."""

    key: str  # "fp32", "int8", "int8-dynamic", "tensorrt-int8", ...
    path: Path
    precision: str
    format: str
    entry: dict  # the manifest entry (sha256, bytes, quantization, metadata ...)


class Bundle:
    """A loaded, verified bundle. Build one with :meth:`load`."""

    def __init__(
        self,
        root: Path,
        manifest: dict,
        files: dict[str, BundleFile],
        tokenizer: Tokenizer,
        gates: dict[str, OODGate] | None = None,
    ):
        self.root = root
        self.manifest = manifest
        self.files = files
        self.tokenizer = tokenizer
        self.gates = gates or {}  # open-set gates by their key in "ood"
        self.warnings: list[str] = []  # what loading said (BundleWarning), for summaries

    # -- what the runtime reads -----------------------------------------------------------------
    @property
    def model_config(self) -> dict:
        """The model's shape: n_codes, n_labels, grid_h, grid_w, n_layer, n_head, d_model ..."""
        return self.manifest[mf.K_MODEL]

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.manifest[mf.K_LABELS])

    @property
    def vocabulary(self) -> dict:
        """{"n_codes", "bos", "first_label", "size"}."""
        return self.manifest[mf.K_VOCAB]

    @property
    def io(self) -> dict:
        return self.manifest[mf.K_IO]

    @property
    def metrics(self) -> dict:
        return self.manifest.get(mf.K_METRICS, {})

    @property
    def alert_rules(self) -> AlertRules | None:
        """A scene model's calibrated alert rules (None: the bundle has none, e.g. exported by
        an older pixlm, or without calibration frames). Checked on load."""
        entry = self.manifest.get(mf.K_ALERTS)
        return None if entry is None else AlertRules.from_dict(entry)

    def gate_source(self, key: str) -> str:
        """Key in "ood" of the gate file ``key`` uses: its entry's ``gate_source``. A bundle exported
        before it: the file's own, or for a TensorRT engine its source ONNX file's (INT8 engines the
        QDQ file, FP16/FP32 engines the FP32 file), measured on ONNX Runtime, not on the engine."""
        entry = self.files[key].entry if key in self.files else {}
        if mf.F_GATE_SOURCE in entry:
            return entry[mf.F_GATE_SOURCE]
        if key.startswith(mf.TRT_PREFIX):
            return mf.INT8 if key == mf.TRT_PREFIX + "int8" else mf.FP32
        return key

    def ood_gate(self, key: str) -> OODGate | None:
        """The "unknown" gate file ``key`` uses (see :meth:`gate_source`); None if the bundle has none."""
        return self.gates.get(self.gate_source(key))

    def path(self, key: str) -> Path:
        """Path of the file stored under ``key`` ("fp32", "int8", "tensorrt-fp16" ...)."""
        if key not in self.files:
            raise BundleError(f"{self.root}: no {key!r} file in this bundle (has {sorted(self.files)})")
        return self.files[key].path

    def recommended(self, target: str = "cpu") -> str:
        """File key the exporter recommends for ``target`` ("cpu" or "tensorrt")."""
        key = self.manifest.get(mf.K_RECOMMENDED, {}).get(target)
        if key is None:
            raise BundleError(f"{self.root}: no file recommended for {target!r}")
        return key

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike, verify: bool = True) -> Bundle:
        """Read ``path/manifest.json`` and check it; ``verify=False`` skips the sha256 pass."""
        root = Path(path)
        man_path = root / mf.MANIFEST
        if not root.is_dir():
            raise BundleError(f"{root}: no such bundle folder")
        if not man_path.is_file():
            raise BundleError(f"{man_path}: missing; {root} is not a pixlm bundle")
        try:
            manifest = json.loads(man_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BundleError(f"{man_path}: unreadable manifest ({e})") from e
        if not isinstance(manifest, dict) or manifest.get(mf.K_SCHEMA) != mf.SCHEMA:
            raise BundleError(f"{man_path}: not a {mf.SCHEMA} manifest")
        version = manifest.get(mf.K_SCHEMA_VERSION)
        if version != mf.SCHEMA_VERSION:
            raise BundleError(
                f"{man_path}: schema version {version}, this runtime reads {mf.SCHEMA_VERSION} "
                "(re-export the bundle with a matching pixlm-export)"
            )
        for key in (mf.K_MODEL, mf.K_TOKENIZER, mf.K_LABELS, mf.K_VOCAB, mf.K_IO, mf.K_FILES):
            if key not in manifest:
                raise BundleError(f"{man_path}: missing key {key!r}")
        _check_types(man_path, manifest)
        if mf.K_ALERTS in manifest:
            try:
                AlertRules.from_dict(manifest[mf.K_ALERTS])
            except (ValueError, AttributeError) as e:
                raise BundleError(f"{man_path}: {mf.K_ALERTS}: {e}") from None
        tokenizer = _tokenizer(man_path, manifest)
        files = {}
        for key, entry in manifest[mf.K_FILES].items():
            files[key] = _check_file(root, man_path, key, entry, verify)
        bundle = cls(root, manifest, files, tokenizer, _gates(man_path, manifest))
        said = _check_manifest_hash(man_path, manifest)  # last: the field checks above name the field
        if said:
            bundle.warnings.append(said)
            warn(said)
        return bundle


def _check_manifest_hash(man_path: Path, manifest: dict) -> str | None:
    """Refuse a manifest whose content does not match its hash; a warning when it has none."""
    want = manifest.get(mf.K_MANIFEST_SHA256)
    if want is None:
        return (
            f"{man_path}: no {mf.K_MANIFEST_SHA256} (exported before pixlm hashed its manifests): its "
            "gate, labels and checksums are not verified; re-export the bundle to add it"
        )
    if not isinstance(want, str):
        raise BundleError(f"{man_path}: {mf.K_MANIFEST_SHA256} must be a string, got {want!r:.40}")
    got = manifest_sha256(manifest)
    if got != want:
        raise BundleError(
            f"{man_path}: content does not match its {mf.K_MANIFEST_SHA256} (manifest {got[:12]}…, "
            f"recorded {want[:12]}…): edited after export; re-export the bundle"
        )
    return None


def _gates(man_path: Path, manifest: dict) -> dict[str, OODGate]:
    entries = manifest.get(mf.K_OOD, {})
    if not isinstance(entries, dict):
        raise BundleError(f"{man_path}: {mf.K_OOD!r} is not an object")
    gates = {}
    for key, entry in entries.items():
        if key not in manifest[mf.K_FILES]:
            raise BundleError(f"{man_path}: {mf.K_OOD}.{key}: no such file in 'files'")
        try:
            gates[key] = OODGate.from_dict(entry, vocab=manifest.get(mf.K_VOCAB, {}).get("size"))
        except ValueError as e:
            raise BundleError(f"{man_path}: {mf.K_OOD}.{key}: {e}") from None
    for key, entry in manifest[mf.K_FILES].items():
        if mf.F_GATE_SOURCE not in entry:
            continue
        source = entry[mf.F_GATE_SOURCE]
        if not isinstance(source, str) or source not in gates:
            raise BundleError(
                f"{man_path}: files.{key}.{mf.F_GATE_SOURCE} {source!r}: no such gate in {mf.K_OOD!r} "
                f"(has {sorted(gates)})"
            )
    return gates


# The manifest's typed schema: what each top-level key must be (beyond "present").
_OBJECTS = (mf.K_MODEL, mf.K_TOKENIZER, mf.K_VOCAB, mf.K_IO, mf.K_FILES, mf.K_METRICS, mf.K_RECOMMENDED)
_MODEL_INTS = {"n_codes": 2, "n_labels": 0, "grid_h": 1, "grid_w": 1, "n_layer": 1, "n_head": 1, "d_model": 1}


def _check_types(man_path: Path, manifest: dict) -> None:
    """Types and ranges of the manifest's fields; one ``BundleError`` naming the first bad one."""
    for key in _OBJECTS:
        if key in manifest and not isinstance(manifest[key], dict):
            raise BundleError(f"{man_path}: {key!r} must be an object, got {type(manifest[key]).__name__}")
    labels = manifest[mf.K_LABELS]
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise BundleError(f"{man_path}: 'labels' must be a list of non-empty strings, got {labels!r:.60}")
    if len(set(labels)) != len(labels):
        raise BundleError(f"{man_path}: 'labels' repeats a name")
    model = manifest[mf.K_MODEL]
    for name, least in _MODEL_INTS.items():
        v = model.get(name)
        if not isinstance(v, int) or isinstance(v, bool) or v < least:
            raise BundleError(f"{man_path}: model.{name} must be an integer >= {least}, got {v!r}")
    if model["d_model"] % model["n_head"]:
        raise BundleError(f"{man_path}: model.d_model {model['d_model']} is not a multiple of n_head")
    if len(labels) != model["n_labels"]:
        raise BundleError(f"{man_path}: {len(labels)} labels, but model.n_labels is {model['n_labels']}")


def check_engine(bundle: Bundle, engine, key: str) -> None:
    """The model file's graph must have the manifest's shape: layers (its KV inputs), heads, vocabulary."""
    m = bundle.model_config
    want = {"n_layer": m["n_layer"], "n_head": m["n_head"], "vocab_size": bundle.vocabulary.get("size")}
    got = {k: getattr(engine, k, None) for k in want}
    for k, v in want.items():
        if got[k] is not None and got[k] != v:
            raise BundleError(f"{bundle.path(key)}: the graph has {k} {got[k]}, the manifest says {v}")


def _tokenizer(man_path: Path, manifest: dict) -> Tokenizer:
    try:
        tok = Tokenizer(TokenizerConfig.from_dict(manifest[mf.K_TOKENIZER]), manifest[mf.K_LABELS])
    except (TypeError, ValueError) as e:
        raise BundleError(f"{man_path}: bad {mf.K_TOKENIZER!r} ({e})") from e
    model, vocab = manifest[mf.K_MODEL], manifest[mf.K_VOCAB]
    expected = {
        "n_codes": tok.n_codes,
        "n_labels": len(tok.labels),
        "grid_h": tok.grid[0],
        "grid_w": tok.grid[1],
    }
    for name, value in expected.items():
        if model.get(name) != value:
            raise BundleError(f"{man_path}: model {name} {model.get(name)} != tokenizer's {value}")
    if vocab.get("size") != tok.vocab_size or vocab.get("bos") != tok.bos:
        raise BundleError(f"{man_path}: vocabulary {vocab} does not match the tokenizer")
    return tok


def _inside(root: Path, man_path: Path, key: str, rel: object) -> Path:
    """Resolve a manifest path, refusing anything that leaves the bundle folder."""
    if not isinstance(rel, str) or not rel:
        raise BundleError(f"{man_path}: file {key!r} has no path")
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or ".." in p.parts:
        raise BundleError(f"{man_path}: file {key!r} path {rel!r} points outside the bundle")
    full = root / p
    real_root = root.resolve()
    if not full.resolve().is_relative_to(real_root):
        raise BundleError(f"{full}: resolves outside the bundle folder {real_root} (symlink?)")
    return full


def _check_blob(full: Path, entry: dict, verify: bool) -> None:
    if not full.is_file():
        raise BundleError(f"{full}: missing from the bundle")
    size = full.stat().st_size
    if entry.get(mf.F_BYTES) is not None and size != entry[mf.F_BYTES]:
        raise BundleError(f"{full}: {size} bytes, manifest says {entry[mf.F_BYTES]} (truncated or replaced)")
    if verify:
        want = entry.get(mf.F_SHA256)
        if not isinstance(want, str):
            raise BundleError(f"{full}: no sha256 in the manifest")
        got = sha256_of(full)
        if got != want:
            raise BundleError(f"{full}: sha256 mismatch (file {got[:12]}…, manifest {want[:12]}…): corrupted")


def _check_file(root: Path, man_path: Path, key: str, entry: object, verify: bool) -> BundleFile:
    if not isinstance(entry, dict):
        raise BundleError(f"{man_path}: file entry {key!r} is not an object")
    full = _inside(root, man_path, key, entry.get(mf.F_PATH))
    _check_blob(full, entry, verify)
    meta = entry.get(mf.F_METADATA)
    if meta is not None:
        if not isinstance(meta, dict):
            raise BundleError(f"{man_path}: file {key!r} metadata is not an object")
        _check_blob(_inside(root, man_path, key, meta.get(mf.F_PATH)), meta, verify)
    return BundleFile(key, full, str(entry.get(mf.F_PRECISION)), str(entry.get(mf.F_FORMAT)), entry)
