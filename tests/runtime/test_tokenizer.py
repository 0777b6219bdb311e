"""Tokenizer: exactness of the fast paths, round trips, resize policies, bad input. No torch."""

from __future__ import annotations

import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest

from conftest import VTEST
from pixlm.runtime import blas
from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig, resize

RNG = np.random.default_rng(0)
GREY16 = [[v] for v in range(0, 256, 17)]  # 16 grey levels 0, 17, ..., 255


def exact(tok: Tokenizer, image: np.ndarray) -> np.ndarray:
    """Reference: nearest palette entry by float distance, per cell, no lookup tables."""
    c = tok.config
    img = tok.prepare(image).reshape(c.height, c.width, c.channels).astype(np.float64)
    p = c.patch
    cells = img.reshape(c.height // p, p, c.width // p, p, c.channels).transpose(0, 2, 1, 3, 4)
    cells = cells.reshape(-1, p * p * c.channels)
    d = ((cells[:, None, :] - tok.palette[None].astype(np.float64)) ** 2).sum(-1)
    return d.argmin(1)


def test_runtime_imports_and_tokenizes_without_torch():
    tok = Tokenizer(TokenizerConfig(14, 14, 1, 1, palette=GREY16))
    tokens = tok.encode(RNG.integers(0, 256, (720, 1280, 3), dtype=np.uint8))
    assert tokens.shape == (196,)
    assert "torch" not in sys.modules
    with pytest.raises(ImportError):
        import torch  # noqa: F401


def test_grey_lookup_table_is_exact():
    tok = Tokenizer(TokenizerConfig(28, 28, 1, 1, palette=GREY16))
    img = RNG.integers(0, 256, (28, 28), dtype=np.uint8)
    assert np.array_equal(tok.encode(img), exact(tok, img))


def test_patch_codes_are_exact_and_batch_equals_single():
    palette = RNG.integers(0, 256, (64, 4)).tolist()
    tok = Tokenizer(TokenizerConfig(28, 28, 1, 2, palette=palette))
    imgs = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    batch = tok.encode_batch(list(imgs))
    assert batch.shape == (5, 196)
    for i in range(5):
        assert np.array_equal(batch[i], tok.encode(imgs[i]))
        assert np.array_equal(batch[i], exact(tok, imgs[i]))


@pytest.fixture
def openblas_on_two_threads():
    """OpenBLAS as after `import numpy` first on two cores; the session's setting comes back."""
    if not blas.threads():
        pytest.skip("no OpenBLAS with its own threads loaded: numpy uses another BLAS here")
    original = blas.threads()
    for _, put in blas._libraries():
        put(2)
    yield
    for (_, put), n in zip(blas._libraries(), original, strict=True):
        put(n)


def test_the_nearest_code_search_keeps_numpys_blas_on_one_thread(openblas_on_two_threads):
    """OpenBLAS's workers, started by a large product, kept spinning and halved ONNX Runtime's
    next call on the same cores (Recognizer.predict_batch): the tokenizer's product runs on one."""
    before = blas.threads()
    seen = []

    class Palette(np.ndarray):
        @property
        def T(self):  # noqa: N802  (numpy's name)
            class Product:
                __array_ufunc__ = None  # numpy defers x @ Product() to __rmatmul__

                def __rmatmul__(_, x):
                    seen.append(blas.threads())
                    return x @ np.asarray(self).T

            return Product()

    tok = Tokenizer(TokenizerConfig(28, 28, 1, 2, palette=RNG.integers(0, 256, (64, 4)).tolist()))
    reference = tok.encode_batch(list(RNG.integers(0, 256, (16, 28, 28), dtype=np.uint8)))
    tok._palette_f = tok._palette_f.view(Palette)
    images = list(RNG.integers(0, 256, (16, 28, 28), dtype=np.uint8))
    assert tok.encode_batch(images).shape == reference.shape
    assert seen and all(n == 1 for n in seen[0]), seen
    assert blas.threads() == before  # the caller's own setting comes back


def test_blas_one_thread_restores_the_setting_even_on_error(openblas_on_two_threads):
    before = blas.threads()
    with pytest.raises(RuntimeError), blas.one_thread():
        assert set(blas.threads()) == {1}
        raise RuntimeError("boom")
    assert blas.threads() == before


def test_colour_per_pixel_is_exact():
    palette = RNG.integers(0, 256, (512, 3)).tolist()
    tok = Tokenizer(TokenizerConfig(32, 32, 3, 1, palette=palette))
    img = RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert np.array_equal(tok.encode(img), exact(tok, img))


def test_fast_sampling_stays_close_to_inter_area_on_real_video():
    cap = cv2.VideoCapture(str(VTEST))
    ok, frame = cap.read()
    assert ok
    frame = cv2.resize(frame, (1280, 720))
    cfg = TokenizerConfig(28, 28, 1, 1, palette=[[v] for v in range(256)])  # tokens = grey levels
    fast = Tokenizer(cfg).encode(frame)
    area = Tokenizer(replace(cfg, sampling="area")).encode(frame)
    assert np.abs(fast - area).mean() < 1.5 and np.abs(fast - area).max() < 32


def test_decode_round_trip():
    palette = RNG.integers(0, 256, (32, 12)).tolist()  # 2x2 colour patches
    tok = Tokenizer(TokenizerConfig(8, 6, 3, 2, palette=palette))
    tokens = RNG.integers(0, 32, tok.n_tokens)
    img = tok.decode(tokens)
    assert img.shape == (8, 6, 3) and img.dtype == np.uint8
    assert np.array_equal(tok.encode(img), tokens)  # palette images tokenize to themselves
    with pytest.raises(ValueError, match="tokens"):
        tok.decode(tokens[:-1])


def test_vocabulary_layout():
    tok = Tokenizer(TokenizerConfig(4, 4, 1, 1, palette=GREY16), labels=["a", "b"])
    assert (tok.bos, tok.label_token(0), tok.label_token(1), tok.vocab_size) == (16, 17, 18, 19)
    assert tok.grid == (4, 4) and tok.n_tokens == 16


@pytest.mark.parametrize("policy", ["stretch", "crop", "letterbox"])
def test_resize_policies_give_the_grid(policy):
    img = RNG.integers(0, 256, (90, 160, 3), dtype=np.uint8)
    out = resize(img, 14, 14, policy)
    assert out.shape == (14, 14, 3)
    if policy == "letterbox":  # wide frame: black bars above and below
        assert out[0].max() == 0 and out[-1].max() == 0


def test_colour_frame_becomes_grey_for_grey_model_and_grey_into_colour_fails():
    grey = Tokenizer(TokenizerConfig(14, 14, 1, 1, palette=GREY16))
    colour = Tokenizer(TokenizerConfig(14, 14, 3, 1, palette=[[0, 0, 0], [255, 255, 255]]))
    assert grey.encode(np.full((30, 30, 3), 255, np.uint8)).tolist() == [15] * 196
    with pytest.raises(ValueError, match="grey image given to a colour"):
        colour.encode(np.zeros((30, 30), np.uint8))


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "None"),
        (np.zeros((10, 10), np.float32), "uint8"),
        (np.zeros((10, 10, 4), np.uint8), "channels"),
        (np.zeros((0, 10), np.uint8), "empty"),
        (np.zeros((10,), np.uint8), "shape"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_input_names_the_problem(bad, message):
    tok = Tokenizer(TokenizerConfig(14, 14, 1, 1, palette=GREY16))
    with pytest.raises(ValueError, match=message):
        tok.encode(bad)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="patch"):
        Tokenizer(TokenizerConfig(28, 28, 1, 3, palette=[[0] * 9, [1] * 9]))
    with pytest.raises(ValueError, match="palette"):
        Tokenizer(TokenizerConfig(28, 28, 1, 2, palette=[[0], [1]]))
