"""Training data: Fashion-MNIST idx files, class folders, and unlabeled video or frame folders.

Every loader returns a :class:`Dataset` of uint8 images already prepared to the tokenizer's
``height x width`` (so augmentation and tokenizing work on whole batches) plus integer labels
(-1 for unlabeled frames) and the label names.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pixlm.runtime.motion import Motion

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
VIDEO_SUFFIXES = {".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg"}


@dataclass
class Dataset:
    images: np.ndarray  # (N, H, W) or (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64, -1 = unlabeled
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, n: int | None) -> Dataset:
        if n is None or n >= len(self):
            return self
        return Dataset(self.images[:n], self.labels[:n], self.label_names)

    def take(self, index: np.ndarray) -> Dataset:
        return Dataset(self.images[index], self.labels[index], self.label_names)

    def of_classes(self, classes: list[int]) -> Dataset:
        """Only the images of these label indices (e.g. one class, for a one-class model)."""
        bad = [c for c in classes if not 0 <= c < len(self.label_names)]
        if bad:
            raise ValueError(f"classes {bad} out of range: the data has {len(self.label_names)} labels")
        return self.take(np.flatnonzero(np.isin(self.labels, classes)))

    def per_class(self, n: int, seed: int = 0) -> Dataset:
        """``n`` random images of every class (a few-label training set), drawn with ``seed``."""
        rng = np.random.default_rng(seed)
        picks = []
        for c in range(len(self.label_names)):
            where = np.flatnonzero(self.labels == c)
            if len(where) < n:
                raise ValueError(f"class {self.label_names[c]!r} has {len(where)} images, fewer than {n}")
            picks.append(rng.choice(where, n, replace=False))
        return self.take(np.sort(np.concatenate(picks)))


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped), the format MNIST and Fashion-MNIST ship in."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
        zero, dtype, ndim = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte idx file")
        shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
        arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
        return arr.reshape(shape)
    except (OSError, EOFError, struct.error, ValueError) as e:
        raise ValueError(f"{path}: cannot read idx file ({e})") from e


# Named slices of the Fashion-MNIST files: (file, first image, end). One rule for every number:
# shipped models train on "fit", everything fitted or chosen after training (gates, thresholds,
# checkpoint selection) uses "calib", and reports use "test", which nothing was fitted on.
FASHION_MNIST_SPLITS = {
    "train": ("train", 0, 60_000),
    "test": ("test", 0, 10_000),
    "fit": ("train", 0, 55_000),
    "calib": ("train", 55_000, 60_000),
    # for a model that trained on all 60,000 training images: half the test file calibrates
    "test-calib": ("test", 0, 5_000),
    "test-report": ("test", 5_000, 10_000),
}


def held_out_splits(train_config: dict | None) -> tuple[str, str]:
    """(calibration split, report split) of Fashion-MNIST for a model trained with ``train_config``.

    A model that never saw training images 55,000-59,999 calibrates on them and reports on the whole
    test file. A model trained on all 60,000 (such as the one shipped up to version 0.6.0) has no
    unseen training images, so test images 0-4,999 calibrate and 5,000-9,999 report.
    """
    cfg = train_config or {}
    fashion = cfg.get("data", "fashion-mnist") == "fashion-mnist"
    fit_only = fashion and (cfg.get("max_images") or 60_000) <= 55_000
    return ("calib", "test") if fit_only else ("test-calib", "test-report")


def split_range(split: str) -> tuple[str, int, int]:
    """(file, first image, end) of a named Fashion-MNIST split, e.g. to check two are disjoint."""
    return FASHION_MNIST_SPLITS[split]


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_DIR, split: str = "train") -> Dataset:
    """A Fashion-MNIST split of 28x28 grey images: one of :data:`FASHION_MNIST_SPLITS`.

    'train' (60,000) and 'test' (10,000) are the files; 'fit' (training images 0-54,999) and
    'calib' (training images 55,000-59,999) divide the training file.
    """
    if split not in FASHION_MNIST_SPLITS:
        raise ValueError(f"split must be one of {', '.join(FASHION_MNIST_SPLITS)}; got {split!r}")
    root = Path(root)
    file, first, end = FASHION_MNIST_SPLITS[split]
    stem = "train" if file == "train" else "t10k"
    paths = []
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        for name in (f"{stem}-{kind}.gz", f"{stem}-{kind}"):
            if (root / name).exists():
                paths.append(root / name)
                break
        else:
            raise ValueError(
                f"Fashion-MNIST {split} files not found in {root} "
                "(install Debian's dataset-fashion-mnist, or pass --data DIR)"
            )
    images, labels = _read_idx(paths[0]), _read_idx(paths[1])
    if len(images) != len(labels):
        raise ValueError(f"{root}: {len(images)} images but {len(labels)} labels")
    images, labels = images[first:end], labels[first:end]
    return Dataset(np.ascontiguousarray(images), labels.astype(np.int64), FASHION_MNIST_LABELS)


def read_image(path: Path, channels: int) -> np.ndarray:
    flag = cv2.IMREAD_GRAYSCALE if channels == 1 else cv2.IMREAD_COLOR
    image = cv2.imread(str(path), flag)
    if image is None:
        raise ValueError(f"{path}: cannot read image")
    return image


def load_image_folder(root: str | os.PathLike, prepare, channels: int) -> Dataset:
    """A folder with one subfolder per class (the subfolder name is the label)."""
    root = Path(root)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"{root}: no class subfolders found")
    images, labels = [], []
    for i, name in enumerate(classes):
        for f in sorted((root / name).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                images.append(prepare(read_image(f, channels)))
                labels.append(i)
    if not images:
        raise ValueError(f"{root}: no images in the class subfolders")
    return Dataset(np.stack(images), np.array(labels, dtype=np.int64), tuple(classes))


def parse_frame_range(text: str | None, n: int) -> slice:
    """ "A:B[:S]" -> frames A..B-1 (every S-th) of a clip of ``n``; numbers with a decimal point are
    fractions of the clip ("0:0.6" is the first 60%, "0.6:" the rest). None keeps every frame."""
    if text is None:
        return slice(0, n, 1)
    parts = text.split(":")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        step = int(parts[2]) if len(parts) == 3 and parts[2].strip() else 1
        a, b = (float(p) if p.strip() else None for p in parts[:2])
    except ValueError:
        raise ValueError(f"frame range must look like 0:480, 0:0.6, 0.6: or 0:0.6:2, got {text!r}") from None
    fraction = "." in ":".join(parts[:2])
    a = 0 if a is None else round(a * n) if fraction else int(a)
    b = n if b is None else round(b * n) if fraction else int(b)
    if a < 0 or b <= a or step < 1:
        raise ValueError(f"frame range {text!r} is empty")
    return slice(a, min(b, n), step)


def _frame_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)


def iter_frames(source: str | os.PathLike, channels: int) -> Iterator[np.ndarray]:
    """The frames of a video file, or the images of a frame folder (sorted by name), one by one."""
    source = Path(source)
    if source.is_dir():
        for f in _frame_files(source):
            yield read_image(f, channels)
        return
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise ValueError(f"{source}: cannot open video")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def read_frames(source: str | os.PathLike, channels: int) -> list[np.ndarray]:
    """Every frame in memory (short clips: the studies' vtest.avi is about 1 GB decoded)."""
    return list(iter_frames(source, channels))


def frame_count(source: str | os.PathLike) -> int:
    """Frames in a video (its header, else counted) or images in a frame folder."""
    source = Path(source)
    if source.is_dir():
        return len(_frame_files(source))
    cap = cv2.VideoCapture(str(source))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    cap.release()
    return n if n > 0 else sum(1 for _ in iter_frames(source, 3))


def load_frames(
    source: str | os.PathLike,
    tokenizer,
    channels: int,
    frames: str | None = None,
    tile: tuple[int, int] | None = None,
) -> Dataset:
    """Unlabeled frames from a video file or a folder of images (self-supervised training).

    ``frames`` keeps a range of them ("0:0.6": the first 60%); ``tile`` cuts each frame into the
    same ``rows x cols`` grid that ``pixlm run --grid`` streams, one training image per tile.
    Frames are decoded one at a time, so only the prepared images are held.
    """
    from pixlm.runtime.stream import grid_regions

    span = parse_frame_range(frames, frame_count(source) if frames else sys.maxsize)
    motion = _motion_of(source, tokenizer)
    images = []
    for i, frame in enumerate(iter_frames(source, channels)):
        if i >= span.stop:
            break
        if i < span.start or (i - span.start) % span.step:
            continue
        if motion is not None:  # the motion since the previous kept frame, as the stream sees it
            frame = motion[0].image("clip", frame, i / motion[1])
            if frame is None:
                continue
        if tile is None:
            images.append(tokenizer.prepare(frame))
            continue
        grey = tokenizer.match_channels(frame)  # as the runtime does: once per frame, then crops
        h, w = grey.shape[:2]
        images += [tokenizer.prepare(r.crop(grey)) for r in grid_regions(w, h, *tile)]
    if not images:
        raise ValueError(f"{source}: no frames read" + (f" in range {frames}" if frames else ""))
    return Dataset(np.stack(images), np.full(len(images), -1, dtype=np.int64), ())


def _motion_of(source: str | os.PathLike, tokenizer) -> tuple[Motion, float] | None:
    """A motion tokenizer's state and the clip's frame rate (None for a pixel tokenizer)."""
    if tokenizer.config.motion is None:
        return None
    fps = cv2.VideoCapture(str(source)).get(cv2.CAP_PROP_FPS) if Path(source).is_file() else 0.0
    if not fps:
        raise ValueError(f"{source}: motion needs a video file with a frame rate (seconds between frames)")
    return Motion(tokenizer.config.motion), fps


def load_source(
    source: str,
    split: str,
    tokenizer,
    channels: int,
    frames: str | None = None,
    tile: tuple[int, int] | None = None,
) -> Dataset:
    """Dispatch on what ``source`` is: 'fashion-mnist', an idx folder, a class folder, a video.

    ``frames`` and ``tile`` apply to videos and frame folders only (see :func:`load_frames`).
    """
    if source == "fashion-mnist":
        return load_fashion_mnist(FASHION_MNIST_DIR, split)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{source}: no such dataset, folder or file")
    if path.is_dir() and any(path.glob("*-images-idx3-ubyte*")):
        return load_fashion_mnist(path, split)
    if path.is_dir() and any(d.is_dir() for d in path.iterdir()):
        return load_image_folder(path, tokenizer.prepare, channels)
    if path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES:
        return load_frames(path, tokenizer, channels, frames, tile)
    raise ValueError(f"{source}: not a dataset folder, class folder, frame folder or video")


def shift_batch(images: np.ndarray, max_shift: int, rng: np.random.Generator) -> np.ndarray:
    """Random translation by up to ``max_shift`` pixels per image, edges replicated."""
    if max_shift <= 0:
        return images
    b, h, w = images.shape[:3]
    pad = [(0, 0), (max_shift, max_shift), (max_shift, max_shift)] + [(0, 0)] * (images.ndim - 3)
    padded = np.pad(images, pad, mode="edge")
    dy = rng.integers(0, 2 * max_shift + 1, b)
    dx = rng.integers(0, 2 * max_shift + 1, b)
    out = np.empty_like(images)
    for i in range(b):
        out[i] = padded[i, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
    return out
