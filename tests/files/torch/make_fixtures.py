"""Writes the PyTorch fixtures of tests/files/torch/ with real PyTorch.

Run by hand, not by CI (CI has no torch):

    python tests/files/torch/make_fixtures.py

from the repository root, in an environment with torch, safetensors and
pyyaml. Every file is small and seeded; README.md beside this script says
which torch wrote the committed ones.
"""

import copy
import json
import math
import os
import pathlib
import pickletools
import tempfile
import zipfile

import torch
import yaml
from safetensors.torch import save_file
from torch import nn

HERE = pathlib.Path(__file__).resolve().parent
# The file that `Net.__setstate__` (whole_module.pt) writes when a loader
# runs the pickle's code; the Rust test checks that it never appears.
MARKER = pathlib.Path(tempfile.gettempdir()) / "tensor_similarity_whole_module.marker"


# --- the embed/body/head layout (src/io/infer.rs) ---------------------------


class BodyBlock(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.l = nn.Linear(d, h)
        self.r = nn.Linear(d, h)
        self.d = nn.Linear(h, d)

    def forward(self, x):
        return self.d(self.l(x) * self.r(x))


class EmbedBodyHead(nn.Module):
    def __init__(self, d_in=3, d=4, h=5, depth=1, d_out=2):
        super().__init__()
        self.embed = nn.Linear(d_in, d)
        self.body = nn.ModuleList([BodyBlock(d, h) for _ in range(depth)])
        self.head = nn.Linear(d, d_out)

    def forward(self, x):
        x = self.embed(x)
        for block in self.body:
            x = block(x)
        return self.head(x)


class Net(nn.Module):
    """A user class: `torch.save(net)` pickles `__main__.Net` and its state,
    and unpickling it runs `__setstate__`, which writes MARKER (what a
    loader that executes pickles would do)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(2, 1)

    def __setstate__(self, state):
        MARKER.write_text("whole_module.pt was unpickled by executing it\n")
        super().__setstate__(state)


def twin(sd, name):
    """The same tensors as a .safetensors file (contiguous copies)."""
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, HERE / name)


def save(obj, name, **kwargs):
    torch.save(obj, HERE / name, **kwargs)


def data_pkl(path):
    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if n.endswith("/data.pkl")]
        return z.read(name)


def opcodes(pickle_bytes):
    return {op.name for op, _, _ in pickletools.genops(pickle_bytes)}


def globals_of(pickle_bytes):
    return {arg for op, arg, _ in pickletools.genops(pickle_bytes) if op.name == "GLOBAL"}


def ebh_fixtures():
    torch.manual_seed(0)
    model = EmbedBodyHead()
    sd = model.state_dict()
    save(sd, "ebh_f32.pt")
    twin(sd, "ebh_f32.safetensors")

    # A training checkpoint: the same weights, an Adam state after one step
    # (of a copy, so the weights stay those of ebh_f32; fine-tuning the head
    # only, which keeps the file small), a step counter and a config.
    trained = copy.deepcopy(model)
    adam = torch.optim.Adam(trained.head.parameters(), lr=1e-3)
    trained(torch.randn(6, 3)).square().sum().backward()
    adam.step()
    save(
        {
            "model_state_dict": sd,
            "optimizer_state_dict": adam.state_dict(),
            "step": 1200,
            "config": {"lr": 1e-3},
        },
        "ebh_wrapped.pt",
    )

    for dtype, name in [
        (torch.float64, "f64"),
        (torch.float16, "f16"),
        (torch.bfloat16, "bf16"),
    ]:
        typed = {k: v.to(dtype) for k, v in sd.items()}
        save(typed, f"ebh_{name}.pt")
        twin(typed, f"ebh_{name}.safetensors")

    # num_batches_tracked: an integer buffer, as BatchNorm keeps one.
    save({**sd, "norm.num_batches_tracked": torch.tensor(7)}, "with_int.pt")

    # The legacy (pre-1.6) format: a pickle stream, not a zip archive (any
    # content: it is refused by its first bytes).
    save({"head.weight": sd["head.weight"]}, "legacy.pt", _use_new_zipfile_serialization=False)
    assert (HERE / "legacy.pt").read_bytes().startswith(b"\x80\x02\x8a\x0a")

    # The whole module, class and all: loading it means running its code.
    torch.manual_seed(0)
    net = Net()
    save(net, "whole_module.pt")
    pkl = data_pkl(HERE / "whole_module.pt")
    assert "__main__ Net" in globals_of(pkl), globals_of(pkl)
    MARKER.unlink(missing_ok=True)
    torch.load(HERE / "whole_module.pt", weights_only=False)
    assert MARKER.exists(), "the fixture should run code when unpickled"
    MARKER.unlink()
    return model


def views_fixture():
    """Shared storages, offsets, non-contiguous strides and a tied tensor, in
    a model with two body blocks."""
    torch.manual_seed(1)
    sd = dict(EmbedBodyHead(depth=2).state_dict())
    fused = torch.randn(10, 4)  # [L; R] of body.0 in one storage
    sd["body.0.l.weight"] = fused[:5]
    sd["body.0.r.weight"] = fused[5:]  # storage offset 20
    p = torch.randn(5, 4)
    sd["body.0.d.weight"] = p.t()  # [4, 5], strides (1, 4)
    wide = torch.randn(4, 7)
    sd["body.1.d.weight"] = wide[:, 1:6]  # [4, 5], strides (7, 1), offset 1
    tied = torch.randn(5, 4)
    sd["body.1.l.weight"] = tied
    sd["body.1.r.weight"] = tied
    assert not sd["body.0.d.weight"].is_contiguous()
    assert sd["body.0.r.weight"].storage_offset() == 20
    save(sd, "views.pt")
    twin(sd, "views.safetensors")
    back = torch.load(HERE / "views.pt")
    assert back["body.1.l.weight"].data_ptr() == back["body.1.r.weight"].data_ptr()
    assert back["body.0.l.weight"].untyped_storage().data_ptr() == (
        back["body.0.r.weight"].untyped_storage().data_ptr()
    )


TAG_CUDA = False


def cuda_tagger(storage):
    if TAG_CUDA and storage.device.type == "cpu":
        return "cuda:0"
    return None


def cuda_deserializer(storage, location):
    if location.startswith("cuda"):
        return storage  # stays on the CPU: this machine has no GPU
    return None


def cuda_fixture(model):
    """Storages tagged cuda:0, as a checkpoint saved from a GPU has them."""
    global TAG_CUDA
    torch.serialization.register_package(5, cuda_tagger, cuda_deserializer)
    sd = model.state_dict()
    TAG_CUDA = True
    try:
        save(sd, "cuda_tagged.pt")
    finally:
        TAG_CUDA = False
    # Its twin is ebh_f32.safetensors: the same state_dict.
    pkl = data_pkl(HERE / "cuda_tagged.pt")
    assert b"cuda:0" in pkl and b"cpu" not in pkl
    args = [arg for op, arg, _ in pickletools.genops(pkl) if op.name == "BINUNICODE"]
    assert "cuda:0" in args


# --- the attention-only language model (SPEC §7, §8) --------------------------

LM_CONFIG = {
    "vocab_size": 11,
    "d_model": 8,
    "n_head": 2,
    "n_layers": 2,
    "attn_scale": 0.35,
    "attn_type": "bilinear",
    "rope_base": 500.0,
    "use_bias_qk": True,
    "n_ctx": 16,
    # FinalNorm below is folded at eval as tok0_batch is (x / sqrt(E + 1e-6)).
    "norm_type": "tok0_batch",
    "norm_places": ["pre_unembed"],
    "norm_kwargs": {"eps": 1e-6},
    "use_rmsnorm_qk": False,
}


def rotate(x, positions, base):
    """Rotary encoding, "half" layout, on the last dimension (width e)."""
    e = x.shape[-1]
    j = torch.arange(e // 2, dtype=torch.float64)
    theta = positions[:, None].double() * base ** (-2 * j / e)
    cos, sin = theta.cos().to(x.dtype), theta.sin().to(x.dtype)
    a, b = x[..., : e // 2], x[..., e // 2 :]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


class FinalNorm(nn.Module):
    def __init__(self):
        super().__init__()
        # A 0-dim buffer: the running mean of ‖x‖²/d, folded in at inference.
        self.register_buffer("running_mean_energy", torch.tensor(1.0))

    def forward(self, x):
        if self.training:
            energy = x.detach().square().mean()
            self.running_mean_energy.mul_(0.9).add_(0.1 * energy)
        return x / torch.sqrt(self.running_mean_energy + 1e-6)


class AttentionLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        d, bias = cfg["d_model"], cfg["use_bias_qk"]
        self.heads, self.scale, self.base = cfg["n_head"], cfg["attn_scale"], cfg["rope_base"]
        self.bilinear = cfg["attn_type"] == "bilinear"
        names = ["q1", "k1", "q2", "k2"] if self.bilinear else ["q", "k"]
        for name in names:
            setattr(self, name, nn.Linear(d, d, bias=bias))
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x):  # x: [batch, n, d]
        bsz, n, d = x.shape
        e = d // self.heads
        pos = torch.arange(n)

        def split(t):  # [b, n, d] -> [b, H, n, e], rotated
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
    def __init__(self, cfg):
        super().__init__()
        self.embed = nn.Embedding(cfg["vocab_size"], cfg["d_model"])
        self.layers = nn.ModuleList([AttentionLayer(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = FinalNorm()
        self.unembed = nn.Linear(cfg["d_model"], cfg["vocab_size"], bias=False)

    def forward(self, tokens):
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x)
        return self.unembed(self.final_norm(x))


def reference_logits(sd, cfg, tokens):
    """An independent forward pass, written from SPEC §7 position by position
    in f64 (no code shared with AttentionLM nor with the crate)."""
    w = {k: v.detach().double() for k, v in sd.items()}
    d, heads, base = cfg["d_model"], cfg["n_head"], cfg["rope_base"]
    e = d // heads

    def rot(x, s):
        out = x.clone()
        for j in range(e // 2):
            theta = s * base ** (-2.0 * j / e)
            c, sn = math.cos(theta), math.sin(theta)
            out[j] = x[j] * c - x[j + e // 2] * sn
            out[j + e // 2] = x[j + e // 2] * c + x[j] * sn
        return out

    # One-hot rows through the embedding: x[s] = embed.weight[token].
    xs = [w["embed.weight"][t].clone() for t in tokens]
    n = len(xs)
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        if cfg["attn_type"] == "bilinear":
            names = ("q1", "k1", "q2", "k2")
        else:
            names = ("q", "k", "q", "k")
        mats = [w[p + m + ".weight"] for m in names]
        biases = [w.get(p + m + ".bias", torch.zeros(d, dtype=torch.float64)) for m in names]
        v, o = w[p + "v.weight"], w[p + "o.weight"]
        ys = []
        for s in range(n):
            z = torch.zeros(d, dtype=torch.float64)
            for h in range(heads):
                r = slice(h * e, (h + 1) * e)
                q1 = rot(mats[0][r] @ xs[s] + biases[0][r], s)
                q2 = rot(mats[2][r] @ xs[s] + biases[2][r], s)
                for t in range(s + 1):  # causal: t <= s
                    k1 = rot(mats[1][r] @ xs[t] + biases[1][r], t)
                    k2 = rot(mats[3][r] @ xs[t] + biases[3][r], t)
                    score = (q1 @ k1) * (q2 @ k2) / e**2
                    z[r] += score * (v[r] @ xs[t])
            ys.append(xs[s] + cfg["attn_scale"] * (o @ z))
        xs = ys
    energy = w["final_norm.running_mean_energy"].item()
    return [(w["unembed.weight"] @ x / math.sqrt(energy + 1e-6)).tolist() for x in xs]


def config_yaml(cfg):
    lines = ["# AttentionLM training run (tensor-similarity test fixture)", "model:"]
    for k, v in cfg.items():
        lines.append(f"  {k}: {json.dumps(v) if not isinstance(v, str) else v}")
    lines += [
        "train:",
        "  seed: 0",
        "  lr: 0.01",
        "  weight_decay: 0.0",
        "  batch_size: 8",
        "  steps: 100",
        "  save_every: [20, 100]",
        "  dataset: random_tokens",
        "  log_every: 10",
        "",
    ]
    return "\n".join(lines)


SEQUENCES = [[1, 4, 7], [0, 10, 3, 3, 8]]


def lm_run(name, cfg, seed, save_at):
    run = HERE / "runs" / name
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    text = config_yaml(cfg)
    assert yaml.safe_load(text)["model"] == cfg
    (run / "config.yaml").write_text(text)

    torch.manual_seed(seed)
    model = AttentionLM(cfg)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    data = torch.randint(0, cfg["vocab_size"], (8, 9))
    for step in range(1, max(save_at) + 1):
        logits = model(data[:, :-1])
        loss = nn.functional.cross_entropy(logits.reshape(-1, cfg["vocab_size"]), data[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step in save_at:
            ckpt = run / "checkpoints" / f"step_{step}.pt"
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, ckpt)

    model.eval()
    final = torch.load(run / "checkpoints" / f"step_{max(save_at)}.pt")["model"]
    sequences = []
    for tokens in SEQUENCES:
        ref = reference_logits(final, cfg, tokens)
        # The reference agrees with the module's own (vectorised) forward.
        model64 = copy.deepcopy(model).double()
        mod = model64(torch.tensor([tokens]))[0]
        assert torch.allclose(mod, torch.tensor(ref, dtype=torch.float64), atol=1e-12, rtol=0), name
        sequences.append({"tokens": tokens, "logits": ref})
    energy = final["final_norm.running_mean_energy"]
    assert energy.dim() == 0
    expected = {
        "checkpoint": f"checkpoints/step_{max(save_at)}.pt",
        "about": "logits [n, vocab] in f64 of the checkpoint's f32 weights, from the "
        "independent SPEC §7 forward pass in make_fixtures.py (reference_logits): "
        "one-hot tokens -> embed rows; per layer Y[s] = X[s] + attn_scale * O z[s], "
        "per head (q1.k1)(q2.k2)/e^2 with rotary (half layout, base rope_base, "
        "positions from 0) and a causal mask; logits = unembed X_L / sqrt(energy + 1e-6)",
        "sequences": sequences,
    }
    (run / "expected.json").write_text(json.dumps(expected) + "\n")


def main():
    torch.use_deterministic_algorithms(True)
    model = ebh_fixtures()
    views_fixture()
    cuda_fixture(model)
    lm_run("tiny_lm", LM_CONFIG, seed=2, save_at=(20, 100))
    lm_run("tiny_lm_quadratic", {**LM_CONFIG, "attn_type": "quadratic"}, seed=3, save_at=(100,))
    total = 0
    for path in sorted(HERE.rglob("*")):
        if path.is_file() and path.suffix in {".pt", ".safetensors", ".json", ".yaml"}:
            total += path.stat().st_size
            print(f"{path.stat().st_size:7d}  {path.relative_to(HERE)}")
    print(f"{total:7d}  total; torch {torch.__version__}")


if __name__ == "__main__":
    main()
