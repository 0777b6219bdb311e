"""Training data: Fashion-MNIST idx files, class folders, and unlabeled video or frame folders.

Every loader returns a :class:`Dataset` of uint8 images already prepared to the tokenizer's
``height x width`` (so augmentation and tokenizing work on whole batches) plus integer labels
(-1 for unlabeled frames) and the label names.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

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


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_DIR, split: str = "train") -> Dataset:
    """Fashion-MNIST 'train' (60,000) or 'test' (10,000) split: 28x28 grey images."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    stem = "train" if split == "train" else "t10k"
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


def load_frames(
    source: str | os.PathLike, prepare, channels: int, stride: int = 1, max_frames: int | None = None
) -> Dataset:
    """Unlabeled frames from a video file or a folder of images (self-supervised training)."""
    source = Path(source)
    frames = []
    if source.is_dir():
        files = sorted(f for f in source.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        for f in files[::stride][:max_frames]:
            frames.append(prepare(read_image(f, channels)))
    else:
        cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            raise ValueError(f"{source}: cannot open video")
        i = 0
        while max_frames is None or len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if i % stride == 0:
                frames.append(prepare(frame))
            i += 1
        cap.release()
    if not frames:
        raise ValueError(f"{source}: no frames read")
    return Dataset(np.stack(frames), np.full(len(frames), -1, dtype=np.int64), ())


def load_source(source: str, split: str, prepare, channels: int, max_frames: int | None = None) -> Dataset:
    """Dispatch on what ``source`` is: 'fashion-mnist', an idx folder, a class folder, a video."""
    if source == "fashion-mnist":
        return load_fashion_mnist(FASHION_MNIST_DIR, split)
    path = Path(source)
    if not path.exists():
        raise ValueError(f"{source}: no such dataset, folder or file")
    if path.is_dir() and any(path.glob("*-images-idx3-ubyte*")):
        return load_fashion_mnist(path, split)
    if path.is_dir() and any(d.is_dir() for d in path.iterdir()):
        return load_image_folder(path, prepare, channels)
    if path.is_dir() or path.suffix.lower() in VIDEO_SUFFIXES:
        return load_frames(path, prepare, channels, max_frames=max_frames)
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
