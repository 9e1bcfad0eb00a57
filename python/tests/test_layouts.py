"""Models as users write them, described with ``layout=``: a
TransformerLens-style module (per-head 3-D weights) and a custom one with
``x @ W`` weights, against the logits PyTorch computed for it
(tests/files/torch/make_tl_attention.py), and the error that names the
closest research layout when the names fit none."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import tensor_similarity as ts

FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "files" / "torch" / "tl_attention.json"
pytestmark = pytest.mark.skipif(not FIXTURE.is_file(), reason="not in a checkout of the repository")


@pytest.fixture(scope="module")
def tl():
    data = json.loads(FIXTURE.read_text())
    data["tensors"] = {
        name: np.asarray(values, dtype=np.float64).reshape(data["shapes"][name])
        for name, values in data["state_dict"].items()
    }
    return data


def one_hot(tokens, vocab):
    x = np.zeros((len(tokens), vocab))
    x[np.arange(len(tokens)), tokens] = 1.0
    return x


def test_a_transformerlens_style_module_through_layout_gives_pytorchs_logits(tl):
    model = ts.Model.from_state_dict(tl["tensors"], layout=tl["layout"])
    assert model.is_sequence
    vocab = tl["shapes"]["W_E"][0]
    for tokens, logits in zip(tl["tokens"], tl["logits"]):
        out = model.forward(one_hot(tokens, vocab))
        np.testing.assert_allclose(out, np.asarray(logits), rtol=0, atol=1e-12)


def test_per_head_weights_without_their_axes_name_the_key_to_add(tl):
    layout = copy.deepcopy(tl["layout"])
    layout[1] = {k: v for k, v in layout[1].items() if not k.endswith("_axes")}
    with pytest.raises(ts.FileError, match=r'"q1_axes": \["heads", "d_model", "d_head"\]'):
        ts.Model.from_state_dict(tl["tensors"], layout=layout)


def test_names_no_layout_fits_get_the_closest_layout_and_the_layout_keyword(tl):
    tensors = {
        "embed.weight": tl["tensors"]["W_E"],
        "unembed.weight": tl["tensors"]["W_E"],
        "attn.W_Q": tl["tensors"]["blocks.0.W_Q1"],
    }
    for options in ({}, {"heads": 2}):
        with pytest.raises(ts.FileError) as info:
            ts.Model.from_state_dict(tensors, **options)
        message = str(info.value)
        for part in ("attention-only LM", "layers.0.q1.weight", '"attn.W_Q"', "layout="):
            assert part in message, message
