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
    for n in (2**60, 2**64 - 1, 1000):
        for metric in ("tensor", "gaussian"):
            with pytest.raises(ts.TensorSimilarityError, match="the largest context that fits is"):
                ts.similarity(early, late, metric, context=n)
    with pytest.raises(ts.TensorSimilarityError, match=r"more than the limit of 30\.0 MB") as e:
        ts.similarity(early, late, context=12, max_memory=30_000_000)
    fits = int(str(e.value).rsplit(" ", 1)[-1])
    assert 1 <= fits < 12
    assert -1 <= ts.similarity(early, late, context=fits, max_memory=30_000_000) <= 1
    with pytest.raises(ts.TensorSimilarityError, match="the largest context that fits"):
        ts.matrix([early, late], context=1000, progress=False)
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
