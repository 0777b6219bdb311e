"""Open set: is an input like what the model learned, or "unknown"? numpy + OpenCV only.

Raw likelihood alone is a poor judge: a pixel model gives simple images (a blank wall, a
hand-written digit) a *higher* likelihood than its own training data (Nalisnick et al. 2019), and
a busy street crop is not much less likely than a patterned shirt. Subtracting the image's length
under a lossless compressor (PNG: Serrà et al. 2020) fixes the simple images but ranks busy ones
as the most typical of all. So the gate asks one question of five numbers the model's own forward
pass (plus a PNG encode) gives for every image, and calls typical what lies close to where the
held-out in-distribution images lie::

    tokens, next-token log-probs, label probs
        -> features: bits per pixel, PNG bits per pixel of the tokens' image, log(1 - top label
           probability), the largest and the spread of the per-token surprises (bits)
        -> Mahalanobis distance to the held-out images' mean (their covariance)
        -> "unknown" when above the threshold that accepts ``accept`` of other held-out images

The exporter fits the gate per model file on held-out images (one half for the mean and
covariance, the other half for the threshold) and stores it in the bundle manifest ("ood").
:meth:`OODGate.from_dict` refuses values that would switch it off unseen: an inverse covariance
that is not symmetric positive-definite (``-I`` or zeros call everything known), a threshold that
is not finite or above ``MAX_THRESHOLD``.
``pixlm study ood`` measures it against raw likelihood, the PNG-corrected score and the label
confidence, on digits, street crops, noise and constant images.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FEATURES = ("bits_per_pixel", "png_bits_per_pixel", "log_label_doubt", "max_token_bits", "std_token_bits")
GATE_KIND = "mahalanobis-v1"  # manifest "ood.<file>.kind": the recipe above
# The largest threshold a manifest may hold. Scores are squared distances in standard deviations of
# the held-out images: their mean is F = 5 by construction, and fitted thresholds lie in the tens.
# 1e4 is 100 standard deviations in every direction at once: a gate that lets everything through.
MAX_THRESHOLD = 1e4
MIN_IMAGES = 20  # OODGate.fit's least number of held-out images


def png_bits_per_pixel(images: np.ndarray) -> np.ndarray:
    """(B, H, W[, C]) uint8 -> (B,) length of each image as a PNG (level 9), in bits per pixel."""
    out = np.empty(len(images), dtype=np.float64)
    for i, im in enumerate(images):
        ok, buf = cv2.imencode(".png", im, [cv2.IMWRITE_PNG_COMPRESSION, 9])
        if not ok:
            raise ValueError("PNG encoding failed")
        out[i] = 8.0 * len(buf) / (im.shape[0] * im.shape[1])
    return out


def features(
    token_bits: np.ndarray, label_probs: np.ndarray, png_bpp: np.ndarray, pixels_per_token: int
) -> np.ndarray:
    """The gate's inputs, (B, 5) in ``FEATURES`` order.

    ``token_bits`` (B, N): each image token's NLL in bits; ``label_probs`` (B, L); ``png_bpp``
    (B,) from :func:`png_bits_per_pixel` on the images the tokens decode to.
    """
    top = label_probs.max(1) if label_probs.shape[1] else np.zeros(len(token_bits))
    return np.stack(
        [
            token_bits.mean(1) / pixels_per_token,
            png_bpp,
            np.log(np.clip(1.0 - top, 1e-6, None)),
            token_bits.max(1),
            token_bits.std(1),
        ],
        axis=1,
    ).astype(np.float64)


@dataclass
class OODGate:
    """A fitted gate: mean and inverse covariance of ``FEATURES``, and the score threshold."""

    mean: np.ndarray  # (F,): F = 5, the FEATURES, in a bundle (studies also fit other features)
    inv_cov: np.ndarray  # (F, F)
    threshold: float  # scores above it are "unknown"
    accept: float  # share of held-out in-distribution images the threshold accepts
    images: int  # held-out images it was fitted on

    def score(self, feats: np.ndarray) -> np.ndarray:
        """(B, F) features -> (B,) squared Mahalanobis distance: 0 = typical, larger = stranger."""
        d = np.asarray(feats, dtype=np.float64) - self.mean
        return np.einsum("bi,ij,bj->b", d, self.inv_cov, d)

    def known(self, feats: np.ndarray) -> np.ndarray:
        return self.score(feats) <= self.threshold

    @classmethod
    def fit(cls, feats: np.ndarray, accept: float = 0.95) -> OODGate:
        """Mean and covariance from the even rows, threshold from the odd rows (held out from the
        fit, so the accepted share is what new in-distribution images will see)."""
        feats = np.asarray(feats, dtype=np.float64)
        if feats.ndim != 2 or len(feats) < 20:
            raise ValueError(f"need at least 20 rows of features, got shape {feats.shape}")
        if not 0 < accept < 1:
            raise ValueError(f"accept must be within (0, 1), got {accept}")
        fit_rows, calib_rows = feats[0::2], feats[1::2]
        mean = fit_rows.mean(0)
        cov = np.atleast_2d(np.cov(fit_rows.T)) + 1e-9 * np.eye(feats.shape[1])
        inv_cov = np.linalg.pinv(cov)
        gate = cls(mean, (inv_cov + inv_cov.T) / 2, 0.0, accept, len(feats))  # symmetric to rounding
        gate.threshold = float(np.quantile(gate.score(calib_rows), accept))
        return gate

    def to_dict(self) -> dict:
        return {
            "kind": GATE_KIND,
            "features": list(FEATURES),
            "mean": self.mean.tolist(),
            "inv_cov": self.inv_cov.tolist(),
            "threshold": self.threshold,
            "accept": self.accept,
            "images": self.images,
        }

    @classmethod
    def from_dict(cls, d: object) -> OODGate:
        """Parse a manifest entry; ``ValueError`` naming what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("not an object")
        if d.get("kind") != GATE_KIND or d.get("features") != list(FEATURES):
            raise ValueError(f"kind {d.get('kind')!r}, features {d.get('features')}: expected {GATE_KIND}")
        n = len(FEATURES)
        try:
            mean = np.asarray(d["mean"], dtype=np.float64)
            inv_cov = np.asarray(d["inv_cov"], dtype=np.float64)
            threshold, accept = float(d["threshold"]), float(d["accept"])
            images = d["images"]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"missing or non-numeric field ({e})") from None
        if mean.shape != (n,) or inv_cov.shape != (n, n):
            raise ValueError(f"mean {mean.shape} / inv_cov {inv_cov.shape}: expected ({n},) / ({n}, {n})")
        if not np.isfinite(mean).all():
            raise ValueError("mean: non-finite numbers")
        check_inv_cov(inv_cov)
        if not (np.isfinite(threshold) and 0 < threshold <= MAX_THRESHOLD):
            raise ValueError(
                f"threshold {threshold:g} must lie in (0, {MAX_THRESHOLD:g}]: a larger one would call "
                "nearly every input known"
            )
        if not 0 < accept < 1:
            raise ValueError(f"accept {accept:g} must lie within (0, 1)")
        if not isinstance(images, int) or isinstance(images, bool) or images < MIN_IMAGES:
            raise ValueError(f"images {images!r} must be an integer >= {MIN_IMAGES}")
        return cls(mean, inv_cov, threshold, accept, images)


def check_inv_cov(inv_cov: np.ndarray) -> None:
    """An inverse covariance must be finite, symmetric and positive-definite; ``ValueError`` naming
    what is wrong. One that is not (all zeros, ``-I``) scores some or every input at or below 0:
    "known" whatever it is."""
    if not np.isfinite(inv_cov).all():
        raise ValueError("inv_cov: non-finite numbers")
    scale = float(np.abs(inv_cov).max())
    if np.abs(inv_cov - inv_cov.T).max() > 1e-6 * scale:
        raise ValueError("inv_cov is not symmetric")
    smallest = float(np.linalg.eigvalsh(inv_cov).min()) if scale > 0 else 0.0
    if smallest <= 1e-12 * scale:
        raise ValueError(
            f"inv_cov is not positive-definite (smallest eigenvalue {smallest:.3g}): some inputs would "
            "score 0 or below and always be 'known'"
        )
