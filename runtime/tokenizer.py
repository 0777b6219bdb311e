"""Pixel tokenizer: image -> token ids and back, in numpy alone.

Training (sdk/) and deployment (runtime/) both call :meth:`Tokenizer.encode`, so the tokens a
model was trained on and the tokens it sees on the camera box are bit-identical.

An image becomes a sequence the way Image GPT reads one:

1. ``prepare``: resize to ``height x width`` pixels under a policy: ``stretch``, ``crop``
   (centre) or ``letterbox`` (pad with black), then match the model's channels (colour frames
   become grey for a grey model).
2. Cut the image into ``patch x patch`` cells (``patch=1``: one token per pixel, as Image GPT).
3. Map each cell to the nearest palette entry (squared distance, computed exactly in integers so
   every machine picks the same entry), raster order, row by row.

The vocabulary, shared with the model::

    0 .. K-1        palette codes (K = len(palette))
    K               BOS, the first token of every sequence
    K+1 .. K+L      one token per label, predicted as the "next word" after the image

Fast paths: a grey per-pixel palette is a 256-entry lookup table (exact). Colours and patch codes
use exact nearest-entry search as one small BLAS matrix product; a 64^3 colour lookup table was
measured to agree with exact search on only 74% of pixels of real video, so it was dropped. Large
frames are shrunk by ``sampling="fast"`` (see ``_stretch``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from pixlm.runtime import blas

RESIZE_POLICIES = ("stretch", "crop", "letterbox")
SAMPLINGS = ("fast", "area")
_FAST_SAMPLES = 8  # "fast": bilinear samples on an 8x8 grid per output pixel, then averaged


@dataclass(frozen=True)
class TokenizerConfig:
    """What the tokenizer needs to know; stored in checkpoints and bundle manifests."""

    height: int = 28  # image rows after resizing, in pixels
    width: int = 28  # image columns after resizing, in pixels
    channels: int = 1  # 1 = grey, 3 = colour (BGR, OpenCV's order)
    patch: int = 2  # cell side in pixels: 1 = one token per pixel (Image GPT)
    resize: str = "stretch"  # how frames of another shape reach height x width
    sampling: str = "fast"  # "area": exact INTER_AREA; "fast": 8x finer bilinear grid first
    palette: list[list[int]] = field(default_factory=list)  # K entries of patch*patch*channels
    motion: dict | None = None  # a motion model's MotionConfig (pixlm.runtime.motion); None: pixels

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TokenizerConfig:
        d = dict(d)
        d["palette"] = [list(map(int, row)) for row in d.get("palette", [])]
        return cls(**d)


class Tokenizer:
    """Turns uint8 images into token ids (``encode``) and token ids into images (``decode``)."""

    def __init__(self, config: TokenizerConfig, labels: list[str] | tuple[str, ...] = ()):
        if config.resize not in RESIZE_POLICIES:
            raise ValueError(f"resize policy must be one of {RESIZE_POLICIES}, got {config.resize!r}")
        if config.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {config.sampling!r}")
        if config.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {config.channels}")
        if config.patch < 1 or config.height % config.patch or config.width % config.patch:
            raise ValueError(f"patch {config.patch} must divide {config.height}x{config.width}")
        palette = np.asarray(config.palette, dtype=np.int32)
        cell = config.patch * config.patch * config.channels
        if palette.ndim != 2 or palette.shape[1] != cell or len(palette) < 2:
            raise ValueError(f"palette must be (K>=2, {cell}) values, got shape {palette.shape}")
        if palette.min() < 0 or palette.max() > 255:
            raise ValueError("palette values must lie in 0..255")
        self.config = config
        self.labels = tuple(labels)
        self.palette = palette  # (K, cell) int32
        # Distances in floating point are exact while every integer stays below 2^24 (float32)
        # or 2^53 (float64): BLAS speed, and the same answer on every machine.
        self._dtype = np.float32 if cell * 255 * 255 < 2**24 else np.float64
        self._palette_f = palette.astype(self._dtype)  # (K, cell)
        self._palette_sq = (palette * palette).sum(1).astype(self._dtype)  # (K,)
        self._lut = self._build_lut()

    # -- vocabulary ---------------------------------------------------------------------------
    @property
    def n_codes(self) -> int:
        return len(self.palette)

    @property
    def kind(self) -> str:
        """What the tokens are cut from: "pixels" (frames) or "motion" (motion images)."""
        return "motion" if self.config.motion else "pixels"

    @property
    def bos(self) -> int:
        return self.n_codes

    @property
    def vocab_size(self) -> int:
        return self.n_codes + 1 + len(self.labels)

    def label_token(self, index: int) -> int:
        return self.n_codes + 1 + index

    @property
    def grid(self) -> tuple[int, int]:
        """Token rows and columns."""
        return self.config.height // self.config.patch, self.config.width // self.config.patch

    @property
    def n_tokens(self) -> int:
        rows, cols = self.grid
        return rows * cols

    # -- image -> tokens ----------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> np.ndarray:
        """Check a frame, match channels, and resize it to ``height x width`` (uint8)."""
        image = _check_image(image)
        c = self.config
        if c.channels == 3 and (image.ndim == 2 or image.shape[2] == 1):
            raise ValueError("grey image given to a colour (3-channel) tokenizer")
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        image = resize(image, c.height, c.width, c.resize, c.sampling)  # shrink first: cheaper
        return self.match_channels(image)

    def match_channels(self, image: np.ndarray) -> np.ndarray:
        """A colour frame becomes grey for a grey model (BGR -> grey, OpenCV's weights).

        ``pixlm run`` calls this once per frame before cutting regions, which costs one
        conversion instead of one per region (tokens then agree with per-region conversion on
        about 99% of cells: rounding happens before instead of after the resize).
        """
        if self.config.channels == 1 and image.ndim == 3:
            return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return image

    def encode(self, image: np.ndarray) -> np.ndarray:
        """One image (H, W) or (H, W, C) uint8 -> token ids (n_tokens,) int64, raster order."""
        return self.encode_prepared(self.prepare(image)[None])[0]

    def encode_batch(self, images: list[np.ndarray] | np.ndarray) -> np.ndarray:
        """Several images of any sizes -> (B, n_tokens) int64."""
        if len(images) == 0:
            raise ValueError("empty batch: no images to tokenize")
        return self.encode_prepared(np.stack([self.prepare(im) for im in images]))

    def encode_prepared(self, images: np.ndarray) -> np.ndarray:
        """(B, height, width[, channels]) uint8 already prepared -> (B, n_tokens) int64.

        Training calls this on whole batches after augmentation; ``encode`` ends here too.
        """
        c = self.config
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        b = images.shape[0]
        if self._lut is not None:  # grey, one token per pixel: a 256-entry table
            return self._lut[images].reshape(b, -1).astype(np.int64)
        cells = _to_cells(images.reshape(b, c.height, c.width, c.channels), c.patch)
        return self._nearest(cells.reshape(-1, cells.shape[-1])).reshape(b, -1)

    def _nearest(self, cells: np.ndarray) -> np.ndarray:
        """Exact nearest palette entry of each row of ``cells`` (M, cell) -> (M,) int64."""
        x = cells.astype(self._dtype)
        # |x - p|^2 = |x|^2 - 2 x.p + |p|^2; |x|^2 is the same for every p, so drop it.
        # All values are exact integers: every machine finds the same minimum (first on ties).
        with blas.one_thread():  # OpenBLAS's spinning workers would halve the engine's next call
            scores = self._palette_sq[None, :] - 2 * (x @ self._palette_f.T)
        return scores.argmin(1).astype(np.int64)

    def _build_lut(self) -> np.ndarray | None:
        """Nearest entry for each grey level 0..255, exact (None for colour or patches)."""
        if self.config.patch != 1 or self.config.channels != 1:
            return None
        return self._nearest(np.arange(256, dtype=np.int32)[:, None]).astype(np.uint16)

    # -- tokens -> image ----------------------------------------------------------------------
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids (n_tokens,) -> image (height, width[, 3]) uint8 made of palette entries."""
        tokens = np.asarray(tokens)
        if tokens.shape != (self.n_tokens,):
            raise ValueError(f"expected {self.n_tokens} tokens, got shape {tokens.shape}")
        if tokens.min() < 0 or tokens.max() >= self.n_codes:
            raise ValueError(f"token ids must be palette codes 0..{self.n_codes - 1}")
        c = self.config
        rows, cols = self.grid
        cells = self.palette[tokens].reshape(rows, cols, c.patch, c.patch, c.channels)
        image = cells.transpose(0, 2, 1, 3, 4).reshape(c.height, c.width, c.channels)
        image = image.astype(np.uint8)
        return image[..., 0] if c.channels == 1 else image

    def token_map_to_image(self, values: np.ndarray, height: int, width: int) -> np.ndarray:
        """Project a per-token map (n_tokens,) back onto a ``height x width`` frame (float32)."""
        rows, cols = self.grid
        grid = np.asarray(values, dtype=np.float32).reshape(rows, cols)
        return cv2.resize(grid, (width, height), interpolation=cv2.INTER_NEAREST)


# -- free functions ---------------------------------------------------------------------------
def _check_image(image: object) -> np.ndarray:
    if image is None:
        raise ValueError("image is None (empty frame)")
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] not in (1, 3):
        raise ValueError(f"image must have 1 or 3 channels, got {image.shape[2]}")
    if image.size == 0 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty (shape {image.shape})")
    return image


def resize(
    image: np.ndarray, height: int, width: int, policy: str = "stretch", sampling: str = "area"
) -> np.ndarray:
    """Resize to exactly ``height x width`` under ``policy`` (stretch, crop, letterbox)."""
    h, w = image.shape[:2]
    if policy == "crop":  # centre region with the target's aspect ratio
        scale = max(height / h, width / w)
        ch, cw = min(h, round(height / scale)), min(w, round(width / scale))
        y, x = (h - ch) // 2, (w - cw) // 2
        return _stretch(image[y : y + ch, x : x + cw], height, width, sampling)
    if policy == "letterbox":  # whole frame, black bars
        scale = min(height / h, width / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        out = np.zeros((height, width) + image.shape[2:], dtype=np.uint8)
        y, x = (height - nh) // 2, (width - nw) // 2
        out[y : y + nh, x : x + nw] = _stretch(image, nh, nw, sampling)
        return out
    return _stretch(image, height, width, sampling)


def _stretch(image: np.ndarray, height: int, width: int, sampling: str) -> np.ndarray:
    """INTER_AREA to ``height x width``; "fast" first samples big frames on an 8x finer grid.

    INTER_AREA over a 1280x720 frame reads every pixel (about 3 ms); bilinear sampling onto a
    grid 8x finer than the target, then INTER_AREA, costs about 0.4 ms and stays within half a
    grey level of it on average on real video (docs/training.md, "Tokenizer").
    """
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
    th, tw = _FAST_SAMPLES * height, _FAST_SAMPLES * width
    if sampling == "fast" and image.shape[0] > th and image.shape[1] > tw:
        image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
    out = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return out.reshape((height, width) + image.shape[2:])


def _to_cells(images: np.ndarray, patch: int) -> np.ndarray:
    """(B, H, W, C) -> (B, H/p * W/p, p*p*C), cells in raster order, pixels row-major inside."""
    b, h, w, c = images.shape
    x = images.reshape(b, h // patch, patch, w // patch, patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


def cells_of(images: np.ndarray, patch: int) -> np.ndarray:
    """Public view of the cell cut used by ``encode``; palette fitting reads the same cells."""
    if images.ndim == 3:
        images = images[..., None]
    return _to_cells(images, patch)
