"""One exception class per family of errors, each under TensorSimilarityError
and ValueError (as every error has always been raised), each raised by a
real failing call."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import attention_model, embed_body_head

FAMILIES = [
    ts.OptionError,
    ts.ShapeError,
    ts.NonFiniteError,
    ts.IncomparableError,
    ts.ZeroNormError,
    ts.NumericalError,
    ts.MemoryLimitError,
    ts.FileError,
]


@pytest.mark.parametrize("cls", FAMILIES)
def test_every_family_is_a_tensor_similarity_error_and_a_value_error(cls):
    assert issubclass(cls, ts.TensorSimilarityError)
    assert issubclass(cls, ValueError)
    assert cls.__module__ == "tensor_similarity"
    assert cls.__name__ in ts.__all__
    # Errors travel between processes (Dask workers) by pickle.
    e = pickle.loads(pickle.dumps(cls("a message")))
    assert type(e) is cls and str(e) == "a message"


def test_the_memory_limit_is_also_a_memory_error():
    assert issubclass(ts.MemoryLimitError, MemoryError)


@pytest.fixture
def pair():
    return ts.Model.from_state_dict(embed_body_head(1)), ts.Model.from_state_dict(embed_body_head(2))


@pytest.fixture
def lm():
    sd, blocks = attention_model(3)
    return ts.Model.from_state_dict(sd, layout=blocks)


def test_option_errors(pair, lm):
    a, b = pair
    with pytest.raises(ts.OptionError, match="does not take positions"):
        ts.similarity(a, b, metric="gaussian", positions=[0])
    with pytest.raises(ts.OptionError, match="symmetric"):  # the core's InvalidOption
        ts.similarity(a, b, input_metric=np.triu(np.ones((4, 4))))
    with pytest.raises(ts.OptionError, match="context=N"):  # MissingContext
        ts.similarity(lm, lm)
    with pytest.raises(ts.OptionError, match="at least 1 position"):  # ZeroContext
        ts.similarity(a, b, context=0)
    with pytest.raises(ts.OptionError, match="cosine"):
        ts.similarity(a, b, metric="cosine")


def test_shape_errors(pair):
    a, b = pair
    with pytest.raises(ts.ShapeError, match="expected shape"):
        ts.similarity(a, b, input_metric=np.eye(7))
    with pytest.raises(ts.ShapeError, match="input covariance"):
        ts.GaussianMetric(input_mean=np.zeros(3), input_covariance=np.eye(4)).similarity(a, b)
    with pytest.raises(ts.ShapeError, match="one sample per row"):
        a.forward(np.zeros((2, 7)))
    with pytest.raises(ts.ShapeError, match="2-D"):
        ts.similarity(a, b, input_metric=np.zeros(4))


def test_non_finite_errors(pair):
    a, b = pair
    with pytest.raises(ts.NonFiniteError, match="NaN"):
        ts.similarity(a, b, input_metric=np.full((4, 4), np.nan))
    with pytest.raises(ts.NonFiniteError, match="inf"):
        ts.similarity(a, b, output_weights=np.full((2, 2), np.inf))


def test_incomparable_errors(pair):
    a = pair[0]
    wider = ts.Model.from_state_dict(embed_body_head(60, out=3))
    with pytest.raises(ts.IncomparableError, match="output"):
        ts.similarity(a, wider)
    other_hidden = ts.Model.from_state_dict(embed_body_head(62, h=7))
    with pytest.raises(ts.IncomparableError, match="shape"):
        ts.similarity(a, other_hidden, metric="weight")


def test_zero_norm_errors(pair):
    zero = ts.Model.from_state_dict({k: 0 * v for k, v in embed_body_head(1, bias=False).items()})
    with pytest.raises(ts.ZeroNormError, match="zero norm"):
        ts.similarity(zero, pair[0])


def test_numerical_errors():
    huge = ts.Model.from_state_dict({k: 1e150 * v for k, v in embed_body_head(1, blocks=3).items()})
    # The closure overflows; the exact sum (three bilinear blocks) keeps log scales.
    with pytest.raises(ts.NumericalError, match="numerical breakdown"):
        ts.similarity(huge, huge, metric="gaussian-closure")
    assert ts.similarity(huge, huge, metric="gaussian") == pytest.approx(1.0, abs=1e-12)


def test_memory_limit_errors(lm):
    with pytest.raises(ts.MemoryLimitError, match="more than the limit") as e:
        ts.similarity(lm, lm, context=10**6, max_memory=10**6)
    assert isinstance(e.value, MemoryError)
    with pytest.raises(MemoryError):  # as plain Python code would catch it
        ts.TensorMetric(context=10**6, max_memory=10**6).matrix([lm, lm], progress=False)


def test_work_limit_errors(lm):
    # The estimate grows with the context; the message names the largest
    # context within the limit and the keyword that raises it.
    with pytest.raises(ts.MemoryLimitError, match=r"the largest context within it is \d+ \(max_work=N") as e:
        ts.similarity(lm, lm, context=64, max_work=1e6)
    fits = int(str(e.value).split("within it is ")[1].split()[0])
    assert 1 <= fits < 64
    assert -1 <= ts.similarity(lm, lm, context=fits, max_work=1e6) <= 1
    with pytest.raises(MemoryError):
        ts.TensorMetric(context=64, max_work=1e6).matrix([lm, lm], progress=False)
    assert "max_work=1000000.0" in repr(ts.TensorMetric(context=4, max_work=1e6))
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ts.OptionError, match="max_work"):
            ts.TensorMetric(max_work=bad)
    with pytest.raises(TypeError, match="max_work"):
        ts.TensorMetric(max_work="lots")
    with pytest.raises(ts.OptionError, match="does not take max_work"):
        ts.similarity(lm, lm, metric="gaussian", context=2, max_work=1e9)


def test_file_errors(tmp_path):
    with pytest.raises(ts.FileError, match="missing.safetensors"):
        ts.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(ts.FileError, match="bad.safetensors"):
        ts.similarity(bad, bad)
    sd = embed_body_head(5)
    del sd["head.weight"]
    with pytest.raises(ts.FileError, match="head.weight"):  # a state_dict, as the core names it
        ts.Model.from_state_dict(sd)
    # An integer tensor is passed as I64 (a norm's counter); as a weight, the
    # core names it.
    with pytest.raises(ts.FileError, match=r'"head\.weight" has dtype I64'):
        ts.Model.from_state_dict({**embed_body_head(5), "head.weight": np.ones((2, 4), dtype=np.int64)})


def test_the_old_catches_still_catch(pair):
    a = pair[0]
    wider = ts.Model.from_state_dict(embed_body_head(60, out=3))
    for catch in (ValueError, ts.TensorSimilarityError):
        with pytest.raises(catch):
            ts.similarity(a, wider)
    # A wrong Python type is still a TypeError, not a family.
    with pytest.raises(TypeError):
        ts.similarity(a, wider, context="3")


def test_the_errors_docstring_example_runs():
    import doctest

    from tensor_similarity import _errors

    result = doctest.testmod(_errors, verbose=False)
    assert result.attempted >= 3 and result.failed == 0
