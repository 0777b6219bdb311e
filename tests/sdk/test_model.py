"""PixLM: KV-cache parity, recognition through the cache, generation, losses."""

from __future__ import annotations

import pytest
import torch

from pixlm.model import PixLM, PixLMConfig


@pytest.fixture(scope="module")
def model() -> PixLM:
    torch.manual_seed(0)
    m = PixLM(PixLMConfig(n_codes=16, n_labels=10, grid_h=6, grid_w=5, n_layer=2, n_head=2, d_model=32))
    # Random-init logits are near-uniform; sharpen them so a broken cache cannot hide in 1e-5.
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(8.0 if p.dim() > 1 else 1.0)
    return m.eval()


def _tokens(b: int = 3, n: int = 30) -> torch.Tensor:
    return torch.randint(0, 16, (b, n), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("k", [1, 7, 31])
def test_prefill_then_decode_equals_full_forward(model, k):
    seq = model.with_bos(_tokens())  # (3, 31)
    full, _ = model(seq)
    logits, past = model(seq[:, :k])
    parts = [logits]
    for t in range(k, seq.shape[1]):
        logits, past = model(seq[:, t : t + 1], past)
        parts.append(logits)
    inc = torch.cat(parts, dim=1)
    assert inc.shape == full.shape
    assert (inc - full).abs().max().item() <= 1e-5
    assert past[0][0].shape == (3, 2, 31, 16)


def test_recognition_through_cache_equals_from_scratch(model):
    tokens = _tokens()
    probs, nll = model.analyze(tokens)
    # Cache the first half of the image, then feed the rest: same label distribution.
    _, past = model(model.with_bos(tokens)[:, :16])
    logits, _ = model(tokens[:, 15:], past)
    cached = torch.softmax(model.label_logits(logits[:, -1]), dim=-1)
    assert (cached - probs).abs().max().item() <= 1e-5
    assert probs.shape == (3, 10) and torch.allclose(probs.sum(1), torch.ones(3))
    assert nll.shape == (3, 30) and (nll >= 0).all()


def test_mask_uses_past_length(model):
    # A wrong mask (is_causal aligned to key 0) lets a decode step see only the first key:
    # then the output would not depend on the cached tokens. It must.
    seq = model.with_bos(_tokens(1))
    _, past_a = model(seq[:, :10])
    other = seq.clone()
    other[:, 1:10] = (other[:, 1:10] + 1) % 16
    _, past_b = model(other[:, :10])
    a, _ = model(seq[:, 10:11], past_a)
    b, _ = model(seq[:, 10:11], past_b)
    assert (a - b).abs().max().item() > 1e-3


def test_generate_keeps_prefix_and_fills_image(model):
    prefix = _tokens(2)[:, :10]
    g = torch.Generator().manual_seed(0)
    out = model.generate(prefix, temperature=1.0, top_k=5, generator=g)
    assert out.shape == (2, 30)
    assert torch.equal(out[:, :10], prefix)
    assert int(out.max()) < 16 and int(out.min()) >= 0
    assert model.generate(torch.zeros(1, 0, dtype=torch.long), generator=g).shape == (1, 30)


def test_losses_label_and_unlabeled(model):
    tokens = _tokens()
    pix, lab, lab_logits = model.losses(tokens, torch.tensor([1, 2, 3]))
    assert pix.item() > 0 and lab is not None and lab_logits.shape == (3, 10)
    pix2, lab2, _ = model.losses(tokens, torch.tensor([-1, -1, -1]))
    assert lab2 is None and torch.allclose(pix, pix2)
