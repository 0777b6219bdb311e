"""Pixel tokenizer: image -> token ids and back, in numpy alone.

Training (sdk/) and deployment (runtime/) both call :meth:`Tokenizer.encode`, so the tokens a
model was trained on and the tokens it sees on the camera box are bit-identical.

An image becomes a sequence the way Image GPT reads one:

1. ``prepare``: convert to the model's channels (colour frames become grey for a grey model) and
   resize to ``height x width`` pixels under a policy: ``stretch``, ``crop`` (centre) or
   ``letterbox`` (pad with black).
2. Cut the image into ``patch x patch`` cells (``patch=1``: one token per pixel, as Image GPT).
3. Map each cell to the nearest palette entry (squared distance, computed exactly in integers so
   every machine picks the same entry), raster order, row by row.

The vocabulary, shared with the model::

    0 .. K-1        palette codes (K = len(palette))
    K               BOS, the first token of every sequence
    K+1 .. K+L      one token per label, predicted as the "next word" after the image

Fast paths: a grey per-pixel palette is a 256-entry lookup table (exact); a colour per-pixel
palette uses a 64^3 lookup table of the nearest entry to each cell centre (agreement with exact
search is measured in ``benchmarks/``); patch codes use exact integer search over the palette.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

RESIZE_POLICIES = ("stretch", "crop", "letterbox")
_COLOUR_LUT_BITS = 6  # 64 levels per channel -> 262,144-entry table, 512 KiB


@dataclass(frozen=True)
class TokenizerConfig:
    """What the tokenizer needs to know; stored in checkpoints and bundle manifests."""

    height: int = 28  # image rows after resizing, in pixels
    width: int = 28  # image columns after resizing, in pixels
    channels: int = 1  # 1 = grey, 3 = colour (BGR, OpenCV's order)
    patch: int = 2  # cell side in pixels: 1 = one token per pixel (Image GPT)
    resize: str = "stretch"  # how frames of another shape reach height x width
    palette: list[list[int]] = field(default_factory=list)  # K entries of patch*patch*channels

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
        self._palette_sq = (palette * palette).sum(1)  # (K,)
        self._lut = self._build_lut()

    # -- vocabulary ---------------------------------------------------------------------------
    @property
    def n_codes(self) -> int:
        return len(self.palette)

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
        if c.channels == 1 and image.ndim == 3:
            image = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        elif c.channels == 3 and (image.ndim == 2 or image.shape[2] == 1):
            raise ValueError("grey image given to a colour (3-channel) tokenizer")
        return resize(image, c.height, c.width, c.resize)

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
        if self._lut is not None:
            if c.channels == 1:
                codes = self._lut[images]
            else:
                s = 8 - _COLOUR_LUT_BITS
                idx = images >> s
                flat = (idx[..., 0].astype(np.int32) << 2 * _COLOUR_LUT_BITS) | (
                    idx[..., 1].astype(np.int32) << _COLOUR_LUT_BITS
                )
                codes = self._lut[flat | idx[..., 2]]
            return codes.reshape(b, -1).astype(np.int64)
        cells = _to_cells(images.reshape(b, c.height, c.width, c.channels), c.patch)
        return self._nearest(cells.reshape(-1, cells.shape[-1])).reshape(b, -1)

    def _nearest(self, cells: np.ndarray) -> np.ndarray:
        """Exact nearest palette entry of each row of ``cells`` (M, cell) -> (M,) int64."""
        x = cells.astype(np.int32)
        # |x - p|^2 = |x|^2 - 2 x.p + |p|^2; |x|^2 is the same for every p, so drop it.
        # Integers throughout: every machine finds the same minimum (first on ties).
        scores = self._palette_sq[None, :] - 2 * (x @ self.palette.T)
        return scores.argmin(1).astype(np.int64)

    def _build_lut(self) -> np.ndarray | None:
        c = self.config
        if c.patch != 1:
            return None
        if c.channels == 1:
            return self._nearest(np.arange(256, dtype=np.int32)[:, None]).astype(np.uint16)
        n = 1 << _COLOUR_LUT_BITS
        centre = (np.arange(n, dtype=np.int32) << (8 - _COLOUR_LUT_BITS)) + (1 << (7 - _COLOUR_LUT_BITS))
        grid = np.stack(np.meshgrid(centre, centre, centre, indexing="ij"), -1).reshape(-1, 3)
        return np.concatenate([self._nearest(chunk) for chunk in np.array_split(grid, 64)]).astype(np.uint16)

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


def resize(image: np.ndarray, height: int, width: int, policy: str = "stretch") -> np.ndarray:
    """Resize to exactly ``height x width`` with INTER_AREA (anti-aliased) under ``policy``."""
    h, w = image.shape[:2]
    if policy == "crop":
        scale = max(height / h, width / w)
        ch, cw = min(h, round(height / scale)), min(w, round(width / scale))
        y, x = (h - ch) // 2, (w - cw) // 2
        image = image[y : y + ch, x : x + cw]
    elif policy == "letterbox":
        scale = min(height / h, width / w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        inner = resize(image, nh, nw, "stretch")
        out = np.zeros((height, width) + image.shape[2:], dtype=np.uint8)
        y, x = (height - nh) // 2, (width - nw) // 2
        out[y : y + nh, x : x + nw] = inner
        return out
    if image.shape[:2] == (height, width):
        return np.ascontiguousarray(image)
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
