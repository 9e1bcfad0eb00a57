"""Where two models differ (SPEC §9): head paths and path families, from
Python. Their values are checked against a dense oracle in the Rust suite
(suite/tests/heads.rs, paths.rs); here, what the bindings add: the shapes
and types, the symmetries they must show, the identities they must satisfy,
and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import attention_model, embed_body_head


def lm(seed: int, layers: int = 2, permute_heads: bool = False, heads: int = 3) -> ts.Model:
    sd, blocks = attention_model(seed, heads=heads, layers=layers, permute_heads=permute_heads)
    return ts.Model.from_state_dict(sd, layout=blocks)


def test_a_head_permutation_is_found_not_assumed():
    # The same function with the first block's heads in reverse order.
    a, b = lm(1, layers=1), lm(1, layers=1, permute_heads=True)
    (cos,) = ts.heads(a, b, context=3)
    assert cos.shape == (3, 3)
    np.testing.assert_allclose(np.fliplr(cos).diagonal(), 1.0, atol=1e-9)
    off = cos[~np.fliplr(np.eye(3, dtype=bool))]
    assert np.all(off < 1 - 1e-6), cos


def test_head_paths_carry_the_inner_products_and_norms():
    a, b = lm(2), lm(3)
    found = ts.head_paths(a, b, context=2)
    assert [p.block for p in found] == [1, 2]
    for p in found:
        assert isinstance(p, ts.HeadPaths)
        assert p.cosine.shape == p.inner.shape == (3, 3)
        np.testing.assert_allclose(
            p.cosine, p.inner / np.sqrt(np.outer(p.norms_a, p.norms_b)), rtol=1e-12, atol=1e-15
        )
    metric = ts.TensorMetric(context=2)
    assert [c.tolist() for c in metric.heads(a, b)] == [p.cosine.tolist() for p in found]


def test_path_families_sum_to_the_inner_product():
    a, b = lm(4), lm(5)
    found = ts.paths(a, b, context=3)
    assert isinstance(found, ts.PathFamilies)
    assert found.blocks == [1, 2]
    assert found.families == [(), (1,), (2,), (1, 2)]
    assert found.inner.shape == found.cosine.shape == (4, 4)
    total = ts.inner_product(a, b, context=3)
    assert found.total == pytest.approx(total, rel=1e-12)
    assert found.inner.sum() == pytest.approx(total, rel=1e-10)
    assert found.similarity == ts.similarity(a, b, context=3)
    # A model against itself: every family matches itself.
    same = ts.paths(a, a, context=3)
    np.testing.assert_allclose(same.cosine.diagonal(), 1.0, atol=1e-9)


def test_heads_and_paths_are_the_tensor_metrics():
    a, b = lm(6), lm(7)
    with pytest.raises(ts.OptionError, match="tensor metric"):
        ts.heads(a, b, "gaussian", context=2)
    with pytest.raises(ts.OptionError, match="tensor metric"):
        ts.paths(a, b, "weight")
    with pytest.raises(ts.TensorSimilarityError, match="context"):
        ts.heads(a, b)
    mlp = ts.Model.from_state_dict(embed_body_head(8), residual_scale=0.5)
    with pytest.raises(ts.OptionError, match="no attention block"):
        ts.heads(mlp, mlp)
    # A residual MLP splits: its families are ∅ and {1}.
    assert ts.paths(mlp, mlp).families == [(), (1,)]
