"""Metric objects: built once with their options (checked then), called
many times, the same values as the module's functions; and the functions'
uniform keyword options."""

from __future__ import annotations

import inspect
import pickle

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import attention_model, embed_body_head


METRICS = [
    (ts.TensorMetric, "tensor", {}),
    (ts.TensorMetric, "tensor", {"outputs": [1], "input_mean": np.full(3, 0.5)}),
    (ts.GaussianMetric, "gaussian", {"input_covariance": 2 * np.eye(3)}),
    (ts.WeightMetric, "weight", {}),
]


@pytest.mark.parametrize("cls,name,options", METRICS)
def test_a_metric_computes_what_the_functions_compute(ebh_models, cls, name, options):
    metric = cls(**options)
    assert metric.kind == name and isinstance(metric, ts.Metric)
    a, b = ebh_models[:2]
    assert metric.similarity(a, b) == ts.similarity(a, b, name, **options)
    np.testing.assert_array_equal(
        metric.matrix(ebh_models, progress=False), ts.matrix(ebh_models, name, progress=False, **options)
    )
    np.testing.assert_array_equal(metric.tile(ebh_models[:2], ebh_models[2:]),
                                  ts.tile(ebh_models[:2], ebh_models[2:], metric=name, **options))
    # The functions take the metric object too.
    assert ts.similarity(a, b, metric) == metric.similarity(a, b)
    np.testing.assert_array_equal(ts.matrix(ebh_models, metric=metric, progress=False),
                                  metric.matrix(ebh_models, progress=False))
    if name != "weight":
        assert metric.inner_product(a, b) == ts.inner_product(a, b, name, **options)
        assert metric.inner_product(a, b, log=True) == ts.inner_product(a, b, metric, log=True)
        np.testing.assert_array_equal(metric.squared_norms(ebh_models),
                                      ts.squared_norms(ebh_models, name, **options))
        c, d = ebh_models[2:]
        assert metric.difference_similarity(a, b, c, d) == ts.difference_similarity(a, b, c, d, name, **options)


def test_a_metric_takes_paths_with_load_options(tmp_path):
    model = ts.Model.from_state_dict(embed_body_head(30), residual_scale=0.5)
    path = tmp_path / "m.safetensors"
    model.save(path)
    metric = ts.TensorMetric()
    assert metric.similarity(path, model) == pytest.approx(1.0, abs=1e-12)
    assert metric.matrix([path, model], progress=False)[0, 1] == pytest.approx(1.0, abs=1e-12)
    # Load options reach the file: one its layout does not read is refused.
    with pytest.raises(ts.OptionError, match="heads= applies to none of the models"):
        metric.matrix([path, model], progress=False, heads=2)
    with pytest.raises(TypeError, match="context"):
        metric.similarity(path, model, context=3)  # a metric option: the constructor's
    with pytest.raises(TypeError, match="residual_scal"):
        metric.similarity(path, model, residual_scal=0.5)


def test_options_are_checked_when_the_metric_is_built():
    with pytest.raises(ts.OptionError, match="symmetric"):
        ts.TensorMetric(input_metric=np.triu(np.ones((4, 4))))
    with pytest.raises(ts.NonFiniteError):
        ts.TensorMetric(output_weights=np.full((2, 2), np.nan))
    with pytest.raises(ts.OptionError, match="context=N"):
        ts.TensorMetric(positions=[-1])
    with pytest.raises(ts.OptionError, match="not both"):
        ts.TensorMetric(outputs=[0], output_weights=np.eye(2))
    with pytest.raises(TypeError):
        ts.TensorMetric(context="3")
    with pytest.raises(TypeError):
        ts.TensorMetric(max_memory=-1)
    with pytest.raises(TypeError):
        ts.TensorMetric(outputs=[0.5])
    with pytest.raises(TypeError):
        ts.TensorMetric(outputs=[-1, "x"])
    with pytest.raises(TypeError):
        ts.GaussianMetric(outputs=[0])  # not an option of the Gaussian metric
    with pytest.raises(TypeError):
        ts.WeightMetric(context=3)
    with pytest.raises(TypeError):
        ts.Metric()


def test_a_selection_by_negative_index_or_slice_is_resolved_on_the_models(ebh_models):
    a, b = ebh_models[:2]
    last = ts.TensorMetric(outputs=-1)
    assert last.similarity(a, b) == ts.similarity(a, b, outputs=[1])
    assert ts.TensorMetric(outputs=slice(0, 1)).similarity(a, b) == ts.similarity(a, b, outputs=[0])
    np.testing.assert_array_equal(last.matrix(ebh_models, progress=False),
                                  ts.matrix(ebh_models, outputs=[1], progress=False))
    wide = [ts.Model.from_state_dict(embed_body_head(i, out=3)) for i in (70, 71)]
    assert last.similarity(*wide) == ts.similarity(*wide, outputs=[2])  # another width
    with pytest.raises(ts.OptionError, match="out of range"):
        ts.TensorMetric(outputs=-3).similarity(a, b)


def test_a_metric_keeps_its_own_copy_of_its_arrays(ebh_models):
    a, b = ebh_models[:2]
    mean = np.full(3, 0.5)
    metric = ts.TensorMetric(input_mean=mean)
    before = metric.similarity(a, b)
    mean[:] = 3.0
    assert metric.similarity(a, b) == before
    assert metric.options["input_mean"].tolist() == [0.5, 0.5, 0.5]


def test_a_metric_pickles_and_shows_its_options(ebh_models):
    a, b = ebh_models[:2]
    _, blocks = attention_model(70)
    lm = [ts.Model.from_state_dict(attention_model(70 + i)[0], layout=blocks) for i in range(2)]
    for metric, (x, y) in ((ts.TensorMetric(outputs=-1, input_mean=np.zeros(3)), (a, b)),
                           (ts.GaussianMetric(context=2), lm),  # context=: sequence models
                           (ts.WeightMetric(), (a, b))):
        back = pickle.loads(pickle.dumps(metric))
        assert type(back) is type(metric) and repr(back) == repr(metric)
        assert back.similarity(x, y) == metric.similarity(x, y)
    assert repr(ts.TensorMetric(context=4, input_mean=np.zeros(3))) == \
        "TensorMetric(context=4, input_mean=<array 3>)"
    assert repr(ts.WeightMetric()) == "WeightMetric()"


def test_a_sequence_metric(ebh_models):
    sd, blocks = attention_model(80)
    lm = [ts.Model.from_state_dict(attention_model(80 + i)[0], layout=blocks) for i in range(3)]
    metric = ts.TensorMetric(context=3, positions=[-1])
    assert metric.similarity(lm[0], lm[1]) == ts.similarity(lm[0], lm[1], context=3, positions=[-1])
    gaussian = ts.GaussianMetric(context=3)
    assert gaussian.is_exact(lm[0], lm[1]) == ts.is_gaussian_exact(lm[0], lm[1], context=3)


def test_the_weight_metric_has_no_inner_product(ebh_models):
    a, b = ebh_models[:2]
    w = ts.WeightMetric()
    assert not hasattr(w, "inner_product")
    with pytest.raises(ts.OptionError, match="inner product"):
        ts.inner_product(a, b, w)
    with pytest.raises(ts.OptionError, match="inner product"):
        ts.squared_norms(ebh_models, w)


def test_options_beside_a_metric_object_are_an_error(ebh_models):
    a, b = ebh_models[:2]
    with pytest.raises(TypeError, match="context"):
        ts.similarity(a, b, ts.TensorMetric(), context=3)
    with pytest.raises(TypeError, match="outputs"):
        ts.matrix(ebh_models, metric=ts.TensorMetric(), outputs=[0])


def _keywords(f):
    return {
        p.name: p.default
        for p in inspect.signature(f).parameters.values()
        if p.kind == inspect.Parameter.KEYWORD_ONLY
    }


def test_similarity_inner_product_and_matrix_take_the_same_options():
    common = {k: None for k in ts.METRIC_OPTIONS}
    for f, own in ((ts.similarity, {}), (ts.inner_product, {"log": False}), (ts.matrix, {"progress": True})):
        assert _keywords(f) == {**common, **own}, f.__name__
        metric = inspect.signature(f).parameters["metric"]
        assert metric.default == "tensor" and metric.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD
    # Every metric option is some metric's: the tensor metric takes all but
    # the Monte Carlo draws'.
    monte_carlo = {"samples", "seed"}
    assert set(_keywords(ts.TensorMetric)) == set(ts.METRIC_OPTIONS) - monte_carlo
    assert set(_keywords(ts.GaussianMetric)) == {"context", "input_mean", "input_covariance", "max_memory"}
    assert set(_keywords(ts.GaussianClosureMetric)) == set(_keywords(ts.GaussianMetric))
    assert set(_keywords(ts.GaussianMonteCarloMetric)) == {
        "context", "input_mean", "input_covariance"} | monte_carlo


def test_every_function_takes_every_option_by_keyword(ebh_models):
    a, b = ebh_models[:2]
    kw = dict(outputs=[0], input_mean=np.zeros(3))
    s = ts.similarity(a, b, **kw)
    assert ts.matrix([a, b], progress=False, **kw)[0, 1] == pytest.approx(s, abs=1e-12)
    ip = ts.inner_product(a, b, **kw)
    norms = ts.squared_norms([a, b], **kw)
    assert ip / np.exp(norms[:, 1].sum() / 2) == pytest.approx(s, abs=1e-12)


def test_context_on_vector_models_is_an_error_everywhere(ebh_models, tmp_path):
    # Issue 27: context= on vector models was ignored; the command line
    # refuses --context there ("none of the models is a sequence model"),
    # and options are never silently ignored. Every entry point that takes
    # context= refuses it, in the command line's words.
    a, b, c, d = ebh_models
    path = tmp_path / "a.safetensors"
    a.save(path)
    message = "context=3: none of the models is a sequence model"
    tensor, gaussian = ts.TensorMetric(context=3), ts.GaussianMetric(context=3)
    calls = [
        lambda: ts.similarity(a, b, context=3),
        lambda: ts.similarity(path, b, "gaussian", context=3),
        lambda: ts.inner_product(a, b, context=3),
        lambda: ts.difference_similarity(a, b, c, d, context=3),
        lambda: ts.is_gaussian_exact(a, b, context=3),
        lambda: ts.matrix([a, b, path], context=3, progress=False),
        lambda: ts.squared_norms([a], context=3),
        lambda: ts.tile([a], [b], context=3),
        lambda: ts.tile([a, b], context=3),
        lambda: tensor.similarity(a, b),
        lambda: tensor.inner_product(a, b, log=True),
        lambda: tensor.difference_similarity(a, b, c, d),
        lambda: tensor.matrix([a, b], progress=False),
        lambda: tensor.squared_norms([a, b]),
        lambda: tensor.tile([a], [b]),
        lambda: gaussian.similarity(a, b),
        lambda: gaussian.is_exact(a, b),
        lambda: gaussian.matrix([a, b], progress=False),
    ]
    for call in calls:
        with pytest.raises(ts.OptionError, match=message):
            call()
    # On sequence models the same metric computes (the check is not a
    # refusal of context= itself).
    _, blocks = attention_model(71)
    lm = [ts.Model.from_state_dict(attention_model(71 + i)[0], layout=blocks) for i in range(2)]
    assert -1 <= tensor.similarity(*lm) <= 1
    assert gaussian.matrix(lm, progress=False).shape == (2, 2)


def test_the_title_states_the_metric_the_context_and_the_slice():
    # Issue 27: a heatmap's title, as `matrix --plot` writes it.
    assert ts.TensorMetric(context=8).title == "tensor similarity, context 8"
    assert ts.TensorMetric().title == "tensor similarity, vector models"
    assert ts.GaussianMetric(context=4).title == "gaussian similarity, context 4"
    assert ts.WeightMetric().title == "weight similarity"
    assert ts.TensorMetric(context=8, positions=[-1]).title == "tensor similarity, context 8, positions [-1]"
    assert ts.TensorMetric(outputs=3).title == "tensor similarity, vector models, outputs [3]"
    assert ts.TensorMetric(outputs=[0, 2]).title == "tensor similarity, vector models, outputs [0, 2]"
    assert ts.TensorMetric(outputs=slice(0, 10)).title == "tensor similarity, vector models, outputs 0:10"
    assert ts.TensorMetric(outputs=range(2, 8, 2)).title == "tensor similarity, vector models, outputs 2:8:2"
    assert ts.TensorMetric(output_weights=np.eye(2)).title == "tensor similarity, vector models, output weights Q"
    assert ts.TensorMetric(input_mean=np.zeros(3)).title == \
        "tensor similarity, vector models, inputs x ~ N(μ, Σ)"
