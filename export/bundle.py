"""Writing a bundle: stage every file in a temporary folder next to OUT_DIR, rename on success.

A failed or interrupted export (exception, Ctrl-C, SIGTERM turned into SystemExit by the CLI)
removes the staging folder, so OUT_DIR is either the previous bundle or the complete new one.
The reader is ``pixlm.runtime.bundle.Bundle``; every key comes from ``pixlm.runtime.manifest``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import manifest_sha256, sha256_of
from pixlm.runtime.io_spec import DecoderIO
from pixlm.runtime.tokenizer import Tokenizer


class OutputExistsError(ValueError):
    pass


def check_output(out_dir: Path, force: bool) -> None:
    """Fail early (before minutes of work) when OUT_DIR cannot be written."""
    if out_dir.exists() and not force:
        raise OutputExistsError(f"{out_dir} already exists; pass --force to replace it")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir} exists and is not a folder")


@contextmanager
def staged(out_dir: str | os.PathLike, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder; on normal exit it becomes ``out_dir``, otherwise it is removed."""
    out_dir = Path(out_dir)
    check_output(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.partial-"))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary folder
    try:
        yield stage
        publish(stage, out_dir, force)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def publish(stage: Path, out_dir: Path, force: bool) -> None:
    """Make ``stage`` the bundle at ``out_dir``, durably and without a moment where it is missing.

    Every file and the folder are fsynced first. A new ``out_dir`` is one rename. An existing one
    (``force``) is swapped with the stage in one atomic ``renameat2(RENAME_EXCHANGE)`` (Linux), so a
    reader sees the old bundle or the new one, never neither; elsewhere it falls back to two renames.
    """
    _fsync_tree(stage)
    if not out_dir.exists():
        os.replace(stage, out_dir)
    elif not force:
        raise OutputExistsError(f"{out_dir} appeared during the export; pass --force to replace it")
    elif _exchange(stage, out_dir):
        shutil.rmtree(stage, ignore_errors=True)  # now holds the previous bundle
    else:
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.old-"))
        os.replace(out_dir, old / out_dir.name)
        try:
            os.replace(stage, out_dir)
        except BaseException:
            os.replace(old / out_dir.name, out_dir)  # put the previous bundle back
            raise
        finally:
            shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(out_dir.parent)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 with RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):  # old kernel or file system
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_entry(root: Path, name: str, precision: str, fmt: str, **extra) -> dict:
    """Manifest entry of ``root/name``: path, sha256, bytes, precision, format (+ ``extra``)."""
    path = root / name
    return {
        mf.F_PATH: name,
        mf.F_SHA256: sha256_of(path),
        mf.F_BYTES: path.stat().st_size,
        mf.F_PRECISION: precision,
        mf.F_FORMAT: fmt,
        **extra,
    }


def sidecar_entry(root: Path, name: str) -> dict:
    path = root / name
    return {mf.F_PATH: name, mf.F_SHA256: sha256_of(path), mf.F_BYTES: path.stat().st_size}


def build_manifest(
    model_cfg: dict,
    tokenizer: Tokenizer,
    files: dict,
    metrics: dict,
    recommended: dict,
    producer: dict,
    io_extra: dict | None = None,
) -> dict:
    """The manifest (``pixlm.runtime.manifest`` keys); ``io_extra`` joins the I/O contract's record."""
    return {
        mf.K_SCHEMA: mf.SCHEMA,
        mf.K_SCHEMA_VERSION: mf.SCHEMA_VERSION,
        mf.K_MODEL: model_cfg,
        mf.K_TOKENIZER: tokenizer.config.to_dict(),
        mf.K_LABELS: list(tokenizer.labels),
        mf.K_VOCAB: {
            "n_codes": tokenizer.n_codes,
            "bos": tokenizer.bos,
            "first_label": tokenizer.n_codes + 1,
            "size": tokenizer.vocab_size,
        },
        mf.K_IO: {**DecoderIO.from_config(model_cfg).io_record(), **(io_extra or {})},
        mf.K_FILES: files,
        mf.K_METRICS: metrics,
        mf.K_RECOMMENDED: recommended,
        mf.K_PRODUCER: producer,
    }


def write_manifest(root: Path, manifest: dict) -> Path:
    """Write ``root/manifest.json`` with its own sha256 (``manifest_sha256``: over everything else in
    it), which the runtime checks on load, so an edited gate or label list is refused."""
    path = root / mf.MANIFEST
    manifest = json.loads(json.dumps(manifest))  # hash what the reader parses: tuples are lists, keys str
    manifest[mf.K_MANIFEST_SHA256] = manifest_sha256(manifest)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return path
