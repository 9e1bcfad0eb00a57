"""Exact, symmetry-invariant similarity of tensor-based neural networks.

Linear layers, bilinear MLPs ``D(Lx ∘ Rx)`` and bilinear attention compose
into one multilinear map, the network's *end-to-end tensor*. The tensor
similarity is the cosine of two such tensors, computed exactly by the Gram
recursion, and blind to the symmetries that leave the function unchanged
(permuted hidden units, rescalings, swapped bilinear factors, a change of
basis of the residual stream).

This package is the Python face of the Rust crate ``tensor-similarity``: all
computation runs in the compiled core, with the GIL released.

>>> import numpy as np, tensor_similarity as ts
>>> rng = np.random.default_rng(0)
>>> sd = {"bi_linear.weight": rng.normal(size=(8, 3)), "projection.weight": rng.normal(size=(2, 4))}
>>> a = ts.Model.from_state_dict(sd)
>>> round(ts.similarity(a, a), 12)
1.0

Models come from files (:func:`load`) or from a ``state_dict`` held in memory
(:meth:`Model.from_state_dict`: NumPy arrays, torch tensors, anything with
``__array__``). :func:`similarity` compares two, :func:`matrix` many,
:func:`tile` any block of a matrix (for computing one on a cluster: see
:mod:`tensor_similarity.dask`). Every error of the core is a
:class:`TensorSimilarityError` (a ``ValueError``) with the core's message.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import sys
import time
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import numpy as np

from . import _native
from ._native import TensorSimilarityError

__all__ = [
    "Model",
    "TensorSimilarityError",
    "load",
    "save",
    "similarity",
    "inner_product",
    "difference_similarity",
    "is_gaussian_exact",
    "matrix",
    "squared_norms",
    "tile",
    "__version__",
]

__version__ = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]

#: Keyword options that say how to read a file (or a state_dict without
#: metadata); see :func:`load`.
LOAD_OPTIONS = ("residual_scale", "config", "heads", "mask", "attn_scale")
#: Keyword options of the metrics; see :func:`similarity`.
METRIC_OPTIONS = (
    "context",
    "input_metric",
    "input_mean",
    "input_covariance",
    "outputs",
    "output_weights",
    "positions",
    "max_memory",
)

# The dtype a tensor was stored in, by the name NumPy or torch gives it.
_DTYPES = {
    "float64": "F64",
    "double": "F64",
    "float32": "F32",
    "float": "F32",
    "float16": "F16",
    "half": "F16",
    "bfloat16": "BF16",
}


def _array(x: Any) -> tuple:
    """A float matrix or vector option as it crosses into the core."""
    a = np.ascontiguousarray(np.asarray(x, dtype=np.float64))
    return (a.tobytes(), list(a.shape))


def _load_kwargs(options: Mapping[str, Any]) -> dict:
    out = {k: v for k, v in options.items() if v is not None}
    if "config" in out:
        out["config"] = os.fspath(out["config"])
    mask = out.get("mask")
    if mask is not None and not isinstance(mask, str):
        out["mask"] = _array(mask)
    return out


def _split_options(options: Mapping[str, Any], allowed: Sequence[str] = METRIC_OPTIONS + LOAD_OPTIONS):
    """Metric options and load options; a TypeError for any other name."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(
            f"unexpected keyword argument(s) {', '.join(unknown)}; "
            f"metric options: {', '.join(METRIC_OPTIONS)}; load options: {', '.join(LOAD_OPTIONS)}"
        )
    metric = {k: v for k, v in options.items() if k in METRIC_OPTIONS}
    load = {k: v for k, v in options.items() if k in LOAD_OPTIONS}
    return metric, load


class Model:
    """A model: a checked chain of blocks (linear, bilinear, attention).

    Build one with :func:`load` (a file) or :meth:`from_state_dict` (tensors in
    memory). A model is immutable; its weights are held by the compiled core
    in ``float64``. It pickles (for ``multiprocessing`` or Dask tasks) as its
    safetensors bytes, and comes back in the ``"described"`` layout.
    """

    __slots__ = ("_native",)

    def __init__(self, native: "_native.NativeModel") -> None:
        if not isinstance(native, _native.NativeModel):
            raise TypeError(
                "Model() wraps a loaded model; build one with tensor_similarity.load(path) "
                "or Model.from_state_dict(mapping)"
            )
        self._native = native

    @classmethod
    def load(cls, path: PathLike, **options: Any) -> "Model":
        """The model in the file at ``path``: the same as :func:`load`."""
        return load(path, **options)

    @classmethod
    def from_state_dict(
        cls,
        mapping: Mapping[str, Any],
        layout: Union[None, Sequence[Mapping[str, Any]], Mapping[str, Any], str] = None,
        **options: Any,
    ) -> "Model":
        """A model from a ``state_dict``: a mapping of tensor names to arrays.

        Values may be NumPy arrays, torch tensors (on any device, with or
        without ``requires_grad``, bfloat16 included) or anything with
        ``__array__``; torch is never imported. They are converted to
        ``float64``; the dtype they were stored in is kept for
        :attr:`tensors`. Integer, complex or boolean tensors are an error
        naming the tensor.

        ``layout`` says where the blocks' tensors are, exactly as a file's
        metadata does (docs/format.md): a list of block dicts such as
        ``{"kind": "bilinear", "left": "mlp.l.weight", "right": "mlp.r.weight",
        "down": "mlp.d.weight"}``, a full ``{"version": 1, "blocks": [...],
        "sequence": ...}`` dict, or its JSON string. ``None`` infers one of the
        research layouts from the names (``embed``/``body.{i}``/``head``,
        ``bi_linear``/``projection``, the research Transformer, the
        attention-only language model). As for files, a tensor that no
        block uses is an error.

        ``options`` are :func:`load`'s: ``residual_scale``, ``heads``, ``mask``,
        ``attn_scale``, ``config`` (a run config file; there is no folder to
        find one in).
        """
        if not isinstance(mapping, Mapping):
            if hasattr(mapping, "items"):
                mapping = dict(mapping.items())
            else:
                raise TypeError(
                    f"from_state_dict takes a mapping of names to arrays, not {type(mapping).__name__}"
                )
        _, load_options = _split_options(options, LOAD_OPTIONS)
        names, dtypes, shapes, data = [], [], [], []
        for name, value in mapping.items():
            if not isinstance(name, str):
                raise TypeError(f"state_dict keys are tensor names (str), found {name!r}")
            dtype, array = _tensor(name, value)
            names.append(name)
            dtypes.append(dtype)
            shapes.append(list(array.shape))
            data.append(array.tobytes())
        metadata = _metadata(layout)
        native = _native.from_state_dict(
            names, dtypes, shapes, data, metadata, **_load_kwargs(load_options)
        )
        return cls(native)

    # -- what the model is ------------------------------------------------

    @property
    def input_width(self) -> int:
        """The input width ``d`` (per position, for a sequence model)."""
        return self._native.input_width

    @property
    def output_width(self) -> int:
        """The output width ``n_L`` (per position, for a sequence model)."""
        return self._native.output_width

    @property
    def is_sequence(self) -> bool:
        """Whether the model reads sequences (compare it with ``context=N``)."""
        return self._native.is_sequence

    @property
    def depth(self) -> int:
        """The number of blocks."""
        return self._native.depth

    @property
    def orders(self) -> list:
        """Each block's order (1 linear, 2 bilinear, 5 attention)."""
        return self._native.orders

    @property
    def parameter_count(self) -> int:
        """The number of parameters (weights and biases) of all blocks."""
        return self._native.parameter_count

    @property
    def layout(self) -> str:
        """How the tensors were found: ``"described"`` (metadata) or the
        research layout recognised (``"embed_body_head"``,
        ``"bi_linear_projection"``, ``"transformer"``, ``"attention_lm"``)."""
        return self._native.layout

    @property
    def blocks(self) -> list:
        """One dict per block: ``kind``, ``order``, ``input_width``,
        ``output_width``, ``mixes_positions``, ``parameters``."""
        return self._native.blocks()

    @property
    def tensors(self) -> list:
        """One dict per tensor of the source: ``name``, ``block``, ``role``,
        ``dtype`` (as stored: ``"F64"``, ``"F32"``, ``"F16"``, ``"BF16"``),
        ``shape``."""
        return self._native.tensors()

    @property
    def native_context(self) -> Optional[int]:
        """The context length the run's config gives (``n_ctx``), if any."""
        return self._native.native_context

    @property
    def config(self) -> Optional[str]:
        """The run config the layout was read with, if any."""
        c = self._native.config
        return None if c is None else os.fspath(c)

    @property
    def assumptions(self) -> list:
        """The defaults applied where nothing said (e.g. a rotary base)."""
        return self._native.assumptions

    def forward(self, x: Any) -> np.ndarray:
        """The model's function on NumPy inputs.

        A vector model takes ``[d]`` (one input) or ``[samples, d]``; a
        sequence model takes one sequence ``[n, d]`` (a row per position) or a
        batch ``[batch, n, d]``. The result has the same leading dimensions
        and ``n_L`` last.
        """
        a = np.asarray(x, dtype=np.float64)
        if self.is_sequence:
            if a.ndim == 2:
                return self._run(a, True)
            if a.ndim == 3:
                return np.stack([self._run(s, True) for s in a])
            raise TensorSimilarityError(
                f"a sequence model takes [n, d] or [batch, n, d] inputs, found shape {a.shape}"
            )
        if a.ndim == 1:
            return self._run(a[None, :], False)[0]
        if a.ndim == 2:
            return self._run(a, False)
        raise TensorSimilarityError(
            f"a vector model takes [d] or [samples, d] inputs, found shape {a.shape}"
        )

    __call__ = forward

    def _run(self, a: np.ndarray, sequence: bool) -> np.ndarray:
        a = np.ascontiguousarray(a)
        out = self._native.forward((a.tobytes(), list(a.shape)), sequence)
        return np.frombuffer(out, dtype=np.float64).reshape(a.shape[0], self.output_width).copy()

    def save(self, path: PathLike, layout: str = "described", dtype: str = "F64") -> None:
        """Writes the model to ``path``: the same as :func:`save`."""
        save(self, path, layout=layout, dtype=dtype)

    def __reduce__(self):
        # Pickled as its safetensors bytes (for multiprocessing, Dask tasks):
        # the same function and weights, read back in the described layout.
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.safetensors")
            save(self, path)
            with open(path, "rb") as f:
                data = f.read()
        return (_from_safetensors_bytes, (data,))

    def __repr__(self) -> str:
        blocks = ", ".join(
            f"{b['kind']} {b['input_width']}→{b['output_width']}" for b in self.blocks
        )
        seq = ", sequence" if self.is_sequence else ""
        return (
            f"Model({blocks}; input {self.input_width}, output {self.output_width}{seq}; "
            f"{self.parameter_count} parameters; {self.layout})"
        )


def _from_safetensors_bytes(data: bytes) -> Model:
    """A model from the bytes of a safetensors file (what pickling stores)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        return load(path)


def _tensor(name: str, value: Any) -> tuple:
    """``(stored dtype, C-contiguous float64 array)`` of one state_dict value."""
    stored = str(getattr(value, "dtype", "")).replace("torch.", "")
    try:
        array = np.asarray(value)
    except Exception:
        # A torch tensor NumPy cannot take as it is: one that requires grad,
        # lives on a GPU, or is bfloat16 (NumPy has no bfloat16).
        v = value
        for method in ("detach", "cpu"):
            if hasattr(v, method):
                v = getattr(v, method)()
        try:
            array = np.asarray(v)
        except Exception as e:
            if not hasattr(v, "float"):
                raise TypeError(f"tensor {name!r}: cannot convert {type(value).__name__} to an array: {e}") from e
            array = np.asarray(v.float())
    if array.dtype == object:
        raise TypeError(f"tensor {name!r}: {type(value).__name__} is not an array of numbers")
    if array.dtype.kind not in "f":
        if array.dtype.kind == "V" or array.dtype.name == "bfloat16":
            # ml_dtypes' bfloat16 and similar extension types.
            array = array.astype(np.float32)
        else:
            raise TensorSimilarityError(
                f"state_dict: tensor {name!r} has dtype {array.dtype}; models are made of "
                "floating-point tensors (float64, float32, float16, bfloat16)"
            )
    dtype = _DTYPES.get(stored) or _DTYPES.get(str(array.dtype), "F64")
    if stored == "bfloat16":
        dtype = "BF16"
    return dtype, np.ascontiguousarray(array, dtype=np.float64)


def _metadata(layout: Any) -> Optional[str]:
    if layout is None:
        return None
    if isinstance(layout, str):
        return layout
    if isinstance(layout, Mapping):
        return json.dumps(dict(layout))
    if isinstance(layout, (list, tuple)):
        return json.dumps({"version": 1, "blocks": list(layout)})
    raise TypeError(
        "layout is None, a list of block dicts, a metadata dict or its JSON string, "
        f"not {type(layout).__name__}"
    )


def load(path: PathLike, **options: Any) -> Model:
    """The model in the file at ``path``.

    ``.safetensors`` files are read with their ``tensor_similarity`` metadata
    or, without it, by the names of the research layouts (docs/format.md);
    PyTorch ``torch.save`` files (``.pt``, ``.pth``, ``.bin``: a ``state_dict``
    or a training checkpoint wrapping one) are read by the core without
    PyTorch and without running pickled code. A sequence layout's run
    config (``config.json``/``config.yaml``) is found beside the checkpoint
    or one or two folders up.

    Options (only files without metadata need them): ``residual_scale`` (the
    residual scale of every bilinear block of a vector layout), ``config`` (the
    run config to read instead of looking beside the checkpoint), ``heads``,
    ``mask`` (``"causal"``, ``"none"``, ``"diag"`` or an ``n × n`` matrix),
    ``attn_scale``.
    """
    _, load_options = _split_options(options, LOAD_OPTIONS)
    return Model(_native.load(os.fspath(path), **_load_kwargs(load_options)))


def save(model: Model, path: PathLike, layout: str = "described", dtype: str = "F64") -> None:
    """Writes ``model`` to ``path`` as safetensors.

    ``layout``: ``"described"`` (metadata naming the tensors ``blocks.{i}.{role}``;
    any model, sequence models included), ``"embed_body_head"`` or
    ``"bi_linear_projection"`` (the research names; metadata is written too).
    ``dtype``: ``"F64"``, ``"F32"``, ``"F16"`` or ``"BF16"``.
    """
    _native.save(_model(model), os.fspath(path), layout, dtype)


def _model(m: Any, load_options: Optional[Mapping[str, Any]] = None) -> "_native.NativeModel":
    if isinstance(m, Model):
        return m._native
    if isinstance(m, (str, os.PathLike)):
        return load(m, **(load_options or {}))._native
    raise TypeError(f"expected a tensor_similarity.Model or a path, not {type(m).__name__}")


def _models(items: Iterable[Any], load_options: Mapping[str, Any]) -> list:
    """Native models of ``items`` (models or paths; paths read in parallel)."""
    items = list(items)
    paths = [i for i, m in enumerate(items) if isinstance(m, (str, os.PathLike))]
    out: list = [None] * len(items)
    if paths:
        loaded = _native.load_many(
            [os.fspath(items[i]) for i in paths], **_load_kwargs(load_options)
        )
        for i, m in zip(paths, loaded):
            out[i] = m
    for i, m in enumerate(items):
        if out[i] is None:
            out[i] = _model(m)
    return out


def _indices(what: str, value: Any, size: Optional[int], hint: str) -> Optional[list]:
    """A selection (int, slice, range or sequence of ints) as a list."""
    if value is None:
        return None
    if isinstance(value, slice):
        if size is None:
            raise TensorSimilarityError(f"{what}= as a slice needs {hint}")
        return list(range(*value.indices(size)))
    if isinstance(value, (int, np.integer)):
        value = [value]
    out = []
    for v in value:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{what}= holds indices (int), found {v!r}")
        if v < 0:
            if size is None:
                raise TensorSimilarityError(f"{what}= with a negative index needs {hint}")
            v += size
            if v < 0:
                raise TensorSimilarityError(f"{what}=: index {v - size} out of range for {size}")
        out.append(int(v))
    return out


def _metric(kind: str, natives: Sequence[Any], options: Mapping[str, Any]) -> "_native.Metric":
    """The native metric of ``kind`` with ``options`` resolved against ``natives``."""
    if not isinstance(kind, str):
        raise TypeError(f"metric is a name (\"tensor\", \"gaussian\", \"weight\"), not {type(kind).__name__}")
    kw = {k: v for k, v in options.items() if v is not None}
    width = natives[0].output_width if natives else None
    if "outputs" in kw:
        kw["outputs"] = _indices("outputs", kw["outputs"], width, "the models' output width")
    if "positions" in kw:
        kw["positions"] = _indices(
            "positions", kw["positions"], kw.get("context"), "context=N (the number of positions)"
        )
    for key in ("input_metric", "input_mean", "input_covariance", "output_weights"):
        if key in kw:
            kw[key] = _array(kw[key])
    if "max_memory" in kw:
        b = kw["max_memory"]
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise TypeError(f"max_memory= is a number of bytes (a positive int), not {b!r}")
        kw["max_memory"] = int(b)
    if "context" in kw:
        c = kw["context"]
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"context= is a number of positions (int), not {c!r}")
        if c < 0:
            raise TensorSimilarityError(f"context={c}: the context length is a number of positions")
        kw["context"] = int(c)
    return _native.Metric(kind, **kw)


def similarity(
    a: Union[Model, PathLike],
    b: Union[Model, PathLike],
    metric: str = "tensor",
    *,
    context: Optional[int] = None,
    input_metric: Any = None,
    input_mean: Any = None,
    input_covariance: Any = None,
    outputs: Any = None,
    output_weights: Any = None,
    positions: Any = None,
    max_memory: Optional[int] = None,
    **load_options: Any,
) -> float:
    """The similarity of ``a`` and ``b`` (models or paths), in ``[-1, 1]``.

    ``metric``:

    * ``"tensor"`` (default): the cosine of the symmetrised end-to-end tensors
      (SPEC §2), exact, invariant to the model's symmetries. Options:
      ``context`` (the number of positions, required for sequence models),
      ``input_metric`` (``M = E[x̃x̃ᵀ]``, ``(d+1) × (d+1)`` per position or
      ``(nd+1) × (nd+1)`` over a sequence), or ``input_mean``/``input_covariance``
      (the metric of ``x ~ N(μ, Σ)``), ``outputs`` (compare only these outputs:
      an int, a list or a slice, e.g. one class's logit), ``output_weights``
      (``Q``, ``n_L × n_L``), ``positions`` (a sequence model's positions to
      read out, e.g. ``[-1]`` for the last; needs ``context``).
    * ``"gaussian"``: ``E[f_A·f_B]`` under ``x ~ N(μ, Σ)`` by moment propagation
      (exact for one nonlinear position, a Gaussian closure beyond: see
      :func:`is_gaussian_exact`); on sequence models the rows are i.i.d.
      (SPEC §7). Options: ``context``, ``input_mean``, ``input_covariance``.
    * ``"weight"``: the cosine of the concatenated parameters (the naive
      baseline; models of equal shapes). No options.

    ``max_memory`` (bytes; ``"tensor"`` and ``"gaussian"``): the most memory
    the comparison may use, by default what the machine has. A comparison
    whose estimated peak exceeds it is refused before it starts, with the
    estimate and the largest context that fits.

    An option the metric does not take is an error. ``load_options`` are
    :func:`load`'s, for paths. The GIL is released while it computes.
    """
    metric_options, load = _split_options(load_options, LOAD_OPTIONS)
    na, nb = _model(a, load), _model(b, load)
    m = _metric(
        metric,
        [na, nb],
        dict(
            context=context,
            input_metric=input_metric,
            input_mean=input_mean,
            input_covariance=input_covariance,
            outputs=outputs,
            output_weights=output_weights,
            positions=positions,
            max_memory=max_memory,
        ),
    )
    return _native.similarity(m, na, nb)


def inner_product(
    a: Union[Model, PathLike],
    b: Union[Model, PathLike],
    metric: str = "tensor",
    *,
    log: bool = False,
    **options: Any,
) -> Union[float, tuple]:
    """The raw inner product ``⟨A, B⟩`` of the metric (``"tensor"`` or
    ``"gaussian"``; options as for :func:`similarity`).

    Deep models' inner products overflow ``float`` (the core keeps them as
    logarithms): ``log=True`` returns ``(sign, ln |⟨A, B⟩|)`` instead of the
    value, which may be ``inf``.
    """
    metric_options, load = _split_options(options)
    na, nb = _model(a, load), _model(b, load)
    sign, ln = _native.inner_product(_metric(metric, [na, nb], metric_options), na, nb)
    if log:
        return (sign, ln)
    if sign == 0:
        return 0.0
    try:
        return sign * math.exp(ln)
    except OverflowError:
        return sign * math.inf


def difference_similarity(
    a0: Union[Model, PathLike],
    a1: Union[Model, PathLike],
    b0: Union[Model, PathLike],
    b1: Union[Model, PathLike],
    metric: str = "tensor",
    **options: Any,
) -> float:
    """The cosine of the directions ``A1 − A0`` and ``B1 − B0`` (for instance two
    fine-tunes of one base, or two steps of training runs), by bilinearity
    of the inner product: ``⟨A1−A0, B1−B0⟩ = ⟨A1,B1⟩ − ⟨A1,B0⟩ − ⟨A0,B1⟩ + ⟨A0,B0⟩``.

    ``metric`` is ``"tensor"`` or ``"gaussian"``, with :func:`similarity`'s
    options.
    """
    metric_options, load = _split_options(options)
    natives = [_model(m, load) for m in (a0, a1, b0, b1)]
    return _native.difference_similarity(_metric(metric, natives, metric_options), *natives)


def is_gaussian_exact(a: Union[Model, PathLike], b: Union[Model, PathLike], **options: Any) -> bool:
    """Whether the Gaussian similarity of ``a`` and ``b`` is exact (every block
    of order ≥ 2 of either model at one position) rather than a Gaussian
    closure."""
    metric_options, load = _split_options(options)
    na, nb = _model(a, load), _model(b, load)
    return _native.gaussian_is_exact(_metric("gaussian", [na, nb], metric_options), na, nb)


class _Counter:
    """A plain progress counter on stderr, for when tqdm is not installed."""

    def __init__(self, total: int, desc: str, unit: str) -> None:
        self.total, self.desc, self.unit, self.n, self.last = total, desc, unit, 0, 0.0

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= 0.2 or self.n == self.total:
            self.last = now
            sys.stderr.write(f"\r{self.desc}: {self.n}/{self.total} {self.unit}s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.n:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _progress(enabled: bool, total: int, desc: str, unit: str = "pair"):
    """A progress bar (tqdm if installed, else a stderr counter), or None."""
    if not enabled or total == 0:
        return None
    try:
        from tqdm.auto import tqdm  # type: ignore
    except ImportError:
        return _Counter(total, desc, unit)
    return tqdm(total=total, desc=desc, unit=unit)


def _metric_and_models(items, metric, options):
    metric_options, load = _split_options(options)
    natives = _models(items, load)
    return _metric(metric, natives, metric_options), natives


def matrix(
    models: Iterable[Union[Model, PathLike]],
    metric: str = "tensor",
    *,
    progress: bool = True,
    **options: Any,
) -> np.ndarray:
    """The symmetric ``N × N`` matrix of similarities between ``models`` (models
    or paths, in the order given), with a unit diagonal, as a NumPy array.

    Each model's squared norm is computed once, then the ``N(N−1)/2`` pairs in
    parallel on all cores, with the GIL released. ``progress`` shows a bar
    (tqdm if installed, else a counter on stderr). ``options``: the metric's
    (see :func:`similarity`) and, for paths, :func:`load`'s. Entry ``(i, j)``
    equals ``similarity(models[i], models[j], metric, **options)`` up to
    rounding.
    """
    m, natives = _metric_and_models(models, metric, options)
    n = len(natives)
    bar = _progress(progress, n * (n - 1) // 2, f"{metric} similarity matrix")
    try:
        out = _native.matrix(m, natives, None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    return np.frombuffer(out, dtype=np.float64).reshape(n, n).copy()


def squared_norms(
    models: Iterable[Union[Model, PathLike]], metric: str = "tensor", **options: Any
) -> np.ndarray:
    """Each model's squared norm ``⟨A, A⟩`` under the metric, in log scale: an
    ``N × 2`` array whose rows are ``(sign, ln |⟨A, A⟩|)``, what :func:`tile`
    reuses so that a matrix computed by tiles computes each norm once.
    ``metric`` is ``"tensor"`` or ``"gaussian"``.
    """
    m, natives = _metric_and_models(models, metric, options)
    norms = _native.squared_norms(m, natives)
    return np.array(norms, dtype=np.float64).reshape(len(natives), 2)


def _norm_list(norms: Any, n: int, what: str) -> Optional[list]:
    if norms is None:
        return None
    a = np.asarray(norms, dtype=np.float64)
    if a.shape != (n, 2):
        raise TensorSimilarityError(
            f"{what}: expected shape ({n}, 2) (rows of squared_norms()), found {a.shape}"
        )
    return [(float(s), float(ln)) for s, ln in a]


def tile(
    rows: Iterable[Union[Model, PathLike]],
    cols: Optional[Iterable[Union[Model, PathLike]]] = None,
    *,
    row_norms: Any = None,
    col_norms: Any = None,
    metric: str = "tensor",
    progress: bool = False,
    **options: Any,
) -> np.ndarray:
    """One block of a similarity matrix: ``rows × cols`` (models or paths).

    Entry ``(i, j)`` is the similarity of ``rows[i]`` and ``cols[j]``, computed
    as ``⟨rows[i], cols[j]⟩`` with the two squared norms. ``cols=None`` is a
    tile on the diagonal, the rows with themselves: exactly
    ``matrix(rows)``. ``row_norms``/``col_norms`` are rows of
    :func:`squared_norms` for these models (computed here when not given;
    the weight metric takes none).

    Split ``N`` models into consecutive groups: the diagonal tiles and the
    tiles of each group with every later group, mirrored, assemble into the
    same matrix as :func:`matrix`, bit for bit; :mod:`tensor_similarity.dask`
    does that on a cluster.
    """
    metric_options, load = _split_options(options)
    r = _models(rows, load)
    c = None if cols is None else _models(cols, load)
    m = _metric(metric, r + (c or []), metric_options)
    rn = _norm_list(row_norms, len(r), "row_norms")
    if c is None and col_norms is not None:
        raise TensorSimilarityError("col_norms given without cols")
    cn = None if c is None else _norm_list(col_norms, len(c), "col_norms")
    shape = (len(r), len(r) if c is None else len(c))
    total = shape[0] * (shape[0] - 1) // 2 if c is None else shape[0] * shape[1]
    bar = _progress(progress, total, f"{metric} similarity tile")
    try:
        out = _native.tile(m, r, rn, c, cn, None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    return np.frombuffer(out, dtype=np.float64).reshape(shape).copy()
