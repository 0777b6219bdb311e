"""Property tests (hypothesis): the tokenizer, the region logic and the manifest loader hold for
any input, not just the ones we thought of."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle, BundleError
from pixlm.runtime.stream import grid_regions
from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig

PALETTE = [[v] * 4 for v in range(0, 256, 17)]  # 16 grey 2x2 codes
TOK = Tokenizer(TokenizerConfig(28, 28, 1, 2, palette=PALETTE))
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    st.integers(1, 400),
    st.integers(1, 400),
    st.sampled_from([None, 1, 3, 4]),
    st.sampled_from(["stretch", "crop", "letterbox"]),
    st.data(),
)
def test_tokenizer_takes_any_image(h, w, channels, resize, data):
    shape = (h, w) if channels is None else (h, w, channels)
    image = data.draw(arrays(np.uint8, shape))
    tok = Tokenizer(TokenizerConfig(28, 28, 1, 2, resize=resize, palette=PALETTE))
    if channels == 4:
        with pytest.raises(ValueError, match="1 or 3 channels"):
            tok.encode(image)
        return
    tokens = tok.encode(image)
    assert tokens.shape == (196,) and tokens.dtype == np.int64
    assert 0 <= tokens.min() and tokens.max() < tok.n_codes


@SETTINGS
@given(st.sampled_from([np.float32, np.int16, np.uint16, np.int64, bool]))
def test_tokenizer_refuses_other_dtypes(dtype):
    with pytest.raises(ValueError, match="uint8"):
        TOK.encode(np.zeros((30, 30), dtype=dtype))


@SETTINGS
@given(st.integers(1, 2000), st.integers(1, 2000), st.integers(1, 40), st.integers(1, 40))
def test_grid_regions_tile_the_frame_exactly(w, h, rows, cols):
    if rows > h or cols > w:
        with pytest.raises(ValueError, match="does not fit"):
            grid_regions(w, h, rows, cols)
        return
    regions = grid_regions(w, h, rows, cols)
    cover = np.zeros((h, w), np.int32)
    for r in regions:
        assert r.w >= 1 and r.h >= 1 and r.x >= 0 and r.y >= 0 and r.x + r.w <= w and r.y + r.h <= h
        cover[r.y : r.y + r.h, r.x : r.x + r.w] += 1
    assert len(regions) == rows * cols and (cover == 1).all()  # every pixel in exactly one tile


@pytest.fixture(scope="module")
def bundle_copy(tiny_bundle, tmp_path_factory):
    dst = tmp_path_factory.mktemp("prop") / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst, json.loads((dst / mf.MANIFEST).read_text())


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 300) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)


@SETTINGS
@given(st.data())
def test_any_damaged_manifest_is_a_bundle_error_or_loads(bundle_copy, data):
    """Replace or delete any field, at any depth: the loader loads or raises BundleError, never
    another exception (a traceback for the user)."""
    root, manifest = bundle_copy
    m = copy.deepcopy(manifest)
    node, path = m, []
    while isinstance(node, dict) and node and data.draw(st.booleans(), label="deeper"):
        key = data.draw(st.sampled_from(sorted(node)), label="key")
        path.append(key)
        if not isinstance(node[key], dict):
            break
        node = node[key]
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if path:
        if data.draw(st.booleans(), label="delete"):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON, label="value")
    (root / mf.MANIFEST).write_text(json.dumps(m))
    try:
        Bundle.load(root, verify=False)
    except BundleError:
        pass
