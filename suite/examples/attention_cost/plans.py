"""How the position work of one bijection of the attention Gram step can grow.

The pair term of the step (docs/attention.md, "The attention pair") sums,
for every head pair, query positions s, s' and key positions t, t', the
contraction N_sigma of five e x e matrices, one per leg pair of a bijection
sigma from A's legs Q1(s,a) K1(t,a) Q2(s,b) K2(t,b) V(t,c) to B's. Each
matrix X_{l,l'}(p, q) carries two position indices and two head-width
indices. This script treats each bijection's sum over (t, t') as a tensor
network with the positions as indices (size n) beside the head-width
indices (size e), with s, s', c, c' kept, and enumerates every order of
pairwise contractions. It reports, per bijection:

* whether some order costs only n^3 e^3 and n^4 e^2 steps (no n^4 e^3), and
* the least k such that some order has no step with four position indices
  (pure n^3 position work) at n^3 e^k.

The network has no mask: the "none" mask, the easiest one, so what it
cannot do no mask can. Standard library only; run with python3.
"""

import itertools
from collections import Counter

A = [("s", "a"), ("t", "a"), ("s", "b"), ("t", "b"), ("t", "c")]
B = [("S", "x"), ("T", "x"), ("S", "y"), ("T", "y"), ("T", "z")]
KEPT = set("sScz")
POSITIONS = set("stST")


def orders(factors):
    """Every pairwise contraction order: yields the steps' (n, e) degrees."""
    if len(factors) == 1:
        yield ()
        return
    for i, j in itertools.combinations(range(len(factors)), 2):
        union = factors[i] | factors[j]
        rest = [f for k, f in enumerate(factors) if k not in (i, j)]
        others = set().union(*rest) if rest else set()
        keep = frozenset(v for v in union if v in KEPT or v in others)
        step = (len(union & POSITIONS), len(union - POSITIONS))
        for tail in orders(rest + [keep]):
            yield (step,) + tail


def main():
    mixed, pure = Counter(), Counter()
    for sigma in itertools.permutations(range(5)):
        factors = [frozenset(A[i] + B[sigma[i]]) for i in range(5)]
        plans = list(orders(factors))
        ok = any(all(i <= 3 and j <= 3 or i == 4 and j <= 2 for i, j in p) for p in plans)
        mixed[ok] += 1
        k = min(max(j for _, j in p) for p in plans if all(i <= 3 for i, _ in p))
        pure[k] += 1
    print("bijections with an order of n^3 e^3 and n^4 e^2 steps only:", mixed[True])
    print("bijections that need an n^4 e^3 step in every order:", mixed[False])
    for k in sorted(pure):
        print(f"bijections whose best pure-n^3 order costs n^3 e^{k}: {pure[k]}")


if __name__ == "__main__":
    main()
