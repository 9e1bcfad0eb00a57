"""The Gaussian closure against Monte Carlo on a trained two-layer attention
model (docs/metrics.md, "Closure against Monte Carlo").

Trains a small attention-only language model with bilinear attention (SPEC
§7) a little, saves checkpoints along the run as safetensors with their
layout in the file's metadata, then compares pairs of checkpoints with the
command line at a few contexts: `--metric gaussian-closure` (moment
propagation, a closure beyond one attention layer) and `--metric
gaussian-mc` (the unbiased Monte Carlo estimate with its standard error),
and prints the table of docs/metrics.md.

The model: a token embedding (vocabulary 16 → stream 16, no bias), two
bilinear attention layers (2 heads, q/k and value width 4, q/k biases,
rotary base 10 000, causal mask, additive residual r = 1, scale α = 0.5),
an unembedding (16 → 16). The task: next-token prediction on sequences of 8
tokens where each token is the sum of the two before it mod 16 (the first
two uniform), cross-entropy on every position from the third; full-batch
gradients by `autograd` on 512 fixed sequences, Adam (lr 0.01), 1500 steps.

    python3 -m venv target/venv && target/venv/bin/pip install maturin numpy autograd ./python
    cargo build --release --features cli
    target/venv/bin/python suite/examples/closure_vs_mc/train.py target/closure-vs-mc

The first argument is the folder the checkpoints go to (training is
skipped when they are there); the binary is target/release/tensor-similarity
(or $TENSOR_SIMILARITY_CLI). Options: --samples (default 100000), --seed
(default 0), --more-seeds (default 4: the estimate is repeated at seeds
seed+1 … seed+4, whose spread shows whether the standard error can be
trusted: outputs this heavy-tailed can make it too small).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import autograd.numpy as anp
import numpy as np
from autograd import grad

import tensor_similarity as ts

VOCAB, D, HEADS, E, LAYERS, ALPHA, N_TRAIN, LENGTH = 16, 16, 2, 4, 2, 0.5, 512, 8
ROPE = 10_000.0
STEPS, LR = 1500, 0.01
CHECKPOINTS = (0, 50, 200, 500, 1000, 1500)


def init(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    w = lambda rows, cols: rng.normal(size=(rows, cols)) / np.sqrt(cols)  # noqa: E731
    p = {"embed.weight": w(D, VOCAB), "unembed.weight": w(VOCAB, D)}
    for i in range(LAYERS):
        for k in ("q1", "k1", "q2", "k2", "v"):
            p[f"layers.{i}.{k}.weight"] = w(HEADS * E, D)
        for k in ("q1", "k1", "q2", "k2"):
            p[f"layers.{i}.{k}.bias"] = 0.1 * rng.normal(size=HEADS * E)
        p[f"layers.{i}.o.weight"] = w(D, HEADS * E)
    return p


def rotary(x, n: int):
    """Rot_s on the last axis (one head's e dimensions, "half" layout) at
    positions 0…n−1 along axis 1: x has shape (batch, n, heads, e)."""
    half = E // 2
    angle = np.arange(n)[:, None] * ROPE ** (-2.0 * np.arange(half) / E)[None, :]
    cos, sin = np.cos(angle)[None, :, None, :], np.sin(angle)[None, :, None, :]
    a, b = x[..., :half], x[..., half:]
    return anp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def forward(p: dict, tokens: np.ndarray):
    """Logits (batch, n, vocab) of token sequences (batch, n)."""
    batch, n = tokens.shape
    x = p["embed.weight"].T[tokens]  # (batch, n, d): the embedding of one-hot tokens
    mask = np.tril(np.ones((n, n)))
    for i in range(LAYERS):
        def leg(k, bias=True):
            y = anp.einsum("bnd,fd->bnf", x, p[f"layers.{i}.{k}.weight"])
            if bias:
                y = y + p[f"layers.{i}.{k}.bias"]
            return anp.reshape(y, (batch, n, HEADS, E))
        q1, k1, q2, k2 = (rotary(leg(k), n) for k in ("q1", "k1", "q2", "k2"))
        v = leg("v", bias=False)
        scores = anp.einsum("bshe,bthe->bhst", q1, k1) * anp.einsum("bshe,bthe->bhst", q2, k2)
        scores = scores * mask / E**2
        z = anp.reshape(anp.einsum("bhst,bthe->bshe", scores, v), (batch, n, HEADS * E))
        x = x + ALPHA * anp.einsum("bnf,df->bnd", z, p[f"layers.{i}.o.weight"])
    return anp.einsum("bnd,vd->bnv", x, p["unembed.weight"])


def loss(p: dict, tokens: np.ndarray) -> float:
    logits = forward(p, tokens)[:, 1:-1]  # predict tokens 2… from what precedes them
    target = tokens[:, 2:]
    shifted = logits - anp.max(logits, axis=-1, keepdims=True)
    logz = anp.log(anp.sum(anp.exp(shifted), axis=-1))
    picked = anp.sum(shifted * np.eye(VOCAB)[target], axis=-1)
    return anp.mean(logz - picked)


def data(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.zeros((N_TRAIN, LENGTH), dtype=int)
    t[:, :2] = rng.integers(0, VOCAB, size=(N_TRAIN, 2))
    for s in range(2, LENGTH):
        t[:, s] = (t[:, s - 1] + t[:, s - 2]) % VOCAB
    return t


def layout() -> list:
    blocks = [{"kind": "linear", "weight": "embed.weight"}]
    for i in range(LAYERS):
        block = {"kind": "attention", "heads": HEADS, "mask": "causal", "rotary_base": ROPE,
                 "scale": ALPHA, "skip": 1.0}
        for k in ("q1", "k1", "q2", "k2", "v", "o"):
            block[k] = f"layers.{i}.{k}.weight"
        for k in ("q1", "k1", "q2", "k2"):
            block[f"{k}_bias"] = f"layers.{i}.{k}.bias"
        blocks.append(block)
    blocks.append({"kind": "linear", "weight": "unembed.weight"})
    return blocks


def train(folder: str) -> list:
    done = [os.path.join(folder, f"step_{step}.safetensors") for step in CHECKPOINTS]
    if all(os.path.exists(p) for p in done):
        return done
    tokens = data(1)
    p = init(0)
    g = grad(loss)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    s = {k: np.zeros_like(v) for k, v in p.items()}
    paths = []
    for step in range(STEPS + 1):
        if step in CHECKPOINTS:
            path = os.path.join(folder, f"step_{step}.safetensors")
            ts.save(ts.Model.from_state_dict(p, layout()), path)
            paths.append(path)
            print(f"step {step}: loss {loss(p, tokens):.4f}", file=sys.stderr)
        if step == STEPS:
            break
        grads = g(p, tokens)
        for k in p:  # Adam
            m[k] = 0.9 * m[k] + 0.1 * grads[k]
            s[k] = 0.999 * s[k] + 0.001 * grads[k] ** 2
            mh, sh = m[k] / (1 - 0.9 ** (step + 1)), s[k] / (1 - 0.999 ** (step + 1))
            p[k] = p[k] - LR * mh / (np.sqrt(sh) + 1e-8)
    return paths


def compare(cli: str, a: str, b: str, context: int, metric: str, extra=()) -> dict:
    args = [cli, "compare", a, b, "--context", str(context), "--metric", metric, "--json", *extra]
    start = time.perf_counter()
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    value = json.loads(out.stdout)
    value["seconds"] = time.perf_counter() - start
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--more-seeds", type=int, default=4)
    args = parser.parse_args()
    os.makedirs(args.folder, exist_ok=True)
    cli = os.environ.get("TENSOR_SIMILARITY_CLI", "target/release/tensor-similarity")
    paths = train(args.folder)
    step = {p: os.path.basename(p).split("_")[1].split(".")[0] for p in paths}
    pairs = [(paths[0], paths[1]), (paths[1], paths[2]), (paths[2], paths[3]),
             (paths[3], paths[5]), (paths[4], paths[5]), (paths[0], paths[5])]
    seeds = range(args.seed + 1, args.seed + 1 + args.more_seeds)
    print(f"| checkpoints | context | closure | Monte Carlo, seed {args.seed} ({args.samples} samples) | "
          f"closure − MC in standard errors | Monte Carlo at seeds {seeds[0]}–{seeds[-1]} |")
    print("|---|---|---|---|---|---|")
    for context in (4, 8):
        for a, b in pairs:
            closure = compare(cli, a, b, context, "gaussian-closure")
            mc = [compare(cli, a, b, context, "gaussian-mc",
                          ("--samples", str(args.samples), "--seed", str(seed)))
                  for seed in (args.seed, *seeds)]
            first = mc[0]
            z = (closure["similarity"] - first["similarity"]) / first["standard_error"]
            more = ", ".join(f"{m['similarity']:.4f}" for m in mc[1:])
            print(f"| {step[a]} / {step[b]} | {context} | {closure['similarity']:.4f} | "
                  f"{first['similarity']:.4f} ± {first['standard_error']:.4f} | {z:+.1f} | "
                  f"{more} |", flush=True)


if __name__ == "__main__":
    main()
