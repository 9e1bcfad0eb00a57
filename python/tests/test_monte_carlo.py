"""The Monte Carlo metric ("gaussian-mc"), the closure by name
("gaussian-closure"), and the warning a Gaussian closure emits.

Monte Carlo values are checked against the exact Gaussian value within 4 of
their own standard errors (fixed seeds); the core's estimator itself is
tested in the Rust suite (suite/tests/gaussian_mc.rs)."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import attention_model, embed_body_head, perturbed

Z = 4.0


def attention(seed: int, layers: int) -> ts.Model:
    sd, blocks = attention_model(seed, layers=layers)
    return ts.Model.from_state_dict(sd, blocks)


def test_an_estimate_agrees_with_the_exact_value_within_its_standard_error(ebh_models):
    a, b = ebh_models[:2]
    exact = ts.similarity(a, b, "gaussian")
    assert ts.GaussianMetric().is_exact(a, b)
    metric = ts.GaussianMonteCarloMetric(samples=50_000, seed=3)
    e = metric.estimate(a, b)
    assert isinstance(e, ts.MonteCarloEstimate)
    assert abs(e.similarity - exact) < Z * e.standard_error
    assert 0 < e.standard_error < 0.05
    assert (e.samples, e.batches) == (50_000, 100)
    products = [ts.inner_product(a, b, "gaussian"), ts.inner_product(a, a, "gaussian"),
                ts.inner_product(b, b, "gaussian")]
    found = [e.inner_product, e.squared_norm_a, e.squared_norm_b]
    for f, p, se in zip(found, products, e.product_standard_errors):
        assert abs(f - p) < Z * se
    # The functions and the metric's other methods give the same estimate.
    assert ts.similarity(a, b, "gaussian-mc", samples=50_000, seed=3) == e.similarity
    assert metric.similarity(a, b) == e.similarity
    # (through the core's log scale: to rounding)
    assert metric.inner_product(a, b) == pytest.approx(e.inner_product, rel=1e-14)


def test_a_seed_gives_the_same_estimate_and_another_seed_another(ebh_models):
    a, b = ebh_models[1:3]
    one = ts.GaussianMonteCarloMetric(samples=2_000, seed=5).estimate(a, b)
    assert ts.GaussianMonteCarloMetric(samples=2_000, seed=5).estimate(a, b) == one
    other = ts.GaussianMonteCarloMetric(samples=2_000, seed=6).estimate(a, b)
    assert other.similarity != one.similarity
    # The defaults: 10 000 samples, seed 0.
    default = ts.GaussianMonteCarloMetric().estimate(a, b)
    assert default == ts.GaussianMonteCarloMetric(samples=10_000, seed=0).estimate(a, b)
    assert default.samples == 10_000


def test_a_matrix_runs_one_set_of_draws_through_every_model(ebh_models):
    metric = ts.GaussianMonteCarloMetric(samples=3_000, seed=1)
    m = metric.matrix_estimate(ebh_models)
    n = len(ebh_models)
    assert isinstance(m, ts.MonteCarloMatrix)
    assert m.similarity.shape == m.standard_error.shape == m.inner_products.shape == (n, n)
    np.testing.assert_array_equal(m.similarity, m.similarity.T)
    np.testing.assert_array_equal(np.diag(m.similarity), np.ones(n))
    np.testing.assert_array_equal(np.diag(m.standard_error), np.zeros(n))
    assert (m.standard_error[~np.eye(n, dtype=bool)] > 0).all()
    np.testing.assert_array_equal(metric.matrix(ebh_models, progress=False), m.similarity)
    np.testing.assert_array_equal(
        ts.matrix(ebh_models, "gaussian-mc", samples=3_000, seed=1, progress=False), m.similarity
    )
    # Every entry is the pair's estimate on these draws (x is drawn for
    # every model alike here), up to rounding.
    e = metric.estimate(ebh_models[0], ebh_models[3])
    assert abs(m.similarity[0, 3] - e.similarity) < 1e-12
    # Tiles would each draw their own samples: refused.
    with pytest.raises(ts.OptionError, match="matrix"):
        metric.tile(ebh_models[:2], ebh_models[2:])


def test_the_difference_of_directions_from_one_set_of_draws():
    base = embed_body_head(11)
    a0, a1, b0, b1 = (ts.Model.from_state_dict(perturbed(base, s, 0.3)) for s in (12, 13, 14, 15))
    exact = ts.difference_similarity(a0, a1, b0, b1, "gaussian")
    metric = ts.GaussianMonteCarloMetric(samples=50_000, seed=2)
    e = metric.difference_estimate(a0, a1, b0, b1)
    assert abs(e.similarity - exact) < Z * e.standard_error
    assert metric.difference_similarity(a0, a1, b0, b1) == e.similarity
    with pytest.raises(ts.ZeroNormError):
        metric.difference_estimate(a0, a0, b0, b1)


def test_sequence_models_take_a_context():
    a, b = attention(1, 1), attention(2, 1)
    metric = ts.GaussianMonteCarloMetric(samples=20_000, seed=4, context=3)
    e = metric.estimate(a, b)
    exact = ts.similarity(a, b, "gaussian", context=3)
    assert abs(e.similarity - exact) < Z * e.standard_error
    with pytest.raises(ts.OptionError, match="context"):
        ts.GaussianMonteCarloMetric(samples=100).estimate(a, b)


def test_options_are_checked_when_the_metric_is_built(ebh_models):
    with pytest.raises(ts.OptionError, match="at least 4"):
        ts.GaussianMonteCarloMetric(samples=3)
    with pytest.raises(TypeError, match="samples"):
        ts.GaussianMonteCarloMetric(samples=1.5)
    with pytest.raises(TypeError, match="seed"):
        ts.GaussianMonteCarloMetric(seed="0")
    with pytest.raises(ts.OptionError, match="samples"):
        ts.similarity(ebh_models[0], ebh_models[1], "gaussian", samples=100)
    with pytest.raises(ts.OptionError, match="outputs"):
        ts.similarity(ebh_models[0], ebh_models[1], "gaussian-mc", outputs=[0])
    with pytest.raises(ts.OptionError, match="gaussian-mc"):
        ts._native.monte_carlo_estimate(ts.TensorMetric()._for([]), ebh_models[0]._native,
                                        ebh_models[1]._native)
    metric = ts.GaussianMonteCarloMetric(samples=500, seed=9, context=2)
    assert metric.options == {"samples": 500, "seed": 9, "context": 2}
    assert repr(metric) == "GaussianMonteCarloMetric(samples=500, seed=9, context=2)"
    assert metric.title == "gaussian-mc similarity, context 2, 500 samples, seed 9"
    again = pickle.loads(pickle.dumps(metric))
    assert type(again) is ts.GaussianMonteCarloMetric and again.options == metric.options


def closures(call) -> list:
    """The GaussianClosureWarnings that ``call()`` emits, each time."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, ts.GaussianClosureWarning)]


def test_a_gaussian_closure_warns_and_an_exact_value_does_not():
    deep = [attention(s, 2) for s in (21, 22, 23)]
    shallow = [attention(s, 1) for s in (24, 25)]
    for name in ("gaussian", "gaussian-closure"):
        found = closures(lambda: ts.similarity(deep[0], deep[1], name, context=3))
        assert len(found) == 1
        assert "gaussian-mc" in str(found[0].message)
        # Pointing at the caller: this file.
        assert found[0].filename == __file__
        assert closures(lambda: ts.similarity(shallow[0], shallow[1], name, context=3)) == []
        assert len(closures(lambda: ts.matrix(deep, name, context=3, progress=False))) == 1
        assert len(closures(lambda: ts.inner_product(deep[0], deep[1], name, context=3))) == 1
        assert len(closures(lambda: ts.squared_norms(deep, name, context=3))) == 1
        assert closures(lambda: ts.matrix(shallow, name, context=3, progress=False)) == []
        assert len(closures(lambda: ts.difference_similarity(*deep, deep[0], name, context=3))) == 1
    # The closure by name is the closure; Monte Carlo never warns.
    assert ts.GaussianClosureMetric(context=3).kind == "gaussian-closure"
    assert not ts.GaussianClosureMetric(context=3).is_exact(deep[0], deep[1])
    assert closures(lambda: ts.similarity(deep[0], deep[1], "gaussian-mc", context=3,
                                          samples=100)) == []


def test_the_warning_shows_once_per_calling_line_by_default():
    deep = [attention(s, 2) for s in (31, 32)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.resetwarnings()
        warnings.simplefilter("default")
        for _ in range(3):
            ts.similarity(deep[0], deep[1], "gaussian", context=3)
    assert len([w for w in caught if issubclass(w.category, ts.GaussianClosureWarning)]) == 1
    assert issubclass(ts.GaussianClosureWarning, UserWarning)
