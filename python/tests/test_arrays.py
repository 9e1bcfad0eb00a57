"""Arrays into the core: float64 and float32 arrays are read in place (no
copy on the Python side, one in the core), whatever their layout, byte
order or alignment the values are the same."""

from __future__ import annotations

import numpy as np
import pytest

import tensor_similarity as ts
from tensor_similarity import _native
from conftest import embed_body_head, forward_ebh


def _f32(sd: dict) -> dict:
    return {k: v.astype(np.float32) for k, v in sd.items()}


def test_float32_state_dicts_are_read_as_their_float64_values():
    sd32 = _f32(embed_body_head(40))
    m32 = ts.Model.from_state_dict(sd32)
    m64 = ts.Model.from_state_dict({k: v.astype(np.float64) for k, v in sd32.items()})
    assert {t["dtype"] for t in m32.tensors} == {"F32"}
    assert ts.similarity(m32, m64) == pytest.approx(1.0, abs=1e-15)
    assert ts.inner_product(m32, m64) == ts.inner_product(m64, m64)  # the same values, bit for bit
    x = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(m32.forward(x), m64.forward(x))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_contiguous_float_arrays_cross_without_a_python_copy(dtype):
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    stored, array = ts._tensor("w", a)
    assert array is a and stored == ("F64" if dtype == np.float64 else "F32")
    assert ts._array(a) is a


def test_any_layout_gives_the_same_model():
    sd = embed_body_head(41)
    base = ts.Model.from_state_dict(sd)
    variants = {
        "fortran": {k: np.asfortranarray(v) for k, v in sd.items()},
        "transposed twice": {k: v.T.copy().T for k, v in sd.items()},
        "strided": {k: np.repeat(v, 2, axis=-1)[..., ::2] for k, v in sd.items()},
        "big-endian": {k: v.astype(">f8") for k, v in sd.items()},
        "read-only": {k: v.copy() for k, v in sd.items()},
        "misaligned": {},
        "float16": {k: v.astype(np.float16) for k, v in sd.items()},
    }
    for v in variants["read-only"].values():
        v.flags.writeable = False
    for k, v in sd.items():
        raw = np.zeros(v.nbytes + 1, dtype=np.uint8)
        m = np.frombuffer(raw.data, dtype=np.float64, count=v.size, offset=1).reshape(v.shape)
        assert not m.flags.aligned
        raw[1:] = np.frombuffer(v.tobytes(), dtype=np.uint8)
        variants["misaligned"][k] = m
    x = np.random.default_rng(2).normal(size=(4, 3))
    for name, variant in variants.items():
        model = ts.Model.from_state_dict(variant)
        expected = 1.0
        if name == "float16":
            expected = ts.similarity(base, ts.Model.from_state_dict(
                {k: v.astype(np.float16).astype(np.float64) for k, v in sd.items()}))
        assert ts.similarity(base, model) == pytest.approx(expected, abs=1e-15), name
        if name != "float16":
            np.testing.assert_array_equal(model.forward(x), base.forward(x), err_msg=name)


def test_options_and_inputs_of_either_float_width(ebh_models):
    a, b = ebh_models[:2]
    mean = np.array([0.5, -0.25, 1.0])
    s64 = ts.similarity(a, b, input_mean=mean, input_covariance=np.eye(3) * 2)
    s32 = ts.similarity(a, b, input_mean=mean.astype(np.float32), input_covariance=(np.eye(3) * 2).astype(np.float32))
    assert s32 == s64  # exactly representable in float32: the same values
    lists = ts.similarity(a, b, input_mean=mean.tolist(), input_covariance=(np.eye(3) * 2).tolist())
    assert lists == s64
    x = np.random.default_rng(3).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_array_equal(a.forward(x), a.forward(x.astype(np.float64)))
    np.testing.assert_array_equal(a.forward(x.T.copy().T), a.forward(x.astype(np.float64)))
    np.testing.assert_allclose(a.forward([[1, 2, 3]]), a.forward(np.array([[1.0, 2.0, 3.0]])), rtol=0)


def test_the_core_refuses_what_it_cannot_read_in_place():
    sd = embed_body_head(42)
    names = list(sd)
    good = [np.ascontiguousarray(v) for v in sd.values()]
    model = _native.from_state_dict(names, ["F64"] * len(names), good)
    assert model.parameter_count == sum(v.size for v in good)
    cases = {
        "C-contiguous": [v.T if v.ndim == 2 else v for v in good],
        "float64 or float32": [v.astype(np.int64) for v in good],
        "native-endian": [v.astype(">f8") for v in good],
        "NumPy array": [v.tobytes() for v in good],
    }
    for message, arrays in cases.items():
        with pytest.raises(TypeError, match=message):
            _native.from_state_dict(names, ["F64"] * len(names), arrays)


def test_forward_matches_numpy_for_float32_weights():
    sd = _f32(embed_body_head(43, blocks=2))
    model = ts.Model.from_state_dict(sd)
    x = np.random.default_rng(4).normal(size=(6, 3))
    ref = forward_ebh({k: v.astype(np.float64) for k, v in sd.items()}, x, blocks=2)
    np.testing.assert_allclose(model.forward(x), ref, rtol=1e-12, atol=1e-12)
