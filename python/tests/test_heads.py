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
    with pytest.raises(ts.OptionError, match="tensor or Gaussian metric"):
        ts.heads(a, b, "gaussian-mc", context=2)
    with pytest.raises(ts.OptionError, match="tensor metric"):
        ts.paths(a, b, "weight")
    with pytest.raises(ts.TensorSimilarityError, match="context"):
        ts.heads(a, b)
    mlp = ts.Model.from_state_dict(embed_body_head(8), residual_scale=0.5)
    with pytest.raises(ts.OptionError, match="no attention block"):
        ts.heads(mlp, mlp)
    # A residual MLP splits: its families are ∅ and {1}.
    assert ts.paths(mlp, mlp).families == [(), (1,)]


def test_one_head_or_one_family_across_a_run():
    run = [lm(10 + i) for i in range(3)]
    heads = ts.head_paths(run[0], run[1], context=3)
    m = ts.matrix(run, context=3, head=(1, 2), progress=False)
    assert m.shape == (3, 3) and np.all(m.diagonal() == 1.0)
    assert m[0, 1] == pytest.approx(heads[0].cosine[2, 2], abs=1e-12)
    # A family is a signed sum of 4^|S| products that cancel: its matrix
    # (the subsets of S alone) and `paths` (every subset) add them in
    # different orders, so they agree to the suite's oracle tolerance for
    # families (suite/tests/paths.rs), not to the last digits.
    families = ts.paths(run[0], run[2], context=3)
    m = ts.matrix(run, context=3, family=[1, 2], progress=False)
    assert m[0, 2] == pytest.approx(families.cosine[3, 3], abs=1e-10)
    m = ts.matrix(run, context=3, family=[], progress=False)
    assert m[0, 2] == pytest.approx(families.cosine[0, 0], abs=1e-10)
    metric = ts.TensorMetric(context=3, head=(1, 2))
    assert metric.title == "tensor similarity, context 3, head path 1:2"
    assert metric.similarity(run[0], run[1]) == pytest.approx(heads[0].cosine[2, 2], abs=1e-12)
    assert ts.TensorMetric(context=3, family=[]).title.endswith("family ∅")
    with pytest.raises(ts.OptionError, match="head"):
        ts.similarity(run[0], run[1], "gaussian", context=3, head=(1, 0))
    with pytest.raises(ts.OptionError, match="not both"):
        ts.TensorMetric(context=3, head=(1, 0), family=[1])
    with pytest.raises(ts.OptionError, match="head 5 does not exist"):
        ts.similarity(run[0], run[1], context=3, head=(1, 5))
    with pytest.raises(ts.OptionError, match="whole models"):
        metric.heads(run[0], run[1])
    with pytest.raises(TypeError, match="head="):
        ts.TensorMetric(context=3, head=1)
    with pytest.raises(ts.OptionError, match="≥ 0"):
        ts.TensorMetric(context=3, head=(1, -1))
    with pytest.raises(ts.OptionError, match="≥ 0"):
        ts.TensorMetric(context=3, family=[-2])


def test_gaussian_head_paths_say_where_they_are_exact():
    a, b = lm(20), lm(21)
    found = ts.head_paths(a, b, "gaussian", context=2)
    assert [p.exact for p in found] == [True, False]
    assert all(p.exact for p in ts.head_paths(a, b, context=2))
    # The first block's, from the head path models' own Gaussian products.
    one = ts.head_paths(lm(20, layers=1), lm(21, layers=1), "gaussian", context=2)
    assert one[0].exact and one[0].cosine.shape == (3, 3)


def test_head_matching_finds_a_permutation_across_a_run():
    run = [lm(30, layers=1), lm(31, layers=1), lm(30, layers=1, permute_heads=True)]
    (found,) = ts.head_matching(run, context=2, progress=False)
    assert isinstance(found, ts.HeadMatching) and found.block == 1
    assert found.mean.shape == (3, 3)
    np.testing.assert_allclose(found.mean.diagonal(), 1.0)
    assert found.mean[0, 2] == pytest.approx(1.0, abs=1e-9)
    assert found.mean[0, 1] < 1 - 1e-6
    # The third model is the first with its three heads in reverse order.
    assert found.matching[0][2] == [2, 1, 0] and found.matching[2][0] == [2, 1, 0]
    assert found.matching[1][1] == [0, 1, 2]
