"""Small models as torch-free state_dicts (NumPy arrays), and a NumPy
reference for them: forward passes and the dense end-to-end tensor."""

from __future__ import annotations

import numpy as np
import pytest

import tensor_similarity as ts


def embed_body_head(seed: int, d: int = 3, m: int = 4, h: int = 5, out: int = 2, blocks: int = 1,
                    bias: bool = True, scale: float = 1.0) -> dict:
    """The research embed/body/head layout: embed, `blocks` bilinear blocks with
    down projections, a head; optionally with every bias."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(size=shape) * scale  # noqa: E731
    sd = {"embed.weight": w(m, d)}
    if bias:
        sd["embed.bias"] = w(m)
    for i in range(blocks):
        sd[f"body.{i}.l.weight"] = w(h, m)
        sd[f"body.{i}.r.weight"] = w(h, m)
        sd[f"body.{i}.d.weight"] = w(m, h)
        if bias:
            sd[f"body.{i}.l.bias"] = w(h)
            sd[f"body.{i}.r.bias"] = w(h)
            sd[f"body.{i}.d.bias"] = w(m)
    sd["head.weight"] = w(out, m)
    if bias:
        sd["head.bias"] = w(out)
    return sd


def perturbed(sd: dict, seed: int, noise: float) -> dict:
    rng = np.random.default_rng(seed)
    return {k: v + noise * rng.normal(size=v.shape) for k, v in sd.items()}


def forward_ebh(sd: dict, x: np.ndarray, blocks: int = 1, residual: float = 1.0) -> np.ndarray:
    """embed/body/head on the rows of x, in NumPy."""
    b = lambda name, n: sd.get(name, np.zeros(n))  # noqa: E731
    hdn = x @ sd["embed.weight"].T + b("embed.bias", sd["embed.weight"].shape[0])
    for i in range(blocks):
        L, R, D = (sd[f"body.{i}.{k}.weight"] for k in "lrd")
        z = (hdn @ L.T + b(f"body.{i}.l.bias", L.shape[0])) * (hdn @ R.T + b(f"body.{i}.r.bias", R.shape[0]))
        y = z @ D.T + b(f"body.{i}.d.bias", D.shape[0])
        hdn = residual * y + (1 - residual) * hdn
    return hdn @ sd["head.weight"].T + b("head.bias", sd["head.weight"].shape[0])


def padded_linear(W: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """[[1, 0], [b, W]]."""
    n, m = W.shape
    P = np.zeros((n + 1, m + 1))
    P[0, 0] = 1
    P[1:, 1:] = W
    if bias is not None:
        P[1:, 0] = bias
    return P


def end_to_end(sd: dict) -> np.ndarray:
    """The dense end-to-end tensor of a one-block embed/body/head model,
    padded, symmetrised over its two input legs: T[o, a, b]."""
    g = lambda name: sd.get(name)  # noqa: E731
    E = padded_linear(sd["embed.weight"], g("embed.bias"))
    H = padded_linear(sd["head.weight"], g("head.bias"))
    L = padded_linear(sd["body.0.l.weight"], g("body.0.l.bias"))[1:]  # h × (m+1)
    R = padded_linear(sd["body.0.r.weight"], g("body.0.r.bias"))[1:]
    D = padded_linear(sd["body.0.d.weight"], g("body.0.d.bias"))  # (m+1) × (h+1)
    h = L.shape[0]
    # Padded bilinear tensor B[o, i, j] = Σ_ρ D̃[o, ρ] U1[ρ, i] U2[ρ, j], unit 0 the constant.
    U1 = np.vstack([np.eye(1, L.shape[1]), L])
    U2 = np.vstack([np.eye(1, R.shape[1]), R])
    B = np.einsum("or,ri,rj->oij", D[:, : h + 1], U1, U2)
    T = np.einsum("po,oij,ia,jb->pab", H, B, E, E)
    return (T + T.transpose(0, 2, 1)) / 2


def tensor_cosine(sa: dict, sb: dict) -> float:
    ta, tb = end_to_end(sa)[1:], end_to_end(sb)[1:]
    return float((ta * tb).sum() / np.sqrt((ta * ta).sum() * (tb * tb).sum()))


def linear_chain(seed: int, widths=(3, 4, 2), bias: bool = True) -> tuple:
    """Linear blocks only, with their metadata layout (a function with a
    closed-form Gaussian inner product)."""
    rng = np.random.default_rng(seed)
    sd, blocks = {}, []
    for i, (m, n) in enumerate(zip(widths, widths[1:])):
        sd[f"lin{i}.weight"] = rng.normal(size=(n, m))
        block = {"kind": "linear", "weight": f"lin{i}.weight"}
        if bias:
            sd[f"lin{i}.bias"] = rng.normal(size=n)
            block["bias"] = f"lin{i}.bias"
        blocks.append(block)
    return sd, blocks


def affine(sd: dict, n_blocks: int) -> tuple:
    """The affine map x ↦ Wx + b of a linear chain."""
    W = np.eye(sd["lin0.weight"].shape[1])
    b = np.zeros(W.shape[0])
    for i in range(n_blocks):
        Wi, bi = sd[f"lin{i}.weight"], sd.get(f"lin{i}.bias", 0)
        W, b = Wi @ W, Wi @ b + bi
    return W, b


def attention_model(seed: int, vocab: int = 5, d: int = 4, heads: int = 2, e: int = 2,
                    permute_heads: bool = False, layers: int = 1) -> tuple:
    """An embedding, ``layers`` bilinear attention blocks (the first's
    tensors ``attn.*``, the others' ``attn{i}.*``), an unembedding; the
    state_dict and its metadata layout."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(size=shape) * 0.5  # noqa: E731
    sd = {
        "embed.weight": w(d, vocab),
        "attn.q1.weight": w(heads * e, d),
        "attn.k1.weight": w(heads * e, d),
        "attn.q2.weight": w(heads * e, d),
        "attn.k2.weight": w(heads * e, d),
        "attn.v.weight": w(heads * e, d),
        "attn.o.weight": w(d, heads * e),
        "unembed.weight": w(vocab, d),
    }
    if permute_heads:
        order = np.concatenate([np.arange(h * e, (h + 1) * e) for h in reversed(range(heads))])
        for k in ("q1", "k1", "q2", "k2", "v"):
            sd[f"attn.{k}.weight"] = sd[f"attn.{k}.weight"][order]
        sd["attn.o.weight"] = sd["attn.o.weight"][:, order]
    blocks = [
        {"kind": "linear", "weight": "embed.weight"},
        {"kind": "attention", "q1": "attn.q1.weight", "k1": "attn.k1.weight",
         "q2": "attn.q2.weight", "k2": "attn.k2.weight", "v": "attn.v.weight",
         "o": "attn.o.weight", "heads": heads, "mask": "causal", "rotary_base": None,
         "skip": 1.0},
    ]
    for i in range(1, layers):
        block = {"kind": "attention", "heads": heads, "mask": "causal", "rotary_base": None,
                 "skip": 1.0}
        for k, shape in (("q1", (heads * e, d)), ("k1", (heads * e, d)), ("q2", (heads * e, d)),
                         ("k2", (heads * e, d)), ("v", (heads * e, d)), ("o", (d, heads * e))):
            sd[f"attn{i}.{k}.weight"] = w(*shape)
            block[k] = f"attn{i}.{k}.weight"
        blocks.append(block)
    blocks.append({"kind": "linear", "weight": "unembed.weight"})
    return sd, blocks


@pytest.fixture
def ebh_models():
    """Three related embed/body/head models and one unrelated."""
    base = embed_body_head(1)
    return [
        ts.Model.from_state_dict(base),
        ts.Model.from_state_dict(perturbed(base, 2, 0.1)),
        ts.Model.from_state_dict(perturbed(base, 3, 0.3)),
        ts.Model.from_state_dict(embed_body_head(4)),
    ]
