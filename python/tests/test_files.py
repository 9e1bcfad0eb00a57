"""Files written by real PyTorch (the repository's tests/files/torch/):
`.pt` checkpoints read as their safetensors twins, a language-model run
with its config, against the logits of an independent forward pass."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import tensor_similarity as ts

FILES = Path(__file__).resolve().parents[2] / "tests" / "files" / "torch"
pytestmark = pytest.mark.skipif(not FILES.is_dir(), reason="not in a checkout of the repository")


@pytest.mark.parametrize("dtype", ["f64", "f32", "f16", "bf16"])
def test_a_pt_file_is_its_safetensors_twin(dtype):
    pt, st = ts.load(FILES / f"ebh_{dtype}.pt"), ts.load(FILES / f"ebh_{dtype}.safetensors")
    assert pt.layout == st.layout == "embed_body_head"
    assert {t["dtype"] for t in pt.tensors} == {dtype.upper()}
    x = np.random.default_rng(0).normal(size=(4, 3))
    np.testing.assert_array_equal(pt.forward(x), st.forward(x))
    assert ts.similarity(pt, st) == pytest.approx(1.0, abs=1e-12)


def test_wrapped_and_gpu_tagged_checkpoints():
    twin = ts.load(FILES / "ebh_f32.safetensors")
    x = np.ones((1, 3))
    for name in ("ebh_wrapped.pt", "cuda_tagged.pt", "views.pt"):
        m = ts.load(FILES / name)
        ref = twin if name != "views.pt" else ts.load(FILES / "views.safetensors")
        np.testing.assert_array_equal(m.forward(x), ref.forward(x))


def test_an_integer_tensor_in_a_checkpoint_is_named():
    with pytest.raises(ts.TensorSimilarityError, match="num_batches_tracked"):
        ts.load(FILES / "with_int.pt")


def test_a_language_model_run_reads_with_its_config():
    run = FILES / "runs" / "tiny_lm"
    lm = ts.load(run / "checkpoints" / "step_100.pt")
    assert lm.layout == "attention_lm" and lm.is_sequence
    assert lm.native_context == 16
    assert lm.config is not None and os.path.basename(lm.config) == "config.yaml"
    expected = json.loads((run / "expected.json").read_text())
    for case in expected["sequences"]:
        tokens = np.eye(lm.input_width)[case["tokens"]]
        np.testing.assert_allclose(lm.forward(tokens), case["logits"], rtol=1e-10, atol=1e-10)
    early = ts.load(run / "checkpoints" / "step_20.pt")
    s = ts.similarity(early, lm, context=3)
    assert -1 < s < 1
    m = ts.matrix(sorted((run / "checkpoints").glob("*.pt")), context=3, progress=False)
    assert m[0, 1] == pytest.approx(s, abs=1e-12)


def test_huge_contexts_are_refused_with_what_fits():
    # Issue 26: a context whose comparison cannot fit in memory is refused at
    # once, naming the estimate and the largest context that fits, never a
    # crash; max_memory= sets the limit.
    run = FILES / "runs" / "tiny_lm" / "checkpoints"
    early, late = run / "step_20.pt", run / "step_100.pt"
    for n in (2**60, 2**64 - 1, 10_000):
        for metric in ("tensor", "gaussian"):
            with pytest.raises(ts.TensorSimilarityError, match="the largest context that fits is"):
                ts.similarity(early, late, metric, context=n)
    with pytest.raises(ts.TensorSimilarityError, match=r"more than the limit of 30\.0 MB") as e:
        ts.similarity(early, late, context=32, max_memory=30_000_000)
    fits = int(str(e.value).rsplit(" ", 1)[-1])
    assert 8 <= fits < 32
    assert -1 <= ts.similarity(early, late, context=fits, max_memory=30_000_000) <= 1
    with pytest.raises(ts.TensorSimilarityError, match="the largest context that fits"):
        ts.matrix([early, late], context=10_000, progress=False)
    with pytest.raises(TypeError, match="max_memory"):
        ts.similarity(early, late, context=2, max_memory="16G")
    with pytest.raises(ts.TensorSimilarityError, match="does not take max_memory"):
        ts.similarity(early, late, "weight", max_memory=1 << 30)


@pytest.mark.parametrize("depth", [1, 2])
def test_an_additive_residual_mlp_gives_pytorchs_logits_with_skip(depth):
    # x = x + d(l(x) * r(x)) under the embed/body/head names, written by
    # PyTorch with its logits (tests/files/torch/make_additive.py).
    path = FILES / f"ebh_additive_{depth}.pt"
    data = json.loads((FILES / f"ebh_additive_{depth}.json").read_text())
    inputs, logits = np.array(data["inputs"]), np.array(data["logits"])
    additive = ts.load(path, skip=1)
    np.testing.assert_allclose(additive.forward(inputs), logits, rtol=1e-12, atol=1e-12)
    assert not any("residual absent" in a for a in additive.assumptions)
    # Without skip=, no residual, and the assumption names the keyword.
    plain = ts.load(path)
    assert any("residual absent" in a and "skip=1" in a for a in plain.assumptions)
    assert np.abs(plain.forward(inputs) - logits).max() > 1e-2
    # skip= with residual_scale= as α.
    scaled = ts.load(path, skip=1, residual_scale=0.5)
    assert np.abs(scaled.forward(inputs) - logits).max() > 1e-3


# -- Issue 27: config keys, rope_base=, config= as a dict, keyword errors --

#: The tiny_lm fixtures' one assumption: their final norm has no
#: num_batches_tracked, so its stored energy is read as a tracked one's.
COUNTER_ABSENT = (
    "final_norm.num_batches_tracked absent: the tok0_batch norm at pre_unembed is read with "
    "its stored running_mean_energy (0.9525368213653564)"
)

#: The tiny_lm fixture's config, as its config.yaml parses.
TINY_LM_CONFIG = {
    "model": {
        "vocab_size": 11, "d_model": 8, "n_head": 2, "n_layers": 2, "attn_scale": 0.35,
        "attn_type": "bilinear", "rope_base": 500.0, "use_bias_qk": True, "n_ctx": 16,
        "norm_type": "tok0_batch", "norm_places": ["pre_unembed"], "norm_kwargs": {"eps": 1e-6},
        "use_rmsnorm_qk": False,
    },
    "train": {"seed": 0, "lr": 0.01},
}


def _check_pytorch_logits(lm):
    expected = json.loads((FILES / "runs" / "tiny_lm" / "expected.json").read_text())
    for case in expected["sequences"]:
        tokens = np.eye(lm.input_width)[case["tokens"]]
        np.testing.assert_allclose(lm.forward(tokens), case["logits"], rtol=1e-10, atol=1e-10)


def _alone(tmp_path, name="step_100.pt"):
    """A copy of the run's checkpoint two folders deep, with no config above it."""
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    path = folder / name
    path.write_bytes((FILES / "runs" / "tiny_lm" / "checkpoints" / name).read_bytes())
    return path


def test_config_as_a_dict_is_the_model_of_the_path(tmp_path):
    run = FILES / "runs" / "tiny_lm"
    ckpt = _alone(tmp_path)
    by_path = ts.load(ckpt, config=run / "config.yaml")
    by_dict = ts.load(ckpt, config=TINY_LM_CONFIG)
    _check_pytorch_logits(by_dict)
    x = np.eye(11)[[1, 4, 7, 2]]
    np.testing.assert_array_equal(by_dict.forward(x), by_path.forward(x))
    assert by_dict.native_context == 16 and by_dict.assumptions == [COUNTER_ABSENT]
    assert by_dict.config is None and os.path.basename(by_path.config) == "config.yaml"
    early = _alone(tmp_path / "early", "step_20.pt")
    assert ts.similarity(early, ckpt, context=3, config=TINY_LM_CONFIG) == ts.similarity(
        early, ckpt, context=3, config=run / "config.yaml"
    )
    # A dict is read as strictly as the file: checked against the tensors,
    # errors naming the dict and the keyword.
    bad = {"model": dict(TINY_LM_CONFIG["model"], n_layers=3)}
    with pytest.raises(ts.FileError, match=r"config \(the dict given as config=\): model.n_layers"):
        ts.load(ckpt, config=bad)
    with pytest.raises(ts.FileError, match="no \"model\" section"):
        ts.load(ckpt, config={"n_head": 2})
    with pytest.raises(ts.FileError, match="must be a non-negative integer"):
        ts.load(ckpt, config={"model": dict(TINY_LM_CONFIG["model"], n_head="two")})
    with pytest.raises(ts.FileError, match="must be a positive finite number"):
        ts.load(ckpt, config={"model": dict(TINY_LM_CONFIG["model"], rope_base=float("inf"))})
    # NumPy numbers and tuples read as the numbers and lists they are.
    numpy_dict = {"model": dict(TINY_LM_CONFIG["model"], n_head=np.int64(2),
                                attn_scale=np.float64(0.35), norm_places=("pre_unembed",),
                                use_bias_qk=np.bool_(True), dropout=np.float32(0.25))}
    from_numpy = ts.load(ckpt, config=numpy_dict)
    np.testing.assert_array_equal(from_numpy.forward(x), by_dict.forward(x))
    assert from_numpy.ignored_config_keys == {"dropout": 0.25}
    with pytest.raises(ts.OptionError, match=r"config=: the config.model has the key 1"):
        ts.load(ckpt, config={"model": {1: 2}})
    with pytest.raises(ts.OptionError, match=r"the config.model.x is a set"):
        ts.load(ckpt, config={"model": {"x": {1}}})
    with pytest.raises(TypeError, match="config= is a path"):
        ts.load(ckpt, config=3)


def test_function_free_config_keys_change_nothing_and_are_listed(tmp_path):
    ckpt = _alone(tmp_path)
    extra = {"dropout": 0.1, "attn_dropout": 0.0, "init_std": 0.02, "lr": 3e-4,
             "weight_decay": 0.1, "betas": [0.9, 0.95], "warmup_steps": 100, "seed": 1,
             "device": "cuda", "dtype": "bfloat16", "compile": True,
             "optimizer": {"name": "adamw", "eps": 1e-8}}
    config = {"model": dict(TINY_LM_CONFIG["model"], **extra)}
    lm = ts.load(ckpt, config=config)
    _check_pytorch_logits(lm)
    assert lm.ignored_config_keys == extra
    assert list(lm.ignored_config_keys) == sorted(extra)
    assert ts.load(ckpt, config=TINY_LM_CONFIG).ignored_config_keys == {}
    early = _alone(tmp_path / "early", "step_20.pt")
    plain = ts.similarity(ts.load(early, config=TINY_LM_CONFIG), ts.load(ckpt, config=TINY_LM_CONFIG), context=3)
    assert ts.similarity(ts.load(early, config=config), lm, context=3) == plain
    # A key that may change the function (a norm's eps) is still refused,
    # with advice a .pt file can follow, in Python's words.
    with pytest.raises(ts.FileError) as e:
        ts.load(ckpt, config={"model": dict(TINY_LM_CONFIG["model"], eps=1e-5, dropout=0.1)})
    message = str(e.value)
    assert 'unknown model key "eps"' in message
    assert "without it with config= (a path or a dict)" in message and "layout=" in message
    assert "--config" not in message and "LoadOptions" not in message


def test_rope_base_stands_in_for_the_config_and_must_agree(tmp_path):
    ckpt = _alone(tmp_path)
    without = {"model": {k: v for k, v in TINY_LM_CONFIG["model"].items() if k != "rope_base"}}
    lm = ts.load(ckpt, config=without, rope_base=500)
    _check_pytorch_logits(lm)
    assert lm.assumptions == [COUNTER_ABSENT]
    assert ts.load(ckpt, config=without).assumptions == ["rope_base absent: 10000", COUNTER_ABSENT]
    # The config's own value again agrees; another is an error naming both.
    _check_pytorch_logits(ts.load(ckpt, config=TINY_LM_CONFIG, rope_base=500.0))
    with pytest.raises(ts.FileError, match=r"model.rope_base is 500, but rope_base= says 1000$"):
        ts.load(ckpt, config=TINY_LM_CONFIG, rope_base=1000)
    with pytest.raises(ts.FileError, match=r"rope_base=: a rotary base must be a positive"):
        ts.load(ckpt, config=without, rope_base=-1.0)


def test_errors_name_python_keywords_not_flags(tmp_path):
    ckpt = _alone(tmp_path)
    no_heads = {"model": {k: v for k, v in TINY_LM_CONFIG["model"].items() if k != "n_head"}}
    with pytest.raises(ts.FileError) as e:
        ts.load(ckpt, config=no_heads)
    message = str(e.value)
    assert message.endswith("config= (a path or a dict), or heads=")
    with pytest.raises(ts.FileError) as e:
        ts.load(ckpt, config=TINY_LM_CONFIG, heads=4)
    assert str(e.value).endswith("model.n_head is 2, but heads= says 4")
    with pytest.raises(ts.FileError) as e:
        ts.load(ckpt, config=dict(TINY_LM_CONFIG, model=dict(TINY_LM_CONFIG["model"], attn_scale=None)))
    assert str(e.value).endswith("or attn_scale=")
    for text in (message, str(e.value)):
        assert "--" not in text and "LoadOptions" not in text
    # Without a config beside it, a checkpoint needs one: the keywords say how.
    with pytest.raises(ts.FileError, match=r"config= \(a path or a dict\), or heads=$"):
        ts.load(ckpt)


# -- Issue 21: the research Transformer, read with its fixed rotary --


def test_the_research_transformer_is_read_with_rotary_10000(tmp_path):
    """PyTorch's research Transformer (make_transformer.py): without a config
    its logits are PyTorch's with rotary base 10000, rope_base= is refused as
    an option it does not read, and a config's mask: none gives the no-mask
    logits."""
    expected = json.loads((FILES / "transformer.json").read_text())
    folder = tmp_path / "run" / "checkpoints"
    folder.mkdir(parents=True)
    ckpt = folder / "model.pt"
    ckpt.write_bytes((FILES / "transformer.pt").read_bytes())

    def check(model, key):
        for x, want in zip(expected["inputs"], expected[key]):
            np.testing.assert_allclose(model.forward(np.array(x)), want, rtol=1e-10, atol=1e-10)

    m = ts.load(ckpt, heads=2, residual_scale=0.7)
    assert m.layout == "transformer"
    assert m.assumptions == ["mask absent: causal"]
    check(m, "logits_causal")
    # rope_base= does not apply: refused, as the command line refuses it.
    with pytest.raises(ts.OptionError, match=r"rope_base= applies to none of the models.*fixed at 10000"):
        ts.load(ckpt, heads=2, residual_scale=0.7, rope_base=500)
    config = {"model": dict(expected["config"]["model"], mask="none")}
    check(ts.load(ckpt, config=config), "logits_none")
    with pytest.raises(ts.FileError, match=r"model\.rope_base: the research Transformer has no rope_base key"):
        ts.load(ckpt, config={"model": dict(config["model"], rope_base=10000.0)})


def test_an_option_no_model_reads_is_refused_as_on_the_command_line():
    """heads= on a vector model was accepted without a word; the command
    line refuses it ("--heads applies to none of the files")."""
    path = FILES / "ebh_f64.safetensors"
    with pytest.raises(ts.OptionError, match=r"^heads= applies to none of the models: embed/body/head"):
        ts.load(path, heads=4)
    with pytest.raises(ts.OptionError, match=r"heads= applies to none"):
        ts.matrix([path, path], heads=4)
    rng = np.random.default_rng(0)
    state_dict = {
        name: rng.normal(size=shape)
        for name, shape in [("embed.weight", (4, 3)), ("body.0.l.weight", (5, 4)),
                            ("body.0.r.weight", (5, 4)), ("body.0.d.weight", (4, 5)),
                            ("head.weight", (2, 4))]
    }
    with pytest.raises(ts.OptionError, match=r"attn_scale= applies to none"):
        ts.Model.from_state_dict(state_dict, attn_scale=0.35)
    # Options a layout does read are still accepted.
    assert ts.Model.from_state_dict(state_dict, skip=1).layout == "embed_body_head"
    assert ts.load(path, skip=1).layout == "embed_body_head"
