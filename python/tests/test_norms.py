"""The attention-only language model's normalisations from Python (SPEC §8):
integer counters (`num_batches_tracked`) in a state_dict, the constant
norms folded and listed in `Model.norms`, the input-dependent ones refused
by name, and `ignore_norms=True`, which reads a model without its norms and
says so (a `NormsRemovedWarning`, `norms_removed`, the repr)."""

from __future__ import annotations

import json
import pickle
import struct
import warnings

import numpy as np
import pytest

import tensor_similarity as ts
from conftest import embed_body_head

VOCAB, D, HEADS = 7, 4, 2


def config(norm_type: str = "tok0_batch", places=("pre_unembed",)) -> dict:
    return {
        "model": {
            "vocab_size": VOCAB, "d_model": D, "n_head": HEADS, "n_layers": 1,
            "attn_scale": 0.35, "rope_base": 10000.0, "use_bias_qk": True,
            "attn_type": "bilinear", "norm_type": norm_type, "norm_places": list(places),
        }
    }


def lm(seed: int) -> dict:
    """A one-layer research LM without norms, float32 as runs save it."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: (rng.normal(size=shape) * 0.5).astype(np.float32)  # noqa: E731
    sd = {"embed.weight": w(VOCAB, D)}
    for k in ("q1", "k1", "q2", "k2", "v", "o"):
        sd[f"layers.0.{k}.weight"] = w(D, D)
    for k in ("q1", "k1", "q2", "k2"):
        sd[f"layers.0.{k}.bias"] = w(D)
    sd["unembed.weight"] = w(VOCAB, D)
    return sd


def tok0_batch(seed: int, energy: float = 2.5, count=np.int64(100)) -> dict:
    sd = lm(seed)
    sd["final_norm.running_mean_energy"] = np.array(energy, dtype=np.float32)
    sd["final_norm.num_batches_tracked"] = np.asarray(count)
    return sd


def batchnorm(seed: int) -> dict:
    sd = lm(seed)
    rng = np.random.default_rng(seed + 100)
    sd["embed_norm.bn.weight"] = rng.uniform(0.5, 1.5, D).astype(np.float32)
    sd["embed_norm.bn.bias"] = rng.normal(size=D).astype(np.float32)
    sd["embed_norm.bn.running_mean"] = rng.normal(size=D).astype(np.float32)
    sd["embed_norm.bn.running_var"] = rng.uniform(0.5, 2.0, D).astype(np.float32)
    sd["embed_norm.bn.num_batches_tracked"] = np.array(40, dtype=np.int64)
    return sd


def rmsnorm(seed: int) -> dict:
    sd = lm(seed)
    sd["final_norm.weight"] = np.random.default_rng(seed + 200).uniform(0.5, 1.5, D).astype(np.float32)
    return sd


def plain(sd: dict) -> ts.Model:
    """The same LM without any norm."""
    weights = {k: v for k, v in sd.items() if k.startswith(("embed.", "layers.", "unembed."))}
    return ts.Model.from_state_dict(weights, config=config("none", ()))


def tokens(*ids: int) -> np.ndarray:
    return np.eye(VOCAB)[list(ids)]


def test_integer_counters_are_read_and_listed_as_i64():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a folded norm warns nothing
        m = ts.Model.from_state_dict(tok0_batch(1), config=config())
    counter = [t for t in m.tensors if t["name"] == "final_norm.num_batches_tracked"]
    assert len(counter) == 1 and counter[0]["dtype"] == "I64" and counter[0]["shape"] == []
    energy = [t for t in m.tensors if t["name"] == "final_norm.running_mean_energy"]
    assert energy[0]["dtype"] == "F32" and energy[0]["shape"] == []
    # An int32 counter, a NumPy integer scalar, a [1]-shaped one: all counters.
    for count in (np.array(7, dtype=np.int32), np.int64(3), np.array([5], dtype=np.int64)):
        other = ts.Model.from_state_dict(tok0_batch(1, count=count), config=config())
        assert ts.similarity(m, other, context=2) == pytest.approx(1.0, abs=1e-12)
    # Buffers are not parameters: the count is the LM's weights alone.
    assert m.parameter_count == plain(lm(1)).parameter_count


def test_an_integer_weight_and_bool_or_complex_tensors_are_errors_naming_them():
    sd = tok0_batch(2)
    sd["unembed.weight"] = np.ones((VOCAB, D), dtype=np.int64)
    with pytest.raises(ts.FileError, match=r'"unembed\.weight" has dtype I64'):
        ts.Model.from_state_dict(sd, config=config())
    for bad in (np.array(True), np.array(1 + 2j)):
        sd = tok0_batch(2)
        sd["final_norm.num_batches_tracked"] = bad
        with pytest.raises(ts.FileError, match="final_norm.num_batches_tracked"):
            ts.Model.from_state_dict(sd, config=config())


def test_tok0_batch_is_folded_and_listed():
    sd = tok0_batch(3, energy=2.5)
    m = ts.Model.from_state_dict(sd, config=config())
    scale = (2.5 + 1e-6) ** -0.5  # 2.5 is exact in float32
    assert m.norms == [{
        "kind": "tok0_batch", "place": "pre_unembed", "eps": 1e-6, "folded": True,
        "scale": pytest.approx((scale, scale), rel=1e-12), "shift": None,
    }]
    assert m.norms_removed is False and "without its norms" not in repr(m)
    # Folded exactly: the unembedding scaled.
    scaled = dict(lm(3), **{"unembed.weight": sd["unembed.weight"].astype(np.float64) * scale})
    x = tokens(0, 3, 5)
    np.testing.assert_allclose(m.forward(x), plain(scaled).forward(x), rtol=1e-12, atol=1e-12)
    assert plain(lm(3)).norms == []


def test_batchnorm_after_the_embedding_is_folded_with_its_shift():
    sd = batchnorm(4)
    m = ts.Model.from_state_dict(sd, config=config("batchnorm", ["post_embed"]))
    (norm,) = m.norms
    g = sd["embed_norm.bn.weight"].astype(np.float64) / np.sqrt(
        sd["embed_norm.bn.running_var"].astype(np.float64) + 1e-5)
    h = sd["embed_norm.bn.bias"] - g * sd["embed_norm.bn.running_mean"]
    assert (norm["kind"], norm["place"], norm["eps"], norm["folded"]) == ("batchnorm", "post_embed", 1e-5, True)
    assert norm["scale"] == pytest.approx((g.min(), g.max()), rel=1e-12)
    assert norm["shift"] == pytest.approx((h.min(), h.max()), rel=1e-10)
    assert {t["dtype"] for t in m.tensors if t["name"].endswith("num_batches_tracked")} == {"I64"}


def test_an_input_dependent_norm_is_refused_naming_ignore_norms():
    with pytest.raises(ts.FileError, match=r"rmsnorm.*ignore_norms=") as e:
        ts.Model.from_state_dict(rmsnorm(5), config=config("rmsnorm"))
    assert "--ignore-norms" not in str(e.value) and "LoadOptions" not in str(e.value)


def test_ignore_norms_reads_the_model_without_them_and_says_so():
    with pytest.warns(ts.NormsRemovedWarning, match=r"^state_dict: read without its norms.*rmsnorm at pre_unembed"):
        a = ts.Model.from_state_dict(rmsnorm(6), config=config("rmsnorm"), ignore_norms=True)
    assert a.norms_removed is True
    assert a.norms == [{"kind": "rmsnorm", "place": "pre_unembed", "eps": 1e-6, "folded": False,
                        "scale": None, "shift": None}]
    assert "without its norms (rmsnorm at pre_unembed removed by ignore_norms=True)" in repr(a)
    # The model without its norms: the LM's weights alone.
    x = tokens(1, 2, 6)
    np.testing.assert_allclose(a.forward(x), plain(rmsnorm(6)).forward(x), rtol=1e-12, atol=1e-12)
    with pytest.warns(ts.NormsRemovedWarning):
        b = ts.Model.from_state_dict(rmsnorm(7), config=config("rmsnorm"), ignore_norms=True)
    s = ts.similarity(a, b, context=2)
    assert isinstance(s, float) and -1 <= s <= 1
    assert ts.similarity(a, plain(rmsnorm(6)), context=2) == pytest.approx(1.0, abs=1e-12)
    # The constant norms are removed too.
    with pytest.warns(ts.NormsRemovedWarning, match="tok0_batch at pre_unembed"):
        t = ts.Model.from_state_dict(tok0_batch(6), config=config(), ignore_norms=True)
    assert t.norms_removed and not t.norms[0]["folded"]
    # A model pickled (multiprocessing, Dask tasks) still says so.
    back = pickle.loads(pickle.dumps(a))
    assert back.norms_removed and back.norms == a.norms and "without its norms" in repr(back)
    assert back.layout == "described"


def test_ignore_norms_without_norms_to_remove_warns_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = ts.Model.from_state_dict(lm(8), config=config("none", ()), ignore_norms=True)
        folded = ts.Model.from_state_dict(tok0_batch(8), config=config(), ignore_norms=False)
    assert m.norms == [] and not m.norms_removed and not folded.norms_removed


def test_ignore_norms_is_refused_where_no_layout_reads_it():
    sd = embed_body_head(9)
    with pytest.raises(ts.OptionError, match=r"^ignore_norms= applies to none of the models: embed/body/head"):
        ts.Model.from_state_dict(sd, ignore_norms=True)
    # False is the default: not given.
    assert ts.Model.from_state_dict(sd, ignore_norms=False).layout == "embed_body_head"
    with pytest.raises(TypeError, match="ignore_norms= is True or False"):
        ts.Model.from_state_dict(sd, ignore_norms="yes")
    assert "ignore_norms" in ts.LOAD_OPTIONS


def _write_safetensors(path, sd: dict) -> None:
    """A safetensors file by hand (no dependency): float32 and int64."""
    header, blobs, offset = {}, [], 0
    for name, value in sd.items():
        a = np.ascontiguousarray(value)
        a = a.astype("<i8") if a.dtype.kind == "i" else a.astype("<f4")
        data = a.tobytes()
        header[name] = {"dtype": "I64" if a.dtype.kind == "i" else "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_files_read_without_norms_are_named_in_the_warning(tmp_path):
    paths = []
    for seed in (10, 11):
        folder = tmp_path / f"run{seed}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config("rmsnorm")))
        path = folder / "model.safetensors"
        _write_safetensors(path, rmsnorm(seed))
        paths.append(path)
    with pytest.raises(ts.FileError, match="ignore_norms="):
        ts.load(paths[0])
    with pytest.warns(ts.NormsRemovedWarning, match=f"^{paths[0]}: read without its norms") as caught:
        m = ts.load(paths[0], ignore_norms=True)
    assert caught[0].filename == __file__  # pointed at the caller, not the package
    assert m.norms_removed
    with pytest.warns(ts.NormsRemovedWarning, match=r"2 of 2 models read without their norms") as caught:
        sims = ts.matrix(paths, context=2, ignore_norms=True, progress=False)
    assert len([w for w in caught if w.category is ts.NormsRemovedWarning]) == 1
    assert str(paths[1]) in str(caught[0].message)
    assert sims.shape == (2, 2) and -1 <= sims[0, 1] <= 1
