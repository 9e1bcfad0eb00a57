"""Similarity matrices too large for one machine, on a Dask cluster.

:func:`matrix` splits the ``N × N`` matrix into tiles of ``tile × tile``
models. It first computes each model's squared norm once (one task per
file), then every tile on or above the diagonal (one task each, given the
norms of its rows and columns), and assembles the tiles, mirrored, into the
full matrix: the same values as :func:`tensor_similarity.matrix`, bit for
bit. Tasks read their checkpoints from the paths given, so every worker must
see the files at those paths (shared storage: NFS, a parallel file system,
a mounted bucket) and have ``tensor_similarity`` installed. Only paths,
norms and tiles travel over the network, never weights.

>>> from dask.distributed import Client                      # doctest: +SKIP
>>> client = Client("tcp://scheduler:8786")                   # doctest: +SKIP
>>> import tensor_similarity.dask as tsd                      # doctest: +SKIP
>>> sims = tsd.matrix(sorted(glob.glob("/shared/run/step_*.safetensors")), client=client)  # doctest: +SKIP

docs/python.md says how to start a cluster across machines.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np

import tensor_similarity as _ts

__all__ = ["matrix", "tiles"]


def _norm_task(path: str, metric: "_ts.Metric", options: dict) -> tuple:
    """A worker's task: the squared norm of the model at ``path``."""
    return tuple(_ts.squared_norms([path], metric, **options)[0])


def _tile_task(
    rows: Sequence[str],
    cols: Optional[Sequence[str]],
    row_norms: Optional[Sequence[tuple]],
    col_norms: Optional[Sequence[tuple]],
    metric: "_ts.Metric",
    options: dict,
) -> np.ndarray:
    """A worker's task: one tile, its models read from their paths."""
    rn = None if row_norms is None else np.asarray(row_norms, dtype=np.float64)
    cn = None if col_norms is None else np.asarray(col_norms, dtype=np.float64)
    return _ts.tile(rows, cols, row_norms=rn, col_norms=cn, metric=metric, **options)


def tiles(n: int, tile: int) -> list:
    """The tiles of an ``n × n`` matrix in groups of ``tile`` models:
    ``(rows, cols)`` ranges on and above the diagonal, row-major."""
    if tile < 1:
        raise ValueError(f"tile={tile}: a tile holds at least one model")
    starts = list(range(0, n, tile))
    groups = [range(s, min(s + tile, n)) for s in starts]
    return [(groups[i], groups[j]) for i in range(len(groups)) for j in range(i, len(groups))]


def matrix(
    paths: Sequence[os.PathLike | str],
    client: Any = None,
    tile: int = 16,
    metric: "str | _ts.Metric" = "tensor",
    *,
    progress: bool = False,
    **options: Any,
) -> np.ndarray:
    """The ``N × N`` similarity matrix of the models at ``paths``, computed on a
    Dask cluster.

    ``client``: a ``dask.distributed.Client`` (default: the current one,
    ``distributed.get_client()``). ``tile``: models per tile side; each tile
    task reads up to ``2 · tile`` files and computes ``tile²`` pairs (fewer on
    the diagonal), so larger tiles mean fewer, longer tasks and fewer reads.
    ``metric`` (a name or a metric object such as
    ``tensor_similarity.TensorMetric(context=4)``) and ``options`` are those
    of :func:`tensor_similarity.matrix` (metric options and load options such
    as ``context``, ``residual_scale``, ``config``). ``progress`` shows a bar of finished tiles (tqdm if
    installed).

    Paths are passed to the workers as given (made absolute here): they must
    name the same files on every worker. The result equals
    ``tensor_similarity.matrix(paths, metric, **options)``, and what that
    refuses is refused: a single path instead of a list (a ``TypeError``),
    an empty list (an ``OptionError``, here, before anything is
    scheduled), ``context=`` for models none of which is a sequence model
    (an ``OptionError``, from the workers).
    """
    try:
        from distributed import as_completed, get_client
    except ImportError as e:  # pragma: no cover - exercised only without dask
        raise ImportError(
            "tensor_similarity.dask needs dask.distributed: pip install 'dask[distributed]'"
        ) from e
    # The metric is built (and so checked) here, before anything is
    # scheduled: an unknown option is a TypeError here, an option the metric
    # does not take an OptionError here, not on a worker. (A selection of
    # outputs by negative index is resolved against the models, on the
    # workers.) The tasks get the metric object, which pickles with its
    # options, and the load options.
    metric_options, options = _ts._split_options(options)
    metric = _ts._as_metric(metric, metric_options)
    weight = metric.kind == "weight"
    # A single path (not a list) and an empty list are refused here, as
    # ts.matrix refuses them.
    paths = [os.path.abspath(os.fspath(p)) for p in _ts._listed(paths, "tensor_similarity.dask.matrix")]
    n = len(paths)
    client = client if client is not None else get_client()

    if weight:
        norms = [None] * n
    else:
        norms = client.map(
            _norm_task,
            paths,
            metric=metric,
            options=options,
            pure=False,
        )

    futures = {}
    for rows, cols in tiles(n, tile):
        diagonal = rows == cols
        row_paths = [paths[i] for i in rows]
        col_paths = None if diagonal else [paths[j] for j in cols]
        rn = None if weight else [norms[i] for i in rows]
        cn = None if weight or diagonal else [norms[j] for j in cols]
        f = client.submit(
            _tile_task, row_paths, col_paths, rn, cn, metric, options, pure=False
        )
        futures[f.key] = (f, rows, cols)

    out = np.eye(n)
    done = as_completed([f for f, _, _ in futures.values()])
    bar = _ts._progress(progress, len(futures), "similarity matrix on dask", unit="tile")
    try:
        for f in done:
            _, rows, cols = futures[f.key]
            block = f.result()
            out[rows.start : rows.stop, cols.start : cols.stop] = block
            out[cols.start : cols.stop, rows.start : rows.stop] = block.T
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out

