"""Models from state_dicts and files: layouts, dtypes, forward passes, and
errors naming what is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import attention_model, embed_body_head, forward_ebh, linear_chain


def test_the_error_is_a_value_error():
    assert issubclass(ts.TensorSimilarityError, ValueError)
    assert ts.TensorSimilarityError.__module__ == "tensor_similarity"


def test_an_inferred_state_dict_computes_what_numpy_computes():
    sd = embed_body_head(10, blocks=2)
    model = ts.Model.from_state_dict(sd)
    assert model.layout == "embed_body_head"
    assert (model.input_width, model.output_width, model.depth) == (3, 2, 4)
    assert model.orders == [1, 2, 2, 1]
    assert not model.is_sequence
    assert model.parameter_count == sum(v.size for v in sd.values())
    x = np.random.default_rng(0).normal(size=(6, 3))
    np.testing.assert_allclose(model.forward(x), forward_ebh(sd, x, blocks=2), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model(x[0]), forward_ebh(sd, x[:1], blocks=2)[0], rtol=1e-12)


def test_the_residual_scale_is_an_option_of_the_research_layout():
    sd = embed_body_head(11)
    model = ts.Model.from_state_dict(sd, residual_scale=0.5)
    x = np.random.default_rng(1).normal(size=(4, 3))
    np.testing.assert_allclose(model.forward(x), forward_ebh(sd, x, residual=0.5), rtol=1e-12, atol=1e-12)


def test_the_bi_linear_projection_layout():
    rng = np.random.default_rng(12)
    sd = {"bi_linear.weight": rng.normal(size=(8, 3)), "bi_linear.bias": rng.normal(size=8),
          "projection.weight": rng.normal(size=(2, 4))}
    model = ts.Model.from_state_dict(sd)
    assert model.layout == "bi_linear_projection"
    x = rng.normal(size=(5, 3))
    z = x @ sd["bi_linear.weight"].T + sd["bi_linear.bias"]
    expected = (z[:, :4] * z[:, 4:]) @ sd["projection.weight"].T
    np.testing.assert_allclose(model.forward(x), expected, rtol=1e-12, atol=1e-12)


def test_a_described_layout_names_the_tensors_as_they_are():
    sd = embed_body_head(13)
    renamed = {
        "emb.w": sd["embed.weight"], "emb.b": sd["embed.bias"],
        "mlp.left": sd["body.0.l.weight"], "mlp.right": sd["body.0.r.weight"],
        "mlp.down": sd["body.0.d.weight"], "mlp.lb": sd["body.0.l.bias"],
        "mlp.rb": sd["body.0.r.bias"], "mlp.db": sd["body.0.d.bias"],
        "out.w": sd["head.weight"], "out.b": sd["head.bias"],
    }
    blocks = [
        {"kind": "linear", "weight": "emb.w", "bias": "emb.b"},
        {"kind": "bilinear", "left": "mlp.left", "right": "mlp.right", "down": "mlp.down",
         "left_bias": "mlp.lb", "right_bias": "mlp.rb", "down_bias": "mlp.db"},
        {"kind": "linear", "weight": "out.w", "bias": "out.b"},
    ]
    inferred = ts.Model.from_state_dict(sd)
    x = np.random.default_rng(2).normal(size=(4, 3))
    for layout in (blocks, {"version": 1, "blocks": blocks}, json.dumps({"version": 1, "blocks": blocks})):
        described = ts.Model.from_state_dict(renamed, layout=layout)
        assert described.layout == "described"
        np.testing.assert_array_equal(described.forward(x), inferred.forward(x))
        assert ts.similarity(described, inferred) == pytest.approx(1.0, abs=1e-12)
    roles = {t["name"]: (t["block"], t["role"]) for t in described.tensors}
    assert roles["mlp.lb"] == (1, "left_bias")


def test_the_sequence_flag_and_attention_make_sequence_models():
    sd, blocks = linear_chain(14)
    assert not ts.Model.from_state_dict(sd, layout=blocks).is_sequence
    seq = ts.Model.from_state_dict(sd, layout={"version": 1, "blocks": blocks, "sequence": True})
    assert seq.is_sequence
    x = np.random.default_rng(3).normal(size=(3, 3))
    assert seq.forward(x).shape == (3, 2)
    sd, blocks = attention_model(15)
    attn = ts.Model.from_state_dict(sd, layout=blocks)
    assert attn.is_sequence and attn.orders == [1, 5, 1]
    assert attn.blocks[1]["kind"] == "attention" and attn.blocks[1]["mixes_positions"]
    y = attn.forward(np.eye(5)[[0, 3, 1]])
    assert y.shape == (3, 5)
    # Causal: the first position's output does not see the later ones.
    y2 = attn.forward(np.eye(5)[[0, 2, 4]])
    np.testing.assert_allclose(y[0], y2[0], rtol=1e-12)
    assert attn.forward(np.stack([np.eye(5)[[0, 3, 1]]] * 2)).shape == (2, 3, 5)
    assert "sequence" in repr(attn)


def test_stored_dtypes_are_listed():
    sd = embed_body_head(16, bias=False)
    sd["embed.weight"] = sd["embed.weight"].astype(np.float32)
    sd["head.weight"] = sd["head.weight"].astype(np.float16)
    model = ts.Model.from_state_dict(sd)
    dtypes = {t["name"]: t["dtype"] for t in model.tensors}
    assert dtypes == {"embed.weight": "F32", "body.0.l.weight": "F64", "body.0.r.weight": "F64",
                      "body.0.d.weight": "F64", "head.weight": "F16"}
    shapes = {t["name"]: t["shape"] for t in model.tensors}
    assert shapes["embed.weight"] == [4, 3]


def test_anything_with_array_works():
    class Wrapped:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a if dtype is None else self.a.astype(dtype)

    sd = embed_body_head(17)
    a = ts.Model.from_state_dict(sd)
    b = ts.Model.from_state_dict({k: Wrapped(v) for k, v in sd.items()})
    lists = ts.Model.from_state_dict({k: v.tolist() for k, v in sd.items()})
    assert ts.similarity(a, b) == 1.0 or ts.similarity(a, b) == pytest.approx(1.0, abs=1e-12)
    x = np.ones((1, 3))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))
    np.testing.assert_array_equal(a.forward(x), lists.forward(x))


def test_save_and_load_round_trip(tmp_path):
    sd = embed_body_head(18, blocks=2)
    model = ts.Model.from_state_dict(sd, residual_scale=0.7)
    x = np.random.default_rng(4).normal(size=(3, 3))
    for layout in ("described", "embed_body_head"):
        path = tmp_path / f"{layout}.safetensors"
        ts.save(model, path, layout=layout)
        back = ts.load(path)
        np.testing.assert_array_equal(back.forward(x), model.forward(x))
        assert back.layout == "described"  # save writes metadata with every layout
    model.save(tmp_path / "f32.safetensors", dtype="F32")
    back = ts.load(str(tmp_path / "f32.safetensors"))
    assert {t["dtype"] for t in back.tensors} == {"F32"}
    assert ts.similarity(back, model) == pytest.approx(1.0, abs=1e-6)
    # A sequence model round-trips in the described layout.
    sd, blocks = attention_model(19)
    attn = ts.Model.from_state_dict(sd, layout=blocks)
    ts.save(attn, tmp_path / "attn.safetensors")
    back = ts.Model.load(tmp_path / "attn.safetensors")
    seq = np.eye(5)[[1, 2, 3, 0]]
    np.testing.assert_array_equal(back.forward(seq), attn.forward(seq))


def test_a_file_without_metadata_reads_with_options(tmp_path):
    # A file as the research code writes it: the names alone, the residual
    # scale in the run's config, given here as an option.
    sd = embed_body_head(20)
    path = tmp_path / "research.safetensors"
    _write_safetensors(path, sd)
    plain = ts.load(path)
    assert plain.layout == "embed_body_head"
    lerp = ts.load(path, residual_scale=0.5)
    x = np.random.default_rng(5).normal(size=(2, 3))
    np.testing.assert_allclose(lerp.forward(x), forward_ebh(sd, x, residual=0.5), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(plain.forward(x), forward_ebh(sd, x), rtol=1e-12, atol=1e-12)


def _write_safetensors(path, tensors: dict) -> None:
    """A safetensors file in pure Python: a little-endian u64 header length,
    the JSON header, the data."""
    import struct

    header, chunks, offset = {}, [], 0
    for name, value in tensors.items():
        data = np.ascontiguousarray(value, dtype="<f8").tobytes()
        header[name] = {"dtype": "F64", "shape": list(np.shape(value)), "data_offsets": [offset, offset + len(data)]}
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


# -- errors ------------------------------------------------------------------


def test_a_wrong_shape_names_the_tensor():
    sd = embed_body_head(21)
    sd["body.0.r.weight"] = sd["body.0.r.weight"][:, :3]
    with pytest.raises(ts.TensorSimilarityError, match="body.0.r.weight"):
        ts.Model.from_state_dict(sd)


def test_an_unused_tensor_is_an_error():
    sd = embed_body_head(22)
    sd["norm.weight"] = np.ones(4)
    with pytest.raises(ts.TensorSimilarityError, match="norm.weight"):
        ts.Model.from_state_dict(sd)


def test_integer_and_non_finite_tensors_are_errors_naming_them():
    sd = embed_body_head(23)
    sd["head.bias"] = np.array([1, 2])
    with pytest.raises(ts.TensorSimilarityError, match="head.bias"):
        ts.Model.from_state_dict(sd)
    sd = embed_body_head(23)
    sd["embed.weight"][1, 2] = np.nan
    with pytest.raises(ts.TensorSimilarityError, match="embed.weight"):
        ts.Model.from_state_dict(sd)


def test_unknown_names_and_metadata_keys_are_errors():
    with pytest.raises(ts.TensorSimilarityError, match="conv.weight"):
        ts.Model.from_state_dict({"conv.weight": np.ones((2, 2))})
    sd, blocks = linear_chain(24)
    blocks[0]["bais"] = "lin0.bias"
    with pytest.raises(ts.TensorSimilarityError, match="bais"):
        ts.Model.from_state_dict(sd, layout=blocks)
    with pytest.raises(ts.TensorSimilarityError, match="JSON"):
        ts.Model.from_state_dict(sd, layout="{not json")


def test_wrong_python_types_are_type_errors():
    sd = embed_body_head(25)
    with pytest.raises(TypeError):
        ts.Model.from_state_dict([("embed.weight", np.ones((2, 2)))])
    with pytest.raises(TypeError):
        ts.Model.from_state_dict({1: np.ones((2, 2))})
    with pytest.raises(TypeError):
        ts.Model.from_state_dict(sd, layout=42)
    with pytest.raises(TypeError):
        ts.Model.from_state_dict(sd, residual=0.5)
    with pytest.raises(TypeError):
        ts.Model.from_state_dict({"embed.weight": object()})
    with pytest.raises(TypeError):
        ts.Model("not a model")
    with pytest.raises(TypeError):
        ts.similarity(ts.Model.from_state_dict(sd), 3)


def test_a_missing_file_names_the_path(tmp_path):
    with pytest.raises(ts.TensorSimilarityError, match="missing.safetensors"):
        ts.load(tmp_path / "missing.safetensors")


def test_forward_checks_its_input():
    model = ts.Model.from_state_dict(embed_body_head(26))
    with pytest.raises(ts.TensorSimilarityError, match="input"):
        model.forward(np.ones((2, 5)))
    with pytest.raises(ts.TensorSimilarityError):
        model.forward(np.ones((2, 3, 3)))


def test_repr_shows_blocks_widths_and_layout():
    text = repr(ts.Model.from_state_dict(embed_body_head(27)))
    assert text.startswith("Model(linear 3→4, bilinear 4→4, linear 4→2; input 3, output 2;")
    assert "embed_body_head" in text


def test_a_model_pickles_as_its_weights():
    import pickle

    sd, blocks = attention_model(28)
    for model in (ts.Model.from_state_dict(embed_body_head(28), residual_scale=0.5),
                  ts.Model.from_state_dict(sd, layout=blocks)):
        back = pickle.loads(pickle.dumps(model))
        x = np.eye(5)[[0, 1]] if model.is_sequence else np.ones((2, 3))
        np.testing.assert_array_equal(back.forward(x), model.forward(x))
        assert back.is_sequence == model.is_sequence
