"""Writes tests/files/torch/norms/: the research group's attention-only LM
with normalisations, as its training runs save it (SPEC §8).

Each case is a folder `norms/<case>/` holding `config.json` (the run's
`"model"` keys: `norm_type`, `norm_places`, `norm_kwargs` among them),
`step_1.pt` and `step_2.pt` (`{"model": state_dict, "step": N}`, F32
tensors, the norms' `num_batches_tracked` I64 counters included) and
`expected.json`: both checkpoints' state dicts as nested lists (the F32
values widened to f64, so that a test can rebuild the model without a
`.pt` reader), token sequences, and the logits of checkpoint 1 in f64 from
an independent forward pass written here position by position, applying
each norm as the research code writes it (not folded). The script checks
that forward against the module's own vectorised eval forward to 1e-12.

The module mirrors the research `AttentionLM` (`Tok0Batch` with its
`running_mean_energy` and `num_batches_tracked` buffers, `BatchNorm` holding
an `nn.BatchNorm1d` as `bn`, the norm module names `embed_norm`,
`layer_norms.{i}`, `final_norm`, the pre_layer residual `x + (layer(N(x)) -
N(x))`), with bilinear or quadratic attention: rotary ("half" layout) at
`rope_base`, causal mask, scores `(q1·k1)(q2·k2)/e²`, `x + attn_scale·O z`.
The running statistics come from forward passes in training mode on random
tokens (no optimiser step is needed for them); checkpoint 2 is checkpoint 1
with every weight perturbed and two more such passes.

Run by hand, not by CI (CI has no torch), from the repository root:

    python tests/files/torch/make_norms.py

Seeded; tests/files/torch/README.md says which torch wrote the files.
"""

import copy
import json
import math
import pathlib
import shutil

import torch
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "norms"

BASE = {
    "vocab_size": 5,
    "d_model": 4,
    "n_head": 2,
    "attn_scale": 0.35,
    "rope_base": 100.0,
    "use_bias_qk": True,
    "n_ctx": 8,
    "use_rmsnorm_qk": False,
}

CASES = {
    # tok0_batch after the embedding and before the unembedding.
    "tok0_post_embed_pre_unembed": dict(
        n_layers=1, attn_type="bilinear", norm_type="tok0_batch",
        norm_places=["post_embed", "pre_unembed"],
    ),
    # tok0_batch before each layer (and so before the unembedding), with
    # quadratic attention.
    "tok0_pre_layer_quadratic": dict(
        n_layers=2, attn_type="quadratic", norm_type="tok0_batch", norm_places=["pre_layer"],
    ),
    # batchnorm after the embedding and before each layer.
    "batchnorm_post_embed_pre_layer": dict(
        n_layers=2, attn_type="bilinear", norm_type="batchnorm",
        norm_places=["post_embed", "pre_layer"],
    ),
    # batchnorm before the unembedding alone, one layer (its shift lands in
    # the unembedding's bias).
    "batchnorm_pre_unembed": dict(
        n_layers=1, attn_type="bilinear", norm_type="batchnorm", norm_places=["pre_unembed"],
    ),
    # A changed eps, large enough to matter.
    "tok0_eps": dict(
        n_layers=1, attn_type="bilinear", norm_type="tok0_batch",
        norm_places=["post_embed", "pre_layer"], norm_kwargs={"eps": 0.5},
    ),
    # Saved before its first training batch: num_batches_tracked = 0 and
    # running_mean_energy at its initial 1.
    "tok0_untracked": dict(
        n_layers=1, attn_type="bilinear", norm_type="tok0_batch",
        norm_places=["pre_unembed"], untracked=True,
    ),
    # An input-dependent norm: refused, or read without it.
    "rmsnorm": dict(
        n_layers=1, attn_type="bilinear", norm_type="rmsnorm", norm_places=["pre_unembed"],
    ),
}

SEQUENCES = [[1, 4, 0], [0, 3, 3, 2, 1]]


def rotate(x, positions, base):
    e = x.shape[-1]
    j = torch.arange(e // 2, dtype=torch.float64)
    theta = positions[:, None].double() * base ** (-2 * j / e)
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    a, b = x[..., : e // 2], x[..., e // 2 :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class Tok0Batch(nn.Module):
    """As the research code's: x * (E + eps)^(-1/2), E the running mean of
    the batch's mean energy of position 0."""

    def __init__(self, d, eps=1e-6, momentum=0.1, use_running_stats=True):
        super().__init__()
        self.eps, self.momentum, self.use_running_stats = eps, momentum, use_running_stats
        self.register_buffer("running_mean_energy", torch.ones(1))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x):
        m_batch = x[:, 0, :].pow(2).mean(dim=-1).mean()
        if self.training:
            scale = (m_batch + self.eps).rsqrt()
            self.num_batches_tracked += 1
            self.running_mean_energy.mul_(1 - self.momentum).add_(m_batch.detach() * self.momentum)
        elif self.use_running_stats and self.num_batches_tracked > 0:
            scale = (self.running_mean_energy + self.eps).rsqrt()
        else:
            scale = (m_batch + self.eps).rsqrt()
        return x * scale


class BatchNorm(nn.Module):
    def __init__(self, d, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True):
        super().__init__()
        self.bn = nn.BatchNorm1d(d, eps=eps, momentum=momentum, affine=affine,
                                 track_running_stats=track_running_stats)

    def forward(self, x):
        b, t, d = x.shape
        return self.bn(x.reshape(b * t, d)).reshape(b, t, d)


def make_norm(cfg):
    kind, kwargs, d = cfg["norm_type"], cfg.get("norm_kwargs", {}), cfg["d_model"]
    if kind == "tok0_batch":
        return Tok0Batch(d, **kwargs)
    if kind == "batchnorm":
        return BatchNorm(d, **kwargs)
    if kind == "rmsnorm":
        return nn.RMSNorm(d)
    raise ValueError(kind)


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, bias = cfg["d_model"], cfg["use_bias_qk"]
        self.heads, self.scale, self.base = cfg["n_head"], cfg["attn_scale"], cfg["rope_base"]
        self.bilinear = cfg["attn_type"] == "bilinear"
        for name in ["q1", "k1", "q2", "k2"] if self.bilinear else ["q", "k"]:
            setattr(self, name, nn.Linear(d, d, bias=bias))
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x):
        bsz, n, d = x.shape
        e = d // self.heads
        pos = torch.arange(n)

        def split(t):
            return rotate(t.view(bsz, n, self.heads, e).transpose(1, 2), pos, self.base)

        if self.bilinear:
            q1, k1, q2, k2 = (split(m(x)) for m in (self.q1, self.k1, self.q2, self.k2))
        else:
            q1, k1 = split(self.q(x)), split(self.k(x))
            q2, k2 = q1, k1
        scores = (q1 @ k1.transpose(-1, -2)) * (q2 @ k2.transpose(-1, -2)) / e**2
        scores = scores * torch.tril(torch.ones(n, n, dtype=x.dtype))
        v = self.v(x).view(bsz, n, self.heads, e).transpose(1, 2)
        z = (scores @ v).transpose(1, 2).reshape(bsz, n, d)
        return x + self.scale * self.o(z)


class AttentionLM(nn.Module):
    """The research AttentionLM's structure, norms and forward."""

    def __init__(self, cfg):
        super().__init__()
        places = cfg["norm_places"]
        self.embed = nn.Embedding(cfg["vocab_size"], cfg["d_model"])
        self.embed_norm = make_norm(cfg) if "post_embed" in places else None
        self.final_norm = (
            make_norm(cfg) if "pre_unembed" in places or "pre_layer" in places else nn.Identity()
        )
        self.layer_norms = (
            nn.ModuleList([make_norm(cfg) for _ in range(cfg["n_layers"])])
            if "pre_layer" in places
            else None
        )
        self.layers = nn.ModuleList([Attention(cfg) for _ in range(cfg["n_layers"])])
        self.unembed = nn.Linear(cfg["d_model"], cfg["vocab_size"], bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        if self.embed_norm is not None:
            x = self.embed_norm(x)
        if self.layer_norms is not None:
            for norm, layer in zip(self.layer_norms, self.layers):
                x_normed = norm(x)
                x = x + (layer(x_normed) - x_normed)
        else:
            for layer in self.layers:
                x = layer(x)
        return self.unembed(self.final_norm(x))


def reference_logits(sd, cfg, tokens, without_norms=False):
    """Independent of the module: position by position in f64 from the
    state dict, each norm applied as its formula reads (`without_norms`:
    every norm the identity, as the research code's ignore_norms=True)."""
    w = {k: v.detach().double() for k, v in sd.items()}
    d, heads, base = cfg["d_model"], cfg["n_head"], cfg["rope_base"]
    e = d // heads
    kind, places = cfg["norm_type"], cfg["norm_places"]
    eps = cfg.get("norm_kwargs", {}).get("eps", 1e-6 if kind == "tok0_batch" else 1e-5)

    def norm(prefix, x):
        if without_norms:
            return x
        if kind == "tok0_batch":
            return x / math.sqrt(w[prefix + ".running_mean_energy"].item() + eps)
        if kind == "batchnorm":
            mean, var = w[prefix + ".bn.running_mean"], w[prefix + ".bn.running_var"]
            return w[prefix + ".bn.weight"] * (x - mean) / torch.sqrt(var + eps) + w[prefix + ".bn.bias"]
        raise ValueError(kind)

    def rot(x, s):
        out = x.clone()
        for j in range(e // 2):
            theta = s * base ** (-2.0 * j / e)
            c, sn = math.cos(theta), math.sin(theta)
            out[j] = x[j] * c - x[j + e // 2] * sn
            out[j + e // 2] = x[j + e // 2] * c + x[j] * sn
        return out

    xs = [w["embed.weight"][t].clone() for t in tokens]
    if "post_embed" in places:
        xs = [norm("embed_norm", x) for x in xs]
    n = len(xs)
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        names = ("q1", "k1", "q2", "k2") if cfg["attn_type"] == "bilinear" else ("q", "k", "q", "k")
        mats = [w[p + m + ".weight"] for m in names]
        biases = [w.get(p + m + ".bias", torch.zeros(d, dtype=torch.float64)) for m in names]
        v, o = w[p + "v.weight"], w[p + "o.weight"]
        # pre_layer: the layer reads the normed stream; the residual adds to
        # the unnormed one.
        read = [norm(f"layer_norms.{i}", x) for x in xs] if "pre_layer" in places else xs
        ys = []
        for s in range(n):
            z = torch.zeros(d, dtype=torch.float64)
            for h in range(heads):
                r = slice(h * e, (h + 1) * e)
                q1 = rot(mats[0][r] @ read[s] + biases[0][r], s)
                q2 = rot(mats[2][r] @ read[s] + biases[2][r], s)
                for t in range(s + 1):
                    k1 = rot(mats[1][r] @ read[t] + biases[1][r], t)
                    k2 = rot(mats[3][r] @ read[t] + biases[3][r], t)
                    z[r] += (q1 @ k1) * (q2 @ k2) / e**2 * (v[r] @ read[t])
            ys.append(xs[s] + cfg["attn_scale"] * (o @ z))
        xs = ys
    if "pre_unembed" in places or "pre_layer" in places:
        xs = [norm("final_norm", x) for x in xs]
    return [(w["unembed.weight"] @ x).tolist() for x in xs]


def init(model):
    """Weights large enough that attention matters (PyTorch's defaults make
    it negligible at these sizes)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("layers.") and name.endswith(".weight"):
                std = 0.8 if name.split(".")[2] in ("v", "o") else 1.0
                p.normal_(0.0, std)
            elif name.endswith(".bias") and name.startswith("layers."):
                p.normal_(0.0, 0.3)
            elif ".bn." in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p) if name.endswith("weight") else 0.2 * torch.randn_like(p))
            elif name in ("embed.weight", "unembed.weight"):
                p.normal_(0.0, 1.0)


def running_stats(model, cfg, passes):
    model.train()
    with torch.no_grad():
        for _ in range(passes):
            model(torch.randint(0, cfg["vocab_size"], (6, 5)))
    model.eval()


def state_lists(sd):
    return {k: v.double().tolist() if v.is_floating_point() else int(v) for k, v in sd.items()}


def case(name, spec, seed):
    cfg = dict(BASE)
    untracked = spec.pop("untracked", False)
    cfg.update(spec)
    torch.manual_seed(seed)
    model = AttentionLM(cfg)
    init(model)
    if not untracked:
        running_stats(model, cfg, 3)
    model.eval()
    first = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    if not untracked:
        running_stats(model, cfg, 2)
    second = copy.deepcopy(model.state_dict())

    folder = OUT / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": cfg, "train": {"lr": 0.01}}, indent=1) + "\n")
    for step, sd in [(1, first), (2, second)]:
        assert all(v.dtype in (torch.float32, torch.int64) for v in sd.values())
        torch.save({"model": sd, "step": step}, folder / f"step_{step}.pt")

    model.load_state_dict(first)
    model64 = copy.deepcopy(model).double().eval()
    sequences = []
    for tokens in SEQUENCES:
        ref = None if cfg["norm_type"] == "rmsnorm" else reference_logits(first, cfg, tokens)
        if not (untracked or cfg["norm_type"] == "rmsnorm"):
            # The module at eval agrees with the reference. (Untracked, the
            # module normalises by the batch; rmsnorm by each position.)
            mod = model64(torch.tensor([tokens]))[0]
            diff = (mod - torch.tensor(ref, dtype=torch.float64)).abs().max().item()
            assert diff <= 1e-12 * max(1.0, mod.abs().max().item()), (name, diff, mod.abs().max().item())
        bare = reference_logits(first, cfg, tokens, without_norms=True)
        if cfg["norm_type"] == "rmsnorm":
            sequences.append({"tokens": tokens, "logits_without_norms": bare})
        else:
            sequences.append({"tokens": tokens, "logits": ref, "logits_without_norms": bare})
    counters = [k for k in first if k.endswith("num_batches_tracked")]
    assert all(int(first[k]) == (0 if untracked else 3) for k in counters), name
    expected = {
        "config": cfg,
        "about": "state dicts of step_1.pt and step_2.pt (F32 widened to f64; counters as "
        "integers) and the logits [n, vocab] of step_1 in f64 from make_norms.py's "
        "reference_logits: one-hot tokens -> embed rows, each norm applied as written "
        "(tok0_batch x/sqrt(running_mean_energy + eps), batchnorm weight (x - running_mean)/"
        "sqrt(running_var + eps) + bias) at its places, per layer X + attn_scale O z(N(X)) "
        "with rotary (half layout, base rope_base) and a causal mask, logits = unembed N_f(X); "
        "logits_without_norms: the same with every norm the identity (ignore_norms)",
        "state_dicts": [state_lists(first), state_lists(second)],
        "sequences": sequences,
    }
    (folder / "expected.json").write_text(json.dumps(expected) + "\n")


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    for seed, (name, spec) in enumerate(CASES.items()):
        case(name, dict(spec), 100 + seed)
    print("torch", torch.__version__)


if __name__ == "__main__":
    main()
