"""Writes tests/files/torch/tl_attention.json with real PyTorch.

A two-layer bilinear-attention language model as users write their own,
not under any research layout's names:

* layer 0 in the TransformerLens convention: per-head 3-D weights
  `W_Q1 … W_V` `[heads, d_model, d_head]`, `W_O` `[heads, d_head, d_model]`,
  per-head biases `b_Q1 … b_V` `[heads, d_head]`, `b_O` `[d_model]`,
  applied as `x @ W`;
* layer 1 with 2-D weights applied as `x @ W` (stored `[in, out]`, the
  transpose of `nn.Linear.weight`), without biases;
* an embedding table `W_E` `[vocab, d_model]` and an unembedding `W_U`
  `[d_model, vocab]` with `b_U`, also applied as `x @ W_U`.

Each attention layer is `x + α·O(z)`, with the scores
`(q1·k1)(q2·k2)/d_head²` under a causal mask and rotary position encoding
in the "half" layout (dimension j pairs with j + d_head/2) with base 500.

The JSON holds the state_dict (float64 values as nested lists, exactly as
PyTorch holds them), the layout that describes it to tensor-similarity,
token sequences and PyTorch's logits for them. Run by hand, not by CI (CI
has no torch):

    python tests/files/torch/make_tl_attention.py

from the repository root. Seeded; README.md beside this script says which
torch wrote the committed file.
"""

import json
import pathlib

import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent

VOCAB, D_MODEL, HEADS, D_HEAD, ALPHA, BASE = 11, 8, 2, 4, 0.35, 500.0


def rotary(x):
    """Rotary encoding of x [heads, n, e] at positions 0 … n−1, half layout."""
    e = x.shape[-1]
    half = e // 2
    pos = torch.arange(x.shape[-2], dtype=x.dtype)[:, None]
    freq = BASE ** (-2.0 * torch.arange(half, dtype=x.dtype) / e)
    angle = pos * freq
    cos, sin = torch.cos(angle), torch.sin(angle)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def scores(q1, k1, q2, k2):
    """Causal bilinear scores [heads, s, t]."""
    n = q1.shape[-2]
    p = (q1 @ k1.transpose(-1, -2)) * (q2 @ k2.transpose(-1, -2)) / D_HEAD**2
    return p * torch.tril(torch.ones(n, n, dtype=q1.dtype))


class PerHeadAttention(nn.Module):
    """TransformerLens-style: 3-D per-head weights and 2-D per-head biases."""

    def __init__(self):
        super().__init__()
        shape_in, shape_out = (HEADS, D_MODEL, D_HEAD), (HEADS, D_HEAD, D_MODEL)
        for name in ("W_Q1", "W_K1", "W_Q2", "W_K2", "W_V"):
            setattr(self, name, nn.Parameter(torch.randn(shape_in) / D_MODEL**0.5))
        self.W_O = nn.Parameter(torch.randn(shape_out) / (HEADS * D_HEAD) ** 0.5)
        for name in ("b_Q1", "b_K1", "b_Q2", "b_K2", "b_V"):
            setattr(self, name, nn.Parameter(0.3 * torch.randn(HEADS, D_HEAD)))
        self.b_O = nn.Parameter(0.3 * torch.randn(D_MODEL))

    def forward(self, x):
        def project(w, b):
            return torch.einsum("sd,hde->hse", x, w) + b[:, None, :]

        q1 = rotary(project(self.W_Q1, self.b_Q1))
        k1 = rotary(project(self.W_K1, self.b_K1))
        q2 = rotary(project(self.W_Q2, self.b_Q2))
        k2 = rotary(project(self.W_K2, self.b_K2))
        v = project(self.W_V, self.b_V)
        z = scores(q1, k1, q2, k2) @ v
        return x + ALPHA * (torch.einsum("hse,hed->sd", z, self.W_O) + self.b_O)


class FlatAttention(nn.Module):
    """Custom attention with 2-D weights applied as x @ W ([in, out])."""

    def __init__(self):
        super().__init__()
        width = HEADS * D_HEAD
        for name in ("w_q1", "w_k1", "w_q2", "w_k2", "w_v"):
            setattr(self, name, nn.Parameter(torch.randn(D_MODEL, width) / D_MODEL**0.5))
        self.w_out = nn.Parameter(torch.randn(width, D_MODEL) / width**0.5)

    def forward(self, x):
        def heads(w):
            return (x @ w).reshape(-1, HEADS, D_HEAD).transpose(0, 1)

        q1, k1 = rotary(heads(self.w_q1)), rotary(heads(self.w_k1))
        q2, k2 = rotary(heads(self.w_q2)), rotary(heads(self.w_k2))
        z = scores(q1, k1, q2, k2) @ heads(self.w_v)
        return x + ALPHA * (z.transpose(0, 1).reshape(-1, HEADS * D_HEAD) @ self.w_out)


class Lm(nn.Module):
    def __init__(self):
        super().__init__()
        self.W_E = nn.Parameter(torch.randn(VOCAB, D_MODEL))
        self.blocks = nn.ModuleList([PerHeadAttention(), FlatAttention()])
        self.W_U = nn.Parameter(torch.randn(D_MODEL, VOCAB) / D_MODEL**0.5)
        self.b_U = nn.Parameter(0.3 * torch.randn(VOCAB))

    def forward(self, tokens):
        x = self.W_E[tokens]
        for block in self.blocks:
            x = block(x)
        return x @ self.W_U + self.b_U


def layout():
    """The layout that describes Lm's state_dict to tensor-similarity."""
    per_head = ["heads", "d_model", "d_head"]
    attention = {"kind": "attention", "heads": HEADS, "rotary_base": BASE, "mask": "causal",
                 "scale": ALPHA, "skip": 1.0}
    p = "blocks.0."
    layer0 = dict(attention, **{
        "q1": p + "W_Q1", "k1": p + "W_K1", "q2": p + "W_Q2", "k2": p + "W_K2",
        "v": p + "W_V", "o": p + "W_O",
        "q1_axes": per_head, "k1_axes": per_head, "q2_axes": per_head, "k2_axes": per_head,
        "v_axes": per_head, "o_axes": ["heads", "d_head", "d_model"],
        "q1_bias": p + "b_Q1", "k1_bias": p + "b_K1", "q2_bias": p + "b_Q2",
        "k2_bias": p + "b_K2", "v_bias": p + "b_V", "o_bias": p + "b_O",
        "q1_bias_axes": ["heads", "d_head"], "k1_bias_axes": ["heads", "d_head"],
        "q2_bias_axes": ["heads", "d_head"], "k2_bias_axes": ["heads", "d_head"],
        "v_bias_axes": ["heads", "d_head"],
    })
    p = "blocks.1."
    x_at_w = ["in", "out"]
    layer1 = dict(attention, **{
        "q1": p + "w_q1", "k1": p + "w_k1", "q2": p + "w_q2", "k2": p + "w_k2",
        "v": p + "w_v", "o": p + "w_out",
        "q1_axes": x_at_w, "k1_axes": x_at_w, "q2_axes": x_at_w, "k2_axes": x_at_w,
        "v_axes": x_at_w, "o_axes": x_at_w,
    })
    return [
        {"kind": "linear", "weight": "W_E", "transpose": True},
        layer0,
        layer1,
        {"kind": "linear", "weight": "W_U", "bias": "b_U", "weight_axes": ["in", "out"]},
    ]


def main():
    torch.manual_seed(2027)
    net = Lm().double().eval()
    tokens = torch.randint(0, VOCAB, (3, 6))
    with torch.no_grad():
        logits = torch.stack([net(t) for t in tokens])
    state = {name: t.detach().tolist() for name, t in net.state_dict().items()}
    (HERE / "tl_attention.json").write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "module": "Lm: W_E, blocks.0 (TransformerLens-style 3-D per-head), "
                          "blocks.1 (2-D x @ W), W_U",
                "state_dict": state,
                "shapes": {name: list(t.shape) for name, t in net.state_dict().items()},
                "layout": layout(),
                "tokens": tokens.tolist(),
                "logits": logits.tolist(),
            },
            indent=1,
        )
        + "\n"
    )
    print("wrote tl_attention.json")


if __name__ == "__main__":
    main()
