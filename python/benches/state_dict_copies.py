"""Peak memory and time of handing one large weight to the core.

Builds a ``bi_linear``/``projection`` model whose ``bi_linear.weight`` is
``2h × d`` (default ``4096 × 4096``: 128 MiB in float64) from a NumPy
array of the given dtype, in a fresh process per case, and prints the
process's peak resident memory above what it held before the call (the
arrays included), and the
time ``Model.from_state_dict`` took. Run it before and after a change to
the conversion::

    python python/benches/state_dict_copies.py            # float64 and float32
    python python/benches/state_dict_copies.py --size 2048
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def case(dtype: str, size: int) -> dict:
    import numpy as np

    import tensor_similarity as ts

    rng = np.random.default_rng(0)
    sd = {
        "bi_linear.weight": rng.standard_normal((size, size), dtype=np.float32).astype(dtype),
        "projection.weight": rng.standard_normal((4, size // 2)).astype(dtype),
    }
    # What the process holds now (the arrays included), against its peak
    # after: the peak is reached during the call, above the arrays' making.
    with open("/proc/self/statm") as f:
        base = int(f.read().split()[1]) * resource.getpagesize() // 1024
    start = time.perf_counter()
    model = ts.Model.from_state_dict(sd)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert model.parameter_count >= size * size
    return {
        "dtype": dtype,
        "size": size,
        "array_mib": sd["bi_linear.weight"].nbytes / 2**20,
        "peak_above_input_mib": (peak - base) / 1024,
        "seconds": seconds,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args.case, args.size)))
        return
    for dtype in ("float64", "float32"):
        runs = [
            json.loads(
                subprocess.run(
                    [sys.executable, __file__, "--case", dtype, "--size", str(args.size)],
                    check=True, capture_output=True, text=True,
                ).stdout
            )
            for _ in range(args.repeat)
        ]
        best = min(runs, key=lambda r: r["seconds"])
        print(
            f"{dtype} {args.size}×{args.size} ({best['array_mib']:.0f} MiB): "
            f"peak {max(r['peak_above_input_mib'] for r in runs):.0f} MiB above the input, "
            f"{best['seconds'] * 1000:.0f} ms (best of {args.repeat})"
        )


if __name__ == "__main__":
    main()
