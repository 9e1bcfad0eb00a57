"""Writes tests/files/torch/transformer.pt and transformer.json with real PyTorch.

The research group's `Transformer` as SPEC §7 and §8 describe it, under its
state-dict names: `embed` (an `nn.Linear` on the input vectors), per layer
`body.{i}.attn` (bilinear attention: `q1, k1, q2, k2, v, o` linear maps, 2
heads, rotary in the "half" layout with the base the research `Attention`
hard-codes, 10 000, score `(q1·k1)(q2·k2)/e²`, a mask, output
`lerp(x, O z, α)`) and `body.{i}.mlp` (bilinear `lerp(x, d(l x ∘ r x), α)`),
then `head`. One `α` (the config's `scale`) for both. F64, so that the
comparison is to rounding.

The JSON holds the run's config (the keys of SPEC §8: `n_head`, `n_layer`,
`d_model`, `n_ctx`, `mask`, `bias`, `scale`), three seeded input sequences
(`[n, 11]` real rows: `embed` is linear, so one-hot tokens are a special
case) and the logits of the module with the causal mask (`logits_causal`)
and with `mask: none` (`logits_none`). The script checks its vectorised
forward against a position-by-position loop written from SPEC §7 to 1e-12.
Run by hand, not by CI (CI has no torch):

    python tests/files/torch/make_transformer.py

from the repository root. Seeded; README.md beside this script says which
torch wrote the committed files.
"""

import json
import math
import pathlib

import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent

# The research Attention's rotary base: hard-coded, no config key.
ROTARY_BASE = 10_000.0

CONFIG = {
    "n_head": 2,
    "n_layer": 2,
    "d_model": 8,
    "n_ctx": 16,
    "mask": "causal",
    "bias": True,
    "scale": 0.7,
}
D_IN = 11
D_OUT = 11


def rotate(x, base):
    """Rotary encoding, "half" layout, on the last dimension (width e) of
    `x` `[n, heads, e]`; position s is x's first index."""
    n, e = x.shape[0], x.shape[-1]
    j = torch.arange(e // 2, dtype=torch.float64)
    s = torch.arange(n, dtype=torch.float64)
    theta = (s[:, None] * base ** (-2 * j / e))[:, None, :]
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    a, b = x[..., : e // 2], x[..., e // 2 :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, bias = cfg["d_model"], cfg["bias"]
        self.heads = cfg["n_head"]
        self.scale = cfg["scale"]
        self.mask = cfg["mask"]
        self.q1 = nn.Linear(d, d, bias=bias)
        self.k1 = nn.Linear(d, d, bias=bias)
        self.q2 = nn.Linear(d, d, bias=bias)
        self.k2 = nn.Linear(d, d, bias=bias)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x):
        n, d = x.shape
        h = self.heads
        e = d // h
        split = lambda t: t.view(n, h, e)  # noqa: E731
        q1 = rotate(split(self.q1(x)), ROTARY_BASE)
        k1 = rotate(split(self.k1(x)), ROTARY_BASE)
        q2 = rotate(split(self.q2(x)), ROTARY_BASE)
        k2 = rotate(split(self.k2(x)), ROTARY_BASE)
        v = split(self.v(x))
        scores = torch.einsum("shd,thd->hst", q1, k1) * torch.einsum("shd,thd->hst", q2, k2)
        scores = scores / e**2
        if self.mask == "causal":
            scores = scores * torch.tril(torch.ones(n, n, dtype=x.dtype))
        z = torch.einsum("hst,thd->shd", scores, v).reshape(n, d)
        return torch.lerp(x, self.o(z), self.scale)


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d = cfg["d_model"]
        self.scale = cfg["scale"]
        self.l = nn.Linear(d, 2 * d, bias=False)
        self.r = nn.Linear(d, 2 * d, bias=False)
        self.d = nn.Linear(2 * d, d, bias=cfg["bias"])

    def forward(self, x):
        return torch.lerp(x, self.d(self.l(x) * self.r(x)), self.scale)


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn = Attention(cfg)
        self.mlp = Mlp(cfg)

    def forward(self, x):
        return self.mlp(self.attn(x))


class Transformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embed = nn.Linear(D_IN, cfg["d_model"], bias=False)
        self.body = nn.ModuleList([Layer(cfg) for _ in range(cfg["n_layer"])])
        self.head = nn.Linear(cfg["d_model"], D_OUT, bias=False)

    def forward(self, x):
        x = self.embed(x)
        for layer in self.body:
            x = layer(x)
        return self.head(x)


def reference(sd, cfg, x, mask, base=ROTARY_BASE):
    """SPEC §7 position by position, in f64, from the state dict alone;
    `base` None: no rotary (the reading this fixture tells apart)."""
    w = {k: v.detach().double() for k, v in sd.items()}
    d, heads, alpha = cfg["d_model"], cfg["n_head"], cfg["scale"]
    e = d // heads

    def lin(name, t):
        y = w[name + ".weight"] @ t
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def rot(t, s):
        out = t.clone()
        if base is None:
            return out
        for j in range(e // 2):
            theta = s * base ** (-2.0 * j / e)
            c, sn = math.cos(theta), math.sin(theta)
            out[j] = t[j] * c - t[j + e // 2] * sn
            out[j + e // 2] = t[j + e // 2] * c + t[j] * sn
        return out

    xs = [lin("embed", row) for row in x.double()]
    n = len(xs)
    for i in range(cfg["n_layer"]):
        p = f"body.{i}.attn."
        proj = {r: [lin(p + r, xs[s]) for s in range(n)] for r in ("q1", "k1", "q2", "k2", "v")}
        out = []
        for s in range(n):
            z = torch.zeros(d, dtype=torch.float64)
            for hd in range(heads):
                sl = slice(hd * e, (hd + 1) * e)
                q1, q2 = rot(proj["q1"][s][sl], s), rot(proj["q2"][s][sl], s)
                for t in range(n):
                    if mask == "causal" and t > s:
                        continue
                    k1, k2 = rot(proj["k1"][t][sl], t), rot(proj["k2"][t][sl], t)
                    score = (q1 @ k1) * (q2 @ k2) / e**2
                    z[sl] += score * proj["v"][t][sl]
            out.append((1 - alpha) * xs[s] + alpha * lin(p + "o", z))
        xs = out
        p = f"body.{i}.mlp."
        xs = [(1 - alpha) * r + alpha * lin(p + "d", lin(p + "l", r) * lin(p + "r", r)) for r in xs]
    return torch.stack([lin("head", r) for r in xs])


def main():
    torch.manual_seed(21)
    net = Transformer(CONFIG).double().eval()
    # Weights large enough that attention (and so the rotary) moves the
    # logits: PyTorch's default init makes the order-5 scores tiny.
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.normal_(0.0, 0.6 if name.split(".")[-2] in ("q1", "k1", "q2", "k2") else 0.3)
    sd = net.state_dict()
    torch.save(sd, HERE / "transformer.pt")
    inputs = [torch.randn(n, D_IN, dtype=torch.float64) for n in (3, 5, 6)]
    logits = {}
    for mask in ("causal", "none"):
        for layer in net.body:
            layer.attn.mask = mask
        with torch.no_grad():
            out = [net(x) for x in inputs]
        for x, y in zip(inputs, out):
            gap = (y - reference(sd, CONFIG, x, mask)).abs().max().item()
            assert gap < 1e-12 * max(1.0, y.abs().max().item()), (mask, gap)
            # Without rotary the logits are another function's.
            off = (y - reference(sd, CONFIG, x, mask, base=None)).abs().max().item()
            assert off > 1e-3 * y.abs().max().item(), (mask, off)
            print(f"mask {mask}, n {len(x)}: reference gap {gap:.1e}, no-rotary gap {off:.3e}")
        logits[mask] = out
    (HERE / "transformer.json").write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "module": "research Transformer: embed, body.{i}.{attn,mlp} with lerp α = scale, "
                "rotary base 10000 (fixed), head",
                "config": {"model": CONFIG},
                "rotary_base": ROTARY_BASE,
                "inputs": [x.tolist() for x in inputs],
                "logits_causal": [y.tolist() for y in logits["causal"]],
                "logits_none": [y.tolist() for y in logits["none"]],
            },
            indent=1,
        )
        + "\n"
    )
    print("wrote transformer.pt and transformer.json; state dict:")
    for k, v in sd.items():
        print(f"  {k} {list(v.shape)} {v.dtype}")


if __name__ == "__main__":
    main()
