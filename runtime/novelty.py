"""Open set: is an input like what the model learned, or "unknown"? numpy + OpenCV only.

Raw likelihood alone is a poor judge: a pixel model gives simple images (a blank wall, a
hand-written digit) a *higher* likelihood than its own training data (Nalisnick et al. 2019), and
a busy street crop is not much less likely than a patterned shirt. Subtracting the image's length
under a lossless compressor (PNG: Serrà et al. 2020) fixes the simple images but ranks busy ones
as the most typical of all. So the gate asks two questions of what the model's own forward pass
(plus a PNG encode) gives for every image, and calls typical what lies close to where held-out
in-distribution images lie::

    tokens, next-token log-probs, the logits after the last image token
        -> summary: bits per pixel, PNG bits per pixel of the tokens' image, log(1 - top label
           probability), the largest and the spread of the per-token surprises (bits)
           -> Mahalanobis distance to the held-out images' mean (their covariance)
        -> head: the logits after the last image token (every token of the vocabulary, a linear
           image of the model's last hidden state) -> Mahalanobis distance to the nearest class
           mean, one covariance shared by the classes (Lee et al. 2018); classes are the labels
           the model gives, so fitting needs no labels
        -> score: the two distances, each standardised on held-out images, added
        -> "unknown" when above the threshold that accepts ``accept`` of other held-out images

The head distance sees what the summary cannot: a glyph or a garment upside down has ordinary
bits per pixel but a last hidden state unlike any class. Chosen with ``pixlm study ood`` on its
design sets only (digits, street crops and tiles, noise, constant images); its report sets
(Hershey glyphs, Fashion-MNIST upside down and inverted) judge it. A gate without a head (kind
``mahalanobis-v1``, bundles before version 0.7.0, and the one-class study) is the summary alone.

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

from pixlm.runtime import blas

FEATURES = ("bits_per_pixel", "png_bits_per_pixel", "log_label_doubt", "max_token_bits", "std_token_bits")
GATE_KIND = "mahalanobis-v2"  # manifest "ood.<file>.kind": summary + head, the recipe above
SUMMARY_ONLY = "mahalanobis-v1"  # the summary distance alone (still loaded)
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
class GateInputs:
    """What the gate reads of a batch of images (see :func:`gate_inputs`)."""

    summary: np.ndarray  # (B, 5): FEATURES
    head: np.ndarray | None = None  # (B, V): the logits after the last image token
    classes: np.ndarray | None = None  # (B,): the label each image was given, for fitting the head

    def rows(self, which: slice) -> GateInputs:
        pick = lambda a: None if a is None else a[which]  # noqa: E731
        return GateInputs(self.summary[which], pick(self.head), pick(self.classes))


def gate_inputs(
    token_bits: np.ndarray, head: np.ndarray, n_codes: int, png_bpp: np.ndarray, pixels_per_token: int
) -> GateInputs:
    """The gate's inputs from the engine's outputs: per-token bits (B, N), the logits after the last
    image token (B, V: codes, BOS, labels), PNG bits per pixel (B,)."""
    head = np.asarray(head, dtype=np.float64)
    labels = head[:, n_codes + 1 :]
    probs = np.exp(labels - labels.max(1, keepdims=True)) if labels.shape[1] else labels
    probs = probs / probs.sum(1, keepdims=True) if labels.shape[1] else probs
    classes = labels.argmax(1) if labels.shape[1] else np.zeros(len(head), np.int64)
    return GateInputs(features(token_bits, probs, png_bpp, pixels_per_token), head, classes)


@dataclass
class HeadDistance:
    """Squared Mahalanobis distance of head logits to the nearest class mean, one shared covariance:
    ``min_c |x @ project - means[c]|^2``, ``project`` whitening the within-class covariance."""

    project: np.ndarray  # (V, r): r = the rank of the logits (at most the model width)
    means: np.ndarray  # (K, r): class means, whitened

    def score(self, head: np.ndarray) -> np.ndarray:
        with blas.one_thread():  # a batch's product is big enough to wake OpenBLAS's workers
            z = np.asarray(head, dtype=np.float64) @ self.project
            d = (z * z).sum(1)[:, None] - 2 * z @ self.means.T + (self.means * self.means).sum(1)[None]
        return np.maximum(d.min(1), 0.0)

    @classmethod
    def fit(cls, head: np.ndarray, classes: np.ndarray, shrink: float = 1e-3) -> HeadDistance:
        head = np.asarray(head, dtype=np.float64)
        kinds = np.unique(classes)
        means = np.stack([head[classes == c].mean(0) for c in kinds])
        resid = head - means[np.searchsorted(kinds, classes)]
        w, v = np.linalg.eigh(np.cov(resid.T))
        keep = w > 1e-6 * w.max()  # the logits span the model width, not the vocabulary
        w, v = w[keep], v[:, keep]
        project = v / np.sqrt(w + shrink * w.mean())  # a little shrinkage: few rows, many directions
        return cls(project, means @ project)

    def to_dict(self) -> dict:
        return {"project": _rounded(self.project), "means": _rounded(self.means)}

    @classmethod
    def from_dict(cls, d: object, vocab: int | None = None) -> HeadDistance:
        if not isinstance(d, dict):
            raise ValueError("head: not an object")
        try:
            project = np.asarray(d["project"], dtype=np.float64)
            means = np.asarray(d["means"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"head: missing or non-numeric field ({e})") from None
        if project.ndim != 2 or means.ndim != 2 or means.shape[1] != project.shape[1] or not len(means):
            raise ValueError(f"head: project {project.shape} / means {means.shape} do not fit together")
        if vocab is not None and project.shape[0] != vocab:
            raise ValueError(f"head: project has {project.shape[0]} rows, the model {vocab} logits")
        if not (np.isfinite(project).all() and np.isfinite(means).all()):
            raise ValueError("head: non-finite numbers")
        if np.linalg.matrix_rank(project) < project.shape[1]:
            raise ValueError("head: project is rank-deficient: some directions would count for nothing")
        return cls(project, means)


@dataclass
class OODGate:
    """A fitted gate: the summary distance (mean and inverse covariance of ``FEATURES``), the head
    distance, how each is standardised, and the score threshold."""

    mean: np.ndarray  # (F,): F = 5, the FEATURES, in a bundle (studies also fit other features)
    inv_cov: np.ndarray  # (F, F)
    threshold: float  # scores above it are "unknown"
    accept: float  # share of held-out in-distribution images the threshold accepts
    images: int  # held-out images it was fitted on
    head: HeadDistance | None = None  # None: the summary distance alone
    scale: np.ndarray | None = None  # (2, 2): mean and sd of the summary and the head distance

    def score(self, inputs: GateInputs | np.ndarray) -> np.ndarray:
        """Inputs (or (B, F) summary features) -> (B,) score: 0 or so = typical, larger = stranger."""
        inputs = inputs if isinstance(inputs, GateInputs) else GateInputs(np.asarray(inputs))
        summary = self.summary_distance(inputs.summary)
        if self.head is None:
            return summary
        if inputs.head is None:
            raise ValueError("this gate also reads the head logits; none were given")
        (m0, s0), (m1, s1) = self.scale
        return (summary - m0) / s0 + (self.head.score(inputs.head) - m1) / s1

    def summary_distance(self, feats: np.ndarray) -> np.ndarray:
        """(B, F) summary features -> (B,) squared Mahalanobis distance to the held-out mean."""
        d = np.asarray(feats, dtype=np.float64) - self.mean
        return np.einsum("bi,ij,bj->b", d, self.inv_cov, d)

    def known(self, inputs: GateInputs | np.ndarray) -> np.ndarray:
        return self.score(inputs) <= self.threshold

    @classmethod
    def fit(cls, inputs: GateInputs | np.ndarray, accept: float = 0.95) -> OODGate:
        """Means, covariances and scales from the even rows, threshold from the odd rows (held out
        from the fit, so the accepted share is what new in-distribution images will see). With
        head logits in ``inputs``, the gate reads both distances; without, the summary alone."""
        inputs = inputs if isinstance(inputs, GateInputs) else GateInputs(np.asarray(inputs))
        feats = np.asarray(inputs.summary, dtype=np.float64)
        if feats.ndim != 2 or len(feats) < MIN_IMAGES:
            raise ValueError(f"need at least {MIN_IMAGES} rows of features, got shape {feats.shape}")
        if not 0 < accept < 1:
            raise ValueError(f"accept must be within (0, 1), got {accept}")
        fit_rows = inputs.rows(slice(0, None, 2))
        mean = fit_rows.summary.mean(0)
        cov = np.atleast_2d(np.cov(fit_rows.summary.T)) + 1e-9 * np.eye(feats.shape[1])
        inv_cov = np.linalg.pinv(cov)
        gate = cls(mean, (inv_cov + inv_cov.T) / 2, 0.0, accept, len(feats))  # symmetric to rounding
        if inputs.head is not None:
            gate.head = HeadDistance.fit(fit_rows.head, fit_rows.classes)
            d = np.stack([gate.summary_distance(fit_rows.summary), gate.head.score(fit_rows.head)], 1)
            gate.scale = np.stack([d.mean(0), d.std(0) + 1e-12], 1)
        gate.threshold = float(np.quantile(gate.score(inputs.rows(slice(1, None, 2))), accept))
        return gate

    def to_dict(self) -> dict:
        d = {
            "kind": GATE_KIND if self.head is not None else SUMMARY_ONLY,
            "features": list(FEATURES),
            "mean": self.mean.tolist(),
            "inv_cov": self.inv_cov.tolist(),
            "threshold": self.threshold,
            "accept": self.accept,
            "images": self.images,
        }
        if self.head is not None:
            d.update(head=self.head.to_dict(), scale=self.scale.tolist())
        return d

    @classmethod
    def from_dict(cls, d: object, vocab: int | None = None) -> OODGate:
        """Parse a manifest entry (``vocab``: the model's logits per position, checked against the
        head's); ``ValueError`` naming what is wrong."""
        if not isinstance(d, dict):
            raise ValueError("not an object")
        if d.get("kind") not in (GATE_KIND, SUMMARY_ONLY) or d.get("features") != list(FEATURES):
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
        low = 0 if d["kind"] == SUMMARY_ONLY else -MAX_THRESHOLD  # a sum of standardised distances
        if not (np.isfinite(threshold) and low < threshold <= MAX_THRESHOLD):
            raise ValueError(
                f"threshold {threshold:g} must lie in ({low:g}, {MAX_THRESHOLD:g}]: a larger one would "
                "call nearly every input known"
            )
        if not 0 < accept < 1:
            raise ValueError(f"accept {accept:g} must lie within (0, 1)")
        if not isinstance(images, int) or isinstance(images, bool) or images < MIN_IMAGES:
            raise ValueError(f"images {images!r} must be an integer >= {MIN_IMAGES}")
        gate = cls(mean, inv_cov, threshold, accept, images)
        if d["kind"] == GATE_KIND:
            gate.head = HeadDistance.from_dict(d.get("head"), vocab)
            try:
                gate.scale = np.asarray(d.get("scale"), dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError("scale: not numbers") from None
            if (
                gate.scale.shape != (2, 2)
                or not np.isfinite(gate.scale).all()
                or (gate.scale[:, 1] <= 0).any()
            ):
                raise ValueError(
                    "scale must be [[mean, sd], [mean, sd]] with finite numbers and sd > 0: "
                    "a zero or negative sd would drown or invert a distance"
                )
        return gate


def _rounded(a: np.ndarray) -> list:
    """float32 precision in the manifest: the head's numbers are many, their last digits noise."""
    return np.asarray(a, dtype=np.float32).astype(np.float64).round(7).tolist()


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
