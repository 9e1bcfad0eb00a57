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
:mod:`tensor_similarity.dask`). A metric with its options can also be built
once and called many times: :class:`TensorMetric`, :class:`GaussianMetric`,
:class:`GaussianClosureMetric`, :class:`GaussianMonteCarloMetric`,
:class:`WeightMetric`.

>>> metric = ts.TensorMetric(outputs=[0])
>>> round(metric.similarity(a, a), 12)
1.0

Every error of the core is a :class:`TensorSimilarityError` (a
``ValueError``) with the core's message, of a class that says its family
(:class:`FileError`, :class:`IncomparableError`, :class:`MemoryLimitError`, …).
A model read without its normalisations (``ignore_norms=True``) is another
function than its checkpoint's: loading one emits a
:class:`NormsRemovedWarning`. A Gaussian value that is a closure, not the
exact expectation, emits a :class:`GaussianClosureWarning`; the Monte Carlo
metric ``"gaussian-mc"`` estimates it without bias, with a standard error.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import sys
import time
import warnings
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence, Union

import numpy as np

from . import _native
from ._errors import (
    FileError,
    GaussianClosureWarning,
    IncomparableError,
    MemoryLimitError,
    NonFiniteError,
    NormsRemovedWarning,
    NumericalError,
    OptionError,
    ShapeError,
    TensorSimilarityError,
    ZeroNormError,
)

__all__ = [
    "Model",
    "Metric",
    "TensorMetric",
    "GaussianMetric",
    "GaussianClosureMetric",
    "GaussianMonteCarloMetric",
    "MonteCarloEstimate",
    "MonteCarloMatrix",
    "HeadPaths",
    "HeadMatching",
    "PathFamilies",
    "WeightMetric",
    "TensorSimilarityError",
    "OptionError",
    "ShapeError",
    "NonFiniteError",
    "IncomparableError",
    "ZeroNormError",
    "NumericalError",
    "MemoryLimitError",
    "FileError",
    "NormsRemovedWarning",
    "GaussianClosureWarning",
    "load",
    "save",
    "similarity",
    "inner_product",
    "difference_similarity",
    "is_gaussian_exact",
    "matrix",
    "squared_norms",
    "tile",
    "heads",
    "head_paths",
    "head_matching",
    "paths",
    "__version__",
]

__version__ = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]

#: Keyword options that say how to read a file (or a state_dict without
#: metadata); see :func:`load`.
LOAD_OPTIONS = (
    "residual_scale",
    "skip",
    "config",
    "heads",
    "mask",
    "attn_scale",
    "rope_base",
    "ignore_norms",
)
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
    "max_work",
    "samples",
    "seed",
    "head",
    "family",
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


def _array(x: Any) -> np.ndarray:
    """An array as the core reads it in place: C-contiguous, aligned,
    native-endian ``float64`` or ``float32`` (kept as it is when it already
    is one; anything else becomes ``float64``)."""
    a = np.asarray(x)
    if a.dtype not in (np.float64, np.float32) or not a.dtype.isnative:
        a = a.astype(np.float64)
    return np.require(a, requirements=["C", "A"])


def _config_content(value: Any, depth: int = 0) -> Any:
    """A ``config=`` mapping as plain dicts and lists (an OmegaConf or other
    mapping type included); the core checks the values."""
    if depth > 64:
        raise OptionError("config=: nested more than 64 levels deep")
    if isinstance(value, Mapping):
        return {k: _config_content(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or (
        isinstance(value, Sequence) and not isinstance(value, (str, bytes))
    ):
        return [_config_content(v, depth + 1) for v in value]
    return value


def _load_kwargs(options: Mapping[str, Any]) -> dict:
    out = {k: v for k, v in options.items() if v is not None}
    if "config" in out:
        config = out["config"]
        if isinstance(config, Mapping):
            out["config"] = _config_content(config)
        elif isinstance(config, (str, os.PathLike)):
            out["config"] = os.fspath(config)
        else:
            raise TypeError(
                "config= is a path to a config.json/config.yaml or a dict of its content, "
                f"not {type(config).__name__}"
            )
    mask = out.get("mask")
    if mask is not None and not isinstance(mask, str):
        out["mask"] = _array(mask)
    if "ignore_norms" in out:
        flag = out["ignore_norms"]
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"ignore_norms= is True or False, not {flag!r}")
        out["ignore_norms"] = bool(flag)
    return out


def _removed(norms: Sequence[Mapping[str, Any]]) -> str:
    """The norms removed, as a warning names them: ``rmsnorm at pre_unembed``."""
    return ", ".join(f"{n['kind']} at {n['place']}" for n in norms if not n["folded"])


def _stacklevel() -> int:
    """The ``stacklevel`` of ``warnings.warn`` called from the caller of this
    function that points at the first frame outside this package (the
    user's call, however deep the package's own calls go)."""
    here = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    return level


def _warn_norms_removed(natives: Sequence[Any], sources: Sequence[str]) -> None:
    """A :class:`NormsRemovedWarning` naming the ``sources`` (files, or the
    state_dict) whose models were read without their norms, if any was:
    the models are other functions than the checkpoints'."""
    removed = [(src, n) for src, n in zip(sources, natives) if n.norms_removed]
    if not removed:
        return
    tail = (
        "; the model is another function than the checkpoint's, and every similarity with it "
        "is that of the model without its norms"
    )
    if len(natives) == 1:
        src, native = removed[0]
        message = (
            f"{src}: read without its norms (ignore_norms=True removed "
            f"{_removed(native.norms())}){tail}"
        )
    else:
        named = ", ".join(src for src, _ in removed[:3])
        if len(removed) > 3:
            named += f", and {len(removed) - 3} more"
        message = (
            f"ignore_norms=True: {len(removed)} of {len(natives)} models read without their "
            f"norms ({named}); they are other functions than the checkpoints', and every "
            "similarity with them is that of the models without their norms"
        )
    warnings.warn(NormsRemovedWarning(message), stacklevel=_stacklevel())


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
    safetensors bytes, and comes back in the ``"described"`` layout (with its
    :attr:`norms` as read).

    A model read with ``ignore_norms=True`` whose norms were removed is the
    checkpoint's without them, another function: :attr:`norms_removed` is
    ``True``, its ``repr`` says so, and loading it emitted a
    :class:`NormsRemovedWarning`.
    """

    __slots__ = ("_native", "_norms")

    def __init__(self, native: "_native.NativeModel") -> None:
        if not isinstance(native, _native.NativeModel):
            raise TypeError(
                "Model() wraps a loaded model; build one with tensor_similarity.load(path) "
                "or Model.from_state_dict(mapping)"
            )
        self._native = native
        # The norms as first read, for a model rebuilt from its pickle (whose
        # described layout has none); None: the native model's.
        self._norms: Optional[list] = None

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
        :attr:`tensors`. Integer tensors (NumPy or torch, 0-dim included,
        such as a norm's ``num_batches_tracked`` counter) are passed as
        ``"I64"`` with their values as ``float64``: the core reads an integer
        tensor only as a norm's counter, and one used as a weight is a
        :class:`FileError` naming it. Complex or boolean tensors are an error
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

        ``options`` are :func:`load`'s: ``residual_scale``, ``skip``, ``heads``, ``mask``,
        ``attn_scale``, ``rope_base``, ``ignore_norms``, ``config`` (a run config
        file or a dict of its content; there is no folder to find one in). With
        ``ignore_norms=True`` and norms removed, a :class:`NormsRemovedWarning`
        naming the state_dict is emitted.
        """
        if not isinstance(mapping, Mapping):
            if hasattr(mapping, "items"):
                mapping = dict(mapping.items())
            else:
                raise TypeError(
                    f"from_state_dict takes a mapping of names to arrays, not {type(mapping).__name__}"
                )
        _, load_options = _split_options(options, LOAD_OPTIONS)
        names, dtypes, arrays = [], [], []
        for name, value in mapping.items():
            if not isinstance(name, str):
                raise TypeError(f"state_dict keys are tensor names (str), found {name!r}")
            dtype, array = _tensor(name, value)
            names.append(name)
            dtypes.append(dtype)
            arrays.append(array)
        metadata = _metadata(layout)
        # The arrays are read in place by the core, and copied once.
        native = _native.from_state_dict(
            names, dtypes, arrays, metadata, **_load_kwargs(load_options)
        )
        _warn_norms_removed([native], ["state_dict"])
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
        """The number of parameters: the values the file or ``state_dict``
        stores for the model's blocks (weights and the biases present; an
        absent bias counts nothing). The same count as the command line's
        ``inspect``, computed by the core (``ModelFile::parameter_count``)."""
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
        ``output_width``, ``mixes_positions``, ``parameters`` (the block's
        stored values, as ``inspect`` counts them)."""
        return self._native.blocks()

    @property
    def tensors(self) -> list:
        """One dict per tensor of the source: ``name``, ``block``, ``role``,
        ``dtype`` (as stored: ``"F64"``, ``"F32"``, ``"F16"``, ``"BF16"``, or
        ``"I64"`` for an integer tensor, a norm's ``num_batches_tracked``),
        ``shape``."""
        return self._native.tensors()

    @property
    def norms(self) -> list:
        """The model's normalisations (the attention-only language model's
        ``norm_type`` at its ``norm_places``), in block order: one dict each,
        as ``inspect --json`` lists them, with ``kind`` (``"tok0_batch"``,
        ``"batchnorm"``, ``"rmsnorm"``, …), ``place`` (``"post_embed"``,
        ``"pre_layer 1"``, ``"pre_unembed"``), ``eps``, ``folded`` (``True``:
        constant at eval, ``N(x) = g ⊙ x + h``, folded exactly into the maps
        around it; ``False``: removed by ``ignore_norms=True``), ``scale``
        (the smallest and largest entry of ``g``, ``(lo, hi)``; ``None`` when
        removed) and ``shift`` (the same of ``h``; ``None`` when there is none
        or it was removed). Empty for a model without norms."""
        if self._norms is not None:
            return [dict(n) for n in self._norms]
        return self._native.norms()

    @property
    def norms_removed(self) -> bool:
        """Whether the model was read without some of its norms
        (``ignore_norms=True``): it is then the checkpoint's function without
        them, another function, and every similarity with it is that of the
        model without its norms."""
        if self._norms is not None:
            return any(not n["folded"] for n in self._norms)
        return self._native.norms_removed

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
    def ignored_config_keys(self) -> dict:
        """The run config's ``model`` keys that cannot change the function at
        eval (dropout, ``init_*``, optimiser and schedule keys, ``seed``,
        ``device``, …; docs/format.md lists them), with their values: read and
        not used. Empty without a config."""
        return {key: json.loads(value) for key, value, _ in self._native.ignored_config_keys}

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
        a = np.asarray(x)
        if self.is_sequence:
            if a.ndim == 2:
                return self._run(a, True)
            if a.ndim == 3:
                return np.stack([self._run(s, True) for s in a])
            raise ShapeError(
                f"a sequence model takes [n, d] or [batch, n, d] inputs, found shape {a.shape}"
            )
        if a.ndim == 1:
            return self._run(a[None, :], False)[0]
        if a.ndim == 2:
            return self._run(a, False)
        raise ShapeError(
            f"a vector model takes [d] or [samples, d] inputs, found shape {a.shape}"
        )

    __call__ = forward

    def _run(self, a: np.ndarray, sequence: bool) -> np.ndarray:
        out = self._native.forward(_array(a), sequence)
        return np.frombuffer(out, dtype=np.float64).reshape(a.shape[0], self.output_width).copy()

    def save(self, path: PathLike, layout: str = "described", dtype: str = "F64") -> None:
        """Writes the model to ``path``: the same as :func:`save`."""
        save(self, path, layout=layout, dtype=dtype)

    def __reduce__(self):
        # Pickled as its safetensors bytes (for multiprocessing, Dask tasks):
        # the same function and weights, read back in the described layout,
        # with the norms as read (so that a model without its norms still
        # says so).
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.safetensors")
            save(self, path)
            with open(path, "rb") as f:
                data = f.read()
        norms = self.norms
        return (_from_safetensors_bytes, (data, norms) if norms else (data,))

    def __repr__(self) -> str:
        blocks = ", ".join(
            f"{b['kind']} {b['input_width']}→{b['output_width']}" for b in self.blocks
        )
        seq = ", sequence" if self.is_sequence else ""
        norms = self.norms
        without = (
            f"; without its norms ({_removed(norms)} removed by ignore_norms=True)"
            if any(not n["folded"] for n in norms)
            else ""
        )
        return (
            f"Model({blocks}; input {self.input_width}, output {self.output_width}{seq}; "
            f"{self.parameter_count} parameters; {self.layout}{without})"
        )


def _from_safetensors_bytes(data: bytes, norms: Optional[list] = None) -> Model:
    """A model from the bytes of a safetensors file (what pickling stores),
    with the norms it was first read with."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.safetensors")
        with open(path, "wb") as f:
            f.write(data)
        model = load(path)
    if norms:
        model._norms = [dict(n) for n in norms]
    return model


def _tensor(name: str, value: Any) -> tuple:
    """``(stored dtype, array as the core reads it)`` of one state_dict value:
    a ``float64`` or ``float32`` array is passed as it is (no copy when it is
    C-contiguous), anything else converted."""
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
    if array.dtype.kind in "iu":
        # An integer tensor: the core reads one only as a norm's counter
        # (num_batches_tracked), and names it if it is used as a weight.
        return "I64", _array(array)
    if array.dtype.kind not in "f":
        if array.dtype.kind == "V" or array.dtype.name == "bfloat16":
            # ml_dtypes' bfloat16 and similar extension types.
            array = array.astype(np.float32)
        else:
            raise FileError(
                f"state_dict: tensor {name!r} has dtype {array.dtype}; models are made of "
                "floating-point tensors (float64, float32, float16, bfloat16), and integer "
                "tensors are read only as a norm's counter (num_batches_tracked)"
            )
    dtype = _DTYPES.get(stored) or _DTYPES.get(str(array.dtype), "F64")
    if stored == "bfloat16":
        dtype = "BF16"
    if array.dtype == np.float16:
        array = array.astype(np.float32)  # exactly; half the bytes of float64
    return dtype, _array(array)


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

    Options (only files without metadata need them): ``residual_scale`` (of
    every bilinear block of a vector layout: alone, the research lerp ``s``,
    ``α = s, r = 1 − s``; with ``skip``, the output scale ``α``), ``skip``
    (the skip weight ``r`` of ``y = α·D(Lx ∘ Rx) + r·x``: ``skip=1`` is the
    usual additive residual ``x + D(Lx ∘ Rx)``; without either, no residual,
    and :attr:`Model.assumptions` says so), ``config`` (the
    run config to read instead of looking beside the checkpoint: a path, or
    a dict of the config's content, ``{"model": {...}}``, read exactly as the
    same ``config.json`` would be), ``heads``,
    ``mask`` (``"causal"``, ``"none"``, ``"diag"`` or an ``n × n`` matrix),
    ``attn_scale``, ``rope_base`` (the attention-only LM's rotary base, where
    no config gives ``rope_base``; the research Transformer's is fixed at
    10000 and it does not read this), ``ignore_norms`` (``True``: read the
    attention-only LM without its normalisations, every one removed, as the
    research code's ``ignore_norms=True`` does; see below). Where a config
    gives a setting, an option that says otherwise is an error, and an
    option that the file's layout does not read (``heads=`` for a vector
    model, ``ignore_norms=True`` for any layout but the attention-only LM)
    is an :class:`OptionError`. Config keys that cannot change the function at
    eval (``dropout``, ``init_std``, ``lr``, …) are read and listed in
    :attr:`Model.ignored_config_keys`. Errors name these options as
    keywords (``heads=``).

    Normalisations (the LM's ``norm_type`` at its ``norm_places``,
    :attr:`Model.norms`): ``tok0_batch`` and ``batchnorm`` are constant at eval
    and folded exactly into the maps around them. The others divide by a
    statistic of their input (``rmsnorm``, ``layernorm``, ``maxrmsnorm``,
    ``causal_maxrmsnorm``, ``tok0``), so the model is not polynomial: a
    :class:`FileError` naming the norm, unless ``ignore_norms=True``, which
    reads the model with every norm removed (the constant ones too). That
    model is another function than the checkpoint's: loading it emits a
    :class:`NormsRemovedWarning` naming the file, and
    :attr:`Model.norms_removed` and the model's ``repr`` say so.
    """
    _, load_options = _split_options(options, LOAD_OPTIONS)
    native = _native.load(os.fspath(path), **_load_kwargs(load_options))
    _warn_norms_removed([native], [os.fspath(path)])
    return Model(native)


def save(model: Model, path: PathLike, layout: str = "described", dtype: str = "F64") -> None:
    """Writes ``model`` to ``path`` as safetensors.

    ``layout``: ``"described"`` (metadata naming the tensors ``blocks.{i}.{role}``;
    any model, sequence models included), ``"embed_body_head"`` or
    ``"bi_linear_projection"`` (the research names; metadata is written too).
    ``dtype``: ``"F64"``, ``"F32"``, ``"F16"`` or ``"BF16"``.

    A model read without its norms (``ignore_norms=True``) is written as the
    function it is, without them; the file does not record that, so a
    model loaded from it does not say so.
    """
    _native.save(_model(model), os.fspath(path), layout, dtype)


def _model(m: Any, load_options: Optional[Mapping[str, Any]] = None) -> "_native.NativeModel":
    if isinstance(m, Model):
        return m._native
    if isinstance(m, (str, os.PathLike)):
        return load(m, **(load_options or {}))._native
    raise TypeError(f"expected a tensor_similarity.Model or a path, not {type(m).__name__}")


#: The characters of a glob pattern.
_PATTERN = ("*", "?", "[")


def _listed(items: Any, what: str) -> list:
    """``items``, a list of models or paths, as a list; a single path (a
    ``str``, ``bytes`` or ``os.PathLike``) or model is a ``TypeError``
    saying to pass a list (iterated, a path would be read character by
    character), and an empty list an :class:`OptionError` (``no models
    given``), as ``matrix`` on the command line refuses both."""
    if isinstance(items, (str, bytes, os.PathLike)):
        text = os.fsdecode(items)
        hint = ""
        if any(c in text for c in _PATTERN):
            import glob

            found = len(glob.glob(text))
            hint = (
                f"; the pattern {text!r} matched no file"
                if found == 0
                else f"; the pattern {text!r} matches {found} file(s): sorted(glob.glob(pattern))"
            )
        raise TypeError(
            f"{what} takes a list of models or paths, not one {type(items).__name__}: "
            f"pass a list of paths ([path], or sorted(glob.glob(pattern)) for a pattern){hint}"
        )
    if isinstance(items, Model):
        raise TypeError(f"{what} takes a list of models or paths, not one Model: pass a list ([model])")
    try:
        iterator = iter(items)
    except TypeError:
        raise TypeError(
            f"{what} takes a list of models or paths, not {type(items).__name__}"
        ) from None
    items = list(iterator)
    if not items:
        raise OptionError(
            f"{what}: no models given (an empty list; a glob that matched no file gives one)"
        )
    return items


def _models(items: Iterable[Any], load_options: Mapping[str, Any], what: str) -> list:
    """Native models of ``items`` (models or paths; paths read in parallel);
    a single path or an empty list is refused (:func:`_listed`)."""
    items = _listed(items, what)
    paths = [i for i, m in enumerate(items) if isinstance(m, (str, os.PathLike))]
    out: list = [None] * len(items)
    if paths:
        names = [os.fspath(items[i]) for i in paths]
        loaded = _native.load_many(names, **_load_kwargs(load_options))
        _warn_norms_removed(loaded, names)
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
            raise OptionError(f"{what}= as a slice needs {hint}")
        return list(range(*value.indices(size)))
    if isinstance(value, (int, np.integer)):
        value = [value]
    out = []
    for v in value:
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
            raise TypeError(f"{what}= holds indices (int), found {v!r}")
        if v < 0:
            if size is None:
                raise OptionError(f"{what}= with a negative index needs {hint}")
            v += size
            if v < 0:
                raise OptionError(f"{what}=: index {v - size} out of range for {size}")
        out.append(int(v))
    return out


def _needs_width(outputs: Any) -> bool:
    """Whether an ``outputs=`` selection can only be resolved against the
    models' output width (a slice, or a negative index)."""
    if outputs is None:
        return False
    if isinstance(outputs, slice):
        return True
    if isinstance(outputs, (int, np.integer)):
        outputs = [outputs]
    return any(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v < 0 for v in outputs)


#: The options that are arrays; a metric keeps its own copy.
_ARRAY_OPTIONS = ("input_metric", "input_mean", "input_covariance", "output_weights")


def _native_metric(kind: str, options: Mapping[str, Any], width: Optional[int]) -> "_native.Metric":
    """The native metric of ``kind`` with ``options`` (none ``None``), a
    selection resolved against the models' output ``width`` if known."""
    kw = dict(options)
    if "outputs" in kw:
        kw["outputs"] = _indices("outputs", kw["outputs"], width, "the models' output width")
    if "positions" in kw:
        kw["positions"] = _indices(
            "positions", kw["positions"], kw.get("context"), "context=N (the number of positions)"
        )
    for key in _ARRAY_OPTIONS:
        if key in kw:
            kw[key] = _array(kw[key])
    if "max_memory" in kw:
        b = kw["max_memory"]
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise TypeError(f"max_memory= is a number of bytes (a positive int), not {b!r}")
        kw["max_memory"] = int(b)
    if "max_work" in kw:
        w = kw["max_work"]
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)):
            raise TypeError(f"max_work= is a number of multiply–adds, not {w!r}")
        if not (w > 0 and np.isfinite(w)):
            raise OptionError(f"max_work={w}: a positive, finite number of multiply–adds")
        kw["max_work"] = float(w)
    for key in ("samples", "seed"):
        if key in kw:
            v = kw[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise TypeError(f"{key}= is an int, not {v!r}")
            if v < 0:
                raise OptionError(f"{key}={v}: a non-negative int")
            kw[key] = int(v)
    if "head" in kw:
        h = kw["head"]
        if (
            not isinstance(h, (tuple, list))
            or len(h) != 2
            or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in h)
        ):
            raise TypeError(f"head= is (block, head), two ints, not {h!r}")
        if h[0] < 0 or h[1] < 0:
            raise OptionError(f"head={tuple(h)!r}: a block's chain index and a head, both ≥ 0")
        kw["head"] = (int(h[0]), int(h[1]))
    if "family" in kw:
        f = kw["family"]
        if isinstance(f, (int, np.integer)) or isinstance(f, (str, bytes)):
            raise TypeError(f"family= is a list of chain indices (ints), not {f!r}")
        f = list(f)
        if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in f):
            raise TypeError(f"family= is a list of chain indices (ints), not {f!r}")
        if any(x < 0 for x in f):
            raise OptionError(f"family={f!r}: chain indices are ≥ 0")
        kw["family"] = [int(x) for x in f]
    if "context" in kw:
        c = kw["context"]
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
            raise TypeError(f"context= is a number of positions (int), not {c!r}")
        if c < 0:
            raise OptionError(f"context={c}: the context length is a number of positions")
        kw["context"] = int(c)
    return _native.Metric(kind, **kw)


def _selection(value: Any) -> str:
    """A selection of indices as a title shows it: ``[-1]``, ``[0, 3]``,
    ``0:10``, ``0:10:2``."""
    if isinstance(value, (slice, range)):
        start = "" if value.start is None else value.start
        stop = "" if value.stop is None else value.stop
        step = "" if value.step in (None, 1) else f":{value.step}"
        return f"{start}:{stop}{step}"
    if isinstance(value, (int, np.integer)):
        return f"[{int(value)}]"
    return "[" + ", ".join(str(int(v)) for v in value) + "]"


def _show(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"<array {'×'.join(map(str, value.shape))}>"
    return repr(value)


class Metric:
    """A similarity metric with its options, checked once when it is built:
    build one, then call it on as many pairs and matrices as you like.

    The metrics are :class:`TensorMetric`, :class:`GaussianMetric`,
    :class:`GaussianClosureMetric`, :class:`GaussianMonteCarloMetric` and
    :class:`WeightMetric`; the module's functions (:func:`similarity`,
    :func:`matrix`, …) build one from ``metric=`` and their keyword options
    on each call, and also take a metric object as ``metric=``. Every method
    takes models or paths (read with :func:`load`'s ``load_options``) and
    releases the GIL while it computes. A metric is immutable (its array
    options are copied when it is built) and pickles with its options.
    """

    __slots__ = ("_options", "_native", "_by_width")

    #: The metric's name, as ``metric=`` spells it.
    kind: str = ""

    def __init__(self) -> None:
        raise TypeError(
            "Metric is the base class: build a TensorMetric, GaussianMetric, GaussianClosureMetric, "
            "GaussianMonteCarloMetric or WeightMetric"
        )

    def _check(self, options: Mapping[str, Any]) -> None:
        """Keeps the options given (not ``None``) and checks them all now; a
        selection of outputs that needs the models' width (a slice, a
        negative index) is resolved on the first models it sees."""
        given = {k: v for k, v in options.items() if v is not None}
        for key in _ARRAY_OPTIONS:
            if key in given:
                given[key] = np.array(given[key], copy=True)
        self._options = given
        self._by_width: dict = {}
        if _needs_width(given.get("outputs")):
            # Everything but the indices is checked now, with one output
            # standing in for the selection (the core checks indices against
            # the models only when it compares them).
            if not isinstance(given["outputs"], slice):
                for v in np.atleast_1d(np.asarray(given["outputs"], dtype=object)).tolist():
                    if not isinstance(v, (int, np.integer)) or isinstance(v, bool):
                        raise TypeError(f"outputs= holds indices (int), found {v!r}")
            _native_metric(self.kind, dict(given, outputs=[0]), None)
            self._native = None
        else:
            self._native = _native_metric(self.kind, given, None)

    def _for(self, natives: Sequence[Any]) -> "_native.Metric":
        """The native metric for these models (their output width resolves a
        deferred selection)."""
        if self._native is not None:
            return self._native
        width = natives[0].output_width if natives else None
        native = self._by_width.get(width)
        if native is None:
            native = self._by_width[width] = _native_metric(self.kind, self._options, width)
        return native

    @property
    def options(self) -> dict:
        """The options the metric was built with (those given, not ``None``)."""
        return dict(self._options)

    @property
    def title(self) -> str:
        """A title for a plot of this metric's values, as ``matrix --plot``
        titles its heatmap: the metric, the context (``"vector models"``
        without one: a sequence model needs one), and what selects the
        compared part: ``positions``, ``outputs`` or ``output weights``
        (and a non-default input distribution). For instance ``"tensor
        similarity, context 8, positions [-1]"``; the weight metric, which
        takes no options, is ``"weight similarity"``.

        >>> import tensor_similarity as ts
        >>> ts.TensorMetric(context=8, outputs=slice(0, 10)).title
        'tensor similarity, context 8, outputs 0:10'
        """
        o = self._options
        parts = [f"{self.kind} similarity"]
        if self.kind != "weight":
            parts.append(f"context {o['context']}" if "context" in o else "vector models")
        if "positions" in o:
            parts.append(f"positions {_selection(o['positions'])}")
        if "outputs" in o:
            parts.append(f"outputs {_selection(o['outputs'])}")
        if "output_weights" in o:
            parts.append("output weights Q")
        if "input_metric" in o:
            parts.append("input metric M")
        if "input_mean" in o or "input_covariance" in o:
            parts.append("inputs x ~ N(μ, Σ)")
        if self.kind == "gaussian-mc":
            parts.append(f"{o.get('samples', 10_000)} samples, seed {o.get('seed', 0)}")
        if "head" in o:
            parts.append(f"head path {o['head'][0]}:{o['head'][1]}")
        if "family" in o:
            family = ",".join(str(k) for k in o["family"])
            parts.append(f"family {{{family}}}" if family else "family ∅")
        return ", ".join(parts)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={_show(v)}" for k, v in self._options.items())
        return f"{type(self).__name__}({shown})"

    def __reduce__(self):
        return (_rebuild, (self.kind, self._options))

    def _load_options(self, options: Mapping[str, Any]) -> dict:
        """The load options of a method's call; a metric option there is a
        TypeError saying where it belongs."""
        misplaced = sorted(set(options) & set(METRIC_OPTIONS))
        if misplaced:
            raise TypeError(
                f"{', '.join(misplaced)}: an option of the metric, given when it is built "
                f"({type(self).__name__}({misplaced[0]}=…)), not to its methods"
            )
        return _split_options(options, LOAD_OPTIONS)[1]

    def _warn_closure(self, native: "_native.Metric", rows: Sequence[Any], cols: Optional[Sequence[Any]] = None) -> None:
        """A :class:`GaussianClosureWarning` if some value among ``rows`` (with
        themselves, or with ``cols``) is a Gaussian closure; nothing for the
        metrics that are exact or estimates."""
        if self.kind in ("gaussian", "gaussian-closure") and not _native.gaussian_all_exact(native, rows, cols):
            warnings.warn(GaussianClosureWarning(_CLOSURE_MESSAGE), stacklevel=_stacklevel())

    def similarity(self, a: Union[Model, PathLike], b: Union[Model, PathLike], **load_options: Any) -> float:
        """The similarity of ``a`` and ``b`` (models or paths), in ``[-1, 1]``."""
        load = self._load_options(load_options)
        na, nb = _model(a, load), _model(b, load)
        native = self._for([na, nb])
        value = _native.similarity(native, na, nb)
        self._warn_closure(native, [na, nb])
        return value

    def matrix(
        self, models: Iterable[Union[Model, PathLike]], *, progress: bool = True, **load_options: Any
    ) -> np.ndarray:
        """The symmetric ``N × N`` matrix of similarities between ``models``
        (models or paths, in the order given; paths read in parallel), with
        a unit diagonal: each model's squared norm once, then the
        ``N(N−1)/2`` pairs in parallel on all cores. ``progress`` shows a bar
        (tqdm if installed, else a counter on stderr)."""
        load = self._load_options(load_options)
        natives = _models(models, load, "matrix")
        native = self._for(natives)
        n = len(natives)
        bar = _progress(progress, n * (n - 1) // 2, f"{self.kind} similarity matrix")
        try:
            out = _native.matrix(native, natives, None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
        self._warn_closure(native, natives)
        return np.frombuffer(out, dtype=np.float64).reshape(n, n).copy()

    def tile(
        self,
        rows: Iterable[Union[Model, PathLike]],
        cols: Optional[Iterable[Union[Model, PathLike]]] = None,
        *,
        row_norms: Any = None,
        col_norms: Any = None,
        progress: bool = False,
        **load_options: Any,
    ) -> np.ndarray:
        """One block of the similarity matrix, ``rows × cols``: see :func:`tile`."""
        load = self._load_options(load_options)
        r = _models(rows, load, "tile (rows)")
        c = None if cols is None else _models(cols, load, "tile (cols)")
        native = self._for(r + (c or []))
        rn = _norm_list(row_norms, len(r), "row_norms")
        if c is None and col_norms is not None:
            raise OptionError("col_norms given without cols")
        cn = None if c is None else _norm_list(col_norms, len(c), "col_norms")
        shape = (len(r), len(r) if c is None else len(c))
        total = shape[0] * (shape[0] - 1) // 2 if c is None else shape[0] * shape[1]
        bar = _progress(progress, total, f"{self.kind} similarity tile")
        try:
            out = _native.tile(native, r, rn, c, cn, None if bar is None else bar.update)
        finally:
            if bar is not None:
                bar.close()
        self._warn_closure(native, r, c)
        return np.frombuffer(out, dtype=np.float64).reshape(shape).copy()


class _InnerProductMetric(Metric):
    """A metric that is the cosine of an inner product of models: it has the
    inner product, norms and differences too."""

    __slots__ = ()

    def inner_product(
        self,
        a: Union[Model, PathLike],
        b: Union[Model, PathLike],
        *,
        log: bool = False,
        **load_options: Any,
    ) -> Union[float, tuple]:
        """The raw inner product ``⟨A, B⟩``; ``log=True`` returns
        ``(sign, ln |⟨A, B⟩|)`` instead (deep models' inner products overflow
        ``float``: the value is then ``±inf``)."""
        load = self._load_options(load_options)
        na, nb = _model(a, load), _model(b, load)
        native = self._for([na, nb])
        sign, ln = _native.inner_product(native, na, nb)
        self._warn_closure(native, [na, nb])
        if log:
            return (sign, ln)
        if sign == 0:
            return 0.0
        try:
            return sign * math.exp(ln)
        except OverflowError:
            return sign * math.inf

    def difference_similarity(
        self,
        a0: Union[Model, PathLike],
        a1: Union[Model, PathLike],
        b0: Union[Model, PathLike],
        b1: Union[Model, PathLike],
        **load_options: Any,
    ) -> float:
        """The cosine of the directions ``A1 − A0`` and ``B1 − B0``: see
        :func:`difference_similarity`."""
        load = self._load_options(load_options)
        natives = [_model(m, load) for m in (a0, a1, b0, b1)]
        native = self._for(natives)
        value = _native.difference_similarity(native, *natives)
        self._warn_closure(native, natives)
        return value

    def squared_norms(self, models: Iterable[Union[Model, PathLike]], **load_options: Any) -> np.ndarray:
        """Each model's squared norm ``⟨A, A⟩`` in log scale, an ``N × 2`` array of
        rows ``(sign, ln |⟨A, A⟩|)``: see :func:`squared_norms`."""
        load = self._load_options(load_options)
        natives = _models(models, load, "squared_norms")
        native = self._for(natives)
        norms = _native.squared_norms(native, natives)
        self._warn_closure(native, natives, [])
        return np.array(norms, dtype=np.float64).reshape(len(natives), 2)


    # The head paths of the tensor and Gaussian metrics (SPEC §9).
    def head_paths(self, a: Union[Model, PathLike], b: Union[Model, PathLike], **load_options: Any) -> list:
        """The head paths of ``a`` and ``b`` (SPEC §9; ``"tensor"``, or
        ``"gaussian"``: exact at the first attention block, a closure
        elsewhere, each :class:`HeadPaths` saying which): one per attention
        block, in chain order; see :func:`head_paths`."""
        load = self._load_options(load_options)
        na, nb = _model(a, load), _model(b, load)
        found = _native.heads(self._for([na, nb]), na, nb)
        return [
            HeadPaths(
                block=d["block"],
                cosine=np.frombuffer(d["cosine"], dtype=np.float64).reshape(d["shape"]).copy(),
                inner=_unlog_rows(d["inner"]),
                norms_a=_unlog_rows([d["norms_a"]])[0],
                norms_b=_unlog_rows([d["norms_b"]])[0],
                exact=d["exact"],
            )
            for d in found
        ]

    def heads(self, a: Union[Model, PathLike], b: Union[Model, PathLike], **load_options: Any) -> list:
        """The ``H_A × H_B`` cosine matrix of each attention block's head
        paths, in chain order; see :func:`heads`."""
        return [p.cosine for p in self.head_paths(a, b, **load_options)]


class TensorMetric(_InnerProductMetric):
    """The tensor similarity (SPEC §2): the cosine of the symmetrised
    end-to-end tensors, exact, invariant to the models' symmetries.

    Options (all keyword-only, all checked here): ``context`` (the number of
    positions, required for sequence models), ``input_metric`` (``M =
    E[x̃x̃ᵀ]``, ``(d+1) × (d+1)`` per position or ``(nd+1) × (nd+1)`` over a
    sequence) or ``input_mean``/``input_covariance`` (the metric of ``x ~ N(μ,
    Σ)``), ``outputs`` (compare only these outputs: an int, a list, a range or
    a slice; negative indices count from the end) or ``output_weights`` (``Q``,
    ``n_L × n_L``), ``positions`` (a sequence model's positions to read out,
    e.g. ``[-1]``), ``max_memory`` (bytes: a comparison whose estimated peak
    exceeds it is refused before it starts with a :class:`MemoryLimitError`),
    ``max_work`` (multiply–adds, default no limit: a comparison whose
    estimated work exceeds it is refused before it starts with a
    :class:`MemoryLimitError` naming the largest context within it),
    ``head`` (``(block, head)``: compare the two models' paths of that head
    of that attention block, SPEC §9, e.g. for :func:`matrix` across a run)
    or ``family`` (chain indices of splitting blocks: compare that path
    family; ``[]`` is the direct path).

    >>> import numpy as np, tensor_similarity as ts
    >>> rng = np.random.default_rng(1)
    >>> sd = {"bi_linear.weight": rng.normal(size=(8, 3)), "projection.weight": rng.normal(size=(2, 4))}
    >>> a, b = ts.Model.from_state_dict(sd), ts.Model.from_state_dict({k: 2 * v for k, v in sd.items()})
    >>> metric = ts.TensorMetric(outputs=-1)
    >>> metric
    TensorMetric(outputs=-1)
    >>> round(metric.similarity(a, b), 12)            # a rescaled model: the same direction
    1.0
    >>> metric.matrix([a, b, a], progress=False).shape
    (3, 3)
    >>> round(metric.inner_product(b, b) / metric.inner_product(a, a), 9)   # L, R, D doubled: ⟨8A, 8A⟩
    64.0
    """

    __slots__ = ()
    kind = "tensor"

    def __init__(
        self,
        *,
        context: Optional[int] = None,
        input_metric: Any = None,
        input_mean: Any = None,
        input_covariance: Any = None,
        outputs: Any = None,
        output_weights: Any = None,
        positions: Any = None,
        max_memory: Optional[int] = None,
        max_work: Optional[float] = None,
        head: Optional[tuple] = None,
        family: Optional[Sequence[int]] = None,
    ) -> None:
        self._check(
            dict(
                context=context,
                input_metric=input_metric,
                input_mean=input_mean,
                input_covariance=input_covariance,
                outputs=outputs,
                output_weights=output_weights,
                positions=positions,
                max_memory=max_memory,
                max_work=max_work,
                head=head,
                family=family,
            )
        )


    def paths(self, a: Union[Model, PathLike], b: Union[Model, PathLike], **load_options: Any) -> "PathFamilies":
        """The path families of ``a`` and ``b`` (SPEC §9); see :func:`paths`."""
        load = self._load_options(load_options)
        na, nb = _model(a, load), _model(b, load)
        d = _native.paths(self._for([na, nb]), na, nb)
        size = len(d["families"])
        return PathFamilies(
            blocks=list(d["blocks"]),
            families=[tuple(f) for f in d["families"]],
            inner=_unlog_rows(d["inner"]),
            cosine=np.frombuffer(d["cosine"], dtype=np.float64).reshape(size, size).copy(),
            total=_unlog(d["total"]),
            similarity=d["similarity"],
        )


def _unlog(pair: Sequence[float]) -> float:
    """``sign · e^ln`` (``±inf`` past ``float``'s range, 0 for sign 0)."""
    sign, ln = pair
    if sign == 0:
        return 0.0
    try:
        return sign * math.exp(ln)
    except OverflowError:
        return sign * math.inf


def _unlog_rows(rows: Sequence[Sequence[Sequence[float]]]) -> np.ndarray:
    return np.array([[_unlog(x) for x in row] for row in rows], dtype=np.float64)


class HeadPaths(NamedTuple):
    """One attention block's head paths (SPEC §9), from :func:`head_paths`."""

    #: The block's index in the chain (0-based).
    block: int
    #: ``H_A × H_B`` cosines of A's head paths (rows) with B's (columns);
    #: NaN where a head path is zero.
    cosine: np.ndarray
    #: ``⟨A_h, B_h'⟩`` (``±inf`` past ``float``'s range).
    inner: np.ndarray
    #: ``⟨A_h, A_h⟩`` per head of A.
    norms_a: np.ndarray
    #: ``⟨B_h', B_h'⟩`` per head of B.
    norms_b: np.ndarray
    #: Whether the values are exact (the Gaussian metric: a closure beyond
    #: the first attention block).
    exact: bool


class HeadMatching(NamedTuple):
    """Which head became which across a run, at one attention block (SPEC
    §9), from :func:`head_matching`."""

    #: The block's index in the chain (0-based).
    block: int
    #: ``N × N``: the mean cosine of the best one-to-one matching of model
    #: ``i``'s head paths with model ``j``'s; 1 on the diagonal.
    mean: np.ndarray
    #: ``matching[i][j][h]``: the head of model ``j`` that head ``h`` of
    #: model ``i`` is matched with (``None`` where ``j`` has fewer heads).
    matching: list


class PathFamilies(NamedTuple):
    """The path families of two models (SPEC §9), from :func:`paths`."""

    #: The splitting blocks' chain indices.
    blocks: list
    #: The families (tuples of chain indices), by size, then lexicographic.
    families: list
    #: ``⟨A^S, B^S'⟩``, A's families in rows, B's in columns; they sum to
    #: ``total``.
    inner: np.ndarray
    #: The cosines; NaN where a family is zero.
    cosine: np.ndarray
    #: ``⟨A, B⟩``.
    total: float
    #: The tensor similarity of ``A`` and ``B``.
    similarity: float


class GaussianMetric(_InnerProductMetric):
    """The Gaussian functional similarity (SPEC §3): ``E[f_A·f_B]`` under ``x ~
    N(μ, Σ)``, exact for chains of linear and bilinear blocks up to degree 8
    (three bilinear blocks: the Wick sum over the legs of both models'
    trees) and for one attention block, a Gaussian closure beyond
    (:meth:`is_exact`); on sequence models the rows are i.i.d. (SPEC §7).

    Options (keyword-only, checked here): ``context``, ``input_mean`` (``μ``,
    default 0), ``input_covariance`` (``Σ``, default the identity),
    ``max_memory`` (bytes).

    >>> import numpy as np, tensor_similarity as ts
    >>> rng = np.random.default_rng(2)
    >>> sd = {"bi_linear.weight": rng.normal(size=(8, 3)), "projection.weight": rng.normal(size=(2, 4))}
    >>> a = ts.Model.from_state_dict(sd)
    >>> metric = ts.GaussianMetric(input_mean=np.zeros(3), input_covariance=np.eye(3))
    >>> round(metric.similarity(a, a), 12), metric.is_exact(a, a)
    (1.0, True)
    """

    __slots__ = ()
    kind = "gaussian"

    def __init__(
        self,
        *,
        context: Optional[int] = None,
        input_mean: Any = None,
        input_covariance: Any = None,
        max_memory: Optional[int] = None,
    ) -> None:
        self._check(
            dict(
                context=context,
                input_mean=input_mean,
                input_covariance=input_covariance,
                max_memory=max_memory,
            )
        )

    def is_exact(self, a: Union[Model, PathLike], b: Union[Model, PathLike], **load_options: Any) -> bool:
        """Whether the similarity of ``a`` and ``b`` is exact (every block of
        order ≥ 2 of either model at one position, or two chains of linear and
        bilinear blocks up to degree 8 within the exact sum's work limit)
        rather than a Gaussian closure."""
        load = self._load_options(load_options)
        na, nb = _model(a, load), _model(b, load)
        return _native.gaussian_is_exact(self._for([na, nb]), na, nb)


class GaussianClosureMetric(GaussianMetric):
    """The Gaussian closure by name (SPEC §3): moment propagation for every
    model pair, also where :class:`GaussianMetric` computes the exact value,
    so that the two can be compared. The same options as
    :class:`GaussianMetric`; a value that is not exact
    (:meth:`is_exact` false) emits a :class:`GaussianClosureWarning`.

    >>> import numpy as np, tensor_similarity as ts
    >>> rng = np.random.default_rng(2)
    >>> sd = {"bi_linear.weight": rng.normal(size=(8, 3)), "projection.weight": rng.normal(size=(2, 4))}
    >>> a = ts.Model.from_state_dict(sd)
    >>> metric = ts.GaussianClosureMetric()
    >>> round(metric.similarity(a, a), 12), metric.is_exact(a, a)
    (1.0, True)
    """

    __slots__ = ()
    kind = "gaussian-closure"


class MonteCarloEstimate(NamedTuple):
    """A Monte Carlo estimate of the Gaussian similarity of two models (or of
    two directions): :meth:`GaussianMonteCarloMetric.estimate`."""

    #: The estimated cosine ``⟨f_A,f_B⟩ / √(⟨f_A,f_A⟩⟨f_B,f_B⟩)``, in ``[-1, 1]``.
    similarity: float
    #: Its standard error, by the delta method over batch means.
    standard_error: float
    #: The sample mean of ``f_A(x)·f_B(x)``: unbiased for ``⟨f_A,f_B⟩``.
    inner_product: float
    #: The sample mean of ``|f_A(x)|²``.
    squared_norm_a: float
    #: The sample mean of ``|f_B(x)|²``.
    squared_norm_b: float
    #: The standard errors of the three means, in that order.
    product_standard_errors: tuple
    #: The number of samples.
    samples: int
    #: The number of batches the standard error is estimated from.
    batches: int


class MonteCarloMatrix(NamedTuple):
    """Monte Carlo estimates for every pair of many models from one set of
    draws: :meth:`GaussianMonteCarloMetric.matrix_estimate`."""

    #: The estimated similarities, symmetric with a unit diagonal.
    similarity: np.ndarray
    #: Their standard errors (0 on the diagonal).
    standard_error: np.ndarray
    #: The estimated inner products, the squared norms on the diagonal.
    inner_products: np.ndarray
    #: The number of samples.
    samples: int
    #: The number of batches.
    batches: int


def _estimate(d: Mapping[str, Any]) -> MonteCarloEstimate:
    return MonteCarloEstimate(**dict(d, product_standard_errors=tuple(d["product_standard_errors"])))


class GaussianMonteCarloMetric(_InnerProductMetric):
    """Monte Carlo estimates of the Gaussian similarity (SPEC §3): the sample
    means of ``f_A(x)·f_B(x)``, ``|f_A(x)|²``, ``|f_B(x)|²`` over ``samples``
    seeded draws of ``x ~ N(μ, Σ)`` (rows of a sequence i.i.d.), their
    cosine and its standard error by the delta method over batch means. Any
    two models with the same input and output widths compare; the value is
    unbiased where :class:`GaussianMetric` is a closure, and the same for a
    seed on any number of threads.

    Options (keyword-only, checked here): ``samples`` (default 10 000, at
    least 4), ``seed`` (default 0), ``context``, ``input_mean``,
    ``input_covariance``. :meth:`similarity`, :meth:`inner_product` and
    :meth:`squared_norms` are estimates (each call draws from the seed);
    :meth:`estimate` gives the standard error and the three inner products,
    :meth:`matrix` and :meth:`matrix_estimate` run one set of draws through
    every model, :meth:`difference_similarity` one through the four. Tiles
    (:meth:`tile`) are refused: each would draw its own samples.

    >>> import numpy as np, tensor_similarity as ts
    >>> rng = np.random.default_rng(2)
    >>> sd = {"bi_linear.weight": rng.normal(size=(8, 3)), "projection.weight": rng.normal(size=(2, 4))}
    >>> a = ts.Model.from_state_dict(sd)
    >>> b = ts.Model.from_state_dict({k: v + 0.1 for k, v in sd.items()})
    >>> mc = ts.GaussianMonteCarloMetric(samples=20_000, seed=1)
    >>> e = mc.estimate(a, b)
    >>> exact = ts.similarity(a, b, "gaussian")
    >>> abs(e.similarity - exact) < 4 * e.standard_error
    True
    >>> e.samples, e.batches
    (20000, 100)
    """

    __slots__ = ()
    kind = "gaussian-mc"

    def __init__(
        self,
        *,
        samples: Optional[int] = None,
        seed: Optional[int] = None,
        context: Optional[int] = None,
        input_mean: Any = None,
        input_covariance: Any = None,
    ) -> None:
        self._check(
            dict(
                samples=samples,
                seed=seed,
                context=context,
                input_mean=input_mean,
                input_covariance=input_covariance,
            )
        )

    def estimate(self, a: Union[Model, PathLike], b: Union[Model, PathLike], **load_options: Any) -> MonteCarloEstimate:
        """The estimate of the similarity of ``a`` and ``b`` with its standard
        error and the three inner products (a :class:`MonteCarloEstimate`)."""
        load = self._load_options(load_options)
        na, nb = _model(a, load), _model(b, load)
        return _estimate(_native.monte_carlo_estimate(self._for([na, nb]), na, nb))

    def difference_estimate(
        self,
        a0: Union[Model, PathLike],
        a1: Union[Model, PathLike],
        b0: Union[Model, PathLike],
        b1: Union[Model, PathLike],
        **load_options: Any,
    ) -> MonteCarloEstimate:
        """The estimate of the similarity of the directions ``A1 − A0`` and
        ``B1 − B0`` from one set of draws through the four models, with its
        standard error (its inner products are those of the directions)."""
        load = self._load_options(load_options)
        natives = [_model(m, load) for m in (a0, a1, b0, b1)]
        return _estimate(_native.monte_carlo_difference(self._for(natives), *natives))

    def matrix_estimate(self, models: Iterable[Union[Model, PathLike]], **load_options: Any) -> MonteCarloMatrix:
        """The estimates for every pair of ``models`` from one set of draws
        (each model's forward pass once per sample): similarities, standard
        errors and inner products as ``N × N`` arrays (a
        :class:`MonteCarloMatrix`); ``similarity`` is :meth:`matrix`'s."""
        load = self._load_options(load_options)
        natives = _models(models, load, "matrix_estimate")
        n = len(natives)
        sim, se, inner, samples, batches = _native.monte_carlo_matrix(self._for(natives), natives)
        arrays = [np.frombuffer(x, dtype=np.float64).reshape(n, n).copy() for x in (sim, se, inner)]
        return MonteCarloMatrix(*arrays, samples=samples, batches=batches)


#: What a :class:`GaussianClosureWarning` says.
_CLOSURE_MESSAGE = (
    "Gaussian closure (approximate): not the exact expectation E[f_A·f_B] (blocks of order ≥ 2 at "
    "more than one position, beyond the exact sum over chains up to degree 8); "
    "metric=\"gaussian-mc\" for an unbiased estimate"
)


class WeightMetric(Metric):
    """The weight cosine (SPEC §4): the cosine of the concatenated parameters,
    the naive baseline (models of equal shapes; not invariant to any
    symmetry). No options, and no inner product of models.

    >>> import numpy as np, tensor_similarity as ts
    >>> sd = {"bi_linear.weight": np.ones((8, 3)), "projection.weight": np.ones((2, 4))}
    >>> a = ts.Model.from_state_dict(sd)
    >>> round(ts.WeightMetric().similarity(a, a), 12)
    1.0
    """

    __slots__ = ()
    kind = "weight"

    def __init__(self) -> None:
        self._check({})


_KINDS = {
    "tensor": TensorMetric,
    "gaussian": GaussianMetric,
    "gaussian-closure": GaussianClosureMetric,
    "gaussian-mc": GaussianMonteCarloMetric,
    "weight": WeightMetric,
}


def _named(kind: Any, options: Mapping[str, Any]) -> Metric:
    """The metric named ``kind`` with ``options``; an option it does not take
    is an :class:`OptionError` naming the options it takes."""
    if not isinstance(kind, str):
        raise TypeError(
            "metric is a name (\"tensor\", \"gaussian\", \"gaussian-closure\", \"gaussian-mc\", "
            f"\"weight\") or a Metric, not {type(kind).__name__}"
        )
    cls = _KINDS.get(kind)
    if cls is None:
        _native.Metric(kind)  # the core's error, naming the metrics
        raise AssertionError(kind)  # pragma: no cover
    metric = object.__new__(cls)
    metric._check(options)
    return metric


def _rebuild(kind: str, options: Mapping[str, Any]) -> Metric:
    """A metric from its pickle."""
    return _named(kind, options)


def _as_metric(metric: Union[str, Metric], options: Mapping[str, Any]) -> Metric:
    """``metric=`` as a metric: a metric object as it is, a name built with
    ``options`` (the keyword options given, ``None`` for those not given)."""
    given = {k: v for k, v in options.items() if v is not None}
    if isinstance(metric, Metric):
        if given:
            raise TypeError(
                f"{', '.join(sorted(given))} given beside a {type(metric).__name__}: "
                "give a metric object its options when you build it"
            )
        return metric
    return _named(metric, given)


def similarity(
    a: Union[Model, PathLike],
    b: Union[Model, PathLike],
    metric: Union[str, Metric] = "tensor",
    *,
    context: Optional[int] = None,
    input_metric: Any = None,
    input_mean: Any = None,
    input_covariance: Any = None,
    outputs: Any = None,
    output_weights: Any = None,
    positions: Any = None,
    max_memory: Optional[int] = None,
    max_work: Optional[float] = None,
    samples: Optional[int] = None,
    seed: Optional[int] = None,
    head: Optional[tuple] = None,
    family: Optional[Sequence[int]] = None,
    **load_options: Any,
) -> float:
    """The similarity of ``a`` and ``b`` (models or paths), in ``[-1, 1]``.

    ``metric``: a name, built with the keyword options given, or a metric
    object built beforehand (then no option is given here):

    * ``"tensor"`` (default, :class:`TensorMetric`): the cosine of the
      symmetrised end-to-end tensors (SPEC §2), exact, invariant to the
      model's symmetries. Options: ``context`` (the number of positions,
      required for sequence models), ``input_metric`` (``M = E[x̃x̃ᵀ]``,
      ``(d+1) × (d+1)`` per position or ``(nd+1) × (nd+1)`` over a sequence),
      or ``input_mean``/``input_covariance`` (the metric of ``x ~ N(μ, Σ)``),
      ``outputs`` (compare only these outputs: an int, a list or a slice,
      e.g. one class's logit), ``output_weights`` (``Q``, ``n_L × n_L``),
      ``positions`` (a sequence model's positions to read out, e.g. ``[-1]``
      for the last; needs ``context``).
    * ``"gaussian"`` (:class:`GaussianMetric`): ``E[f_A·f_B]`` under ``x ~ N(μ,
      Σ)`` (exact for chains up to degree 8 and one attention block, a
      Gaussian closure beyond: see :func:`is_gaussian_exact`; a closure
      emits a :class:`GaussianClosureWarning`); on sequence models the rows
      are i.i.d. (SPEC §7). Options: ``context``, ``input_mean``,
      ``input_covariance``.
    * ``"gaussian-closure"`` (:class:`GaussianClosureMetric`): the Gaussian
      closure by name, also where ``"gaussian"`` is exact. Its options.
    * ``"gaussian-mc"`` (:class:`GaussianMonteCarloMetric`): the Monte Carlo
      estimate of ``"gaussian"``'s value, unbiased where that is a closure,
      from ``samples`` draws (default 10 000) of seed ``seed`` (default 0);
      its standard error comes with :meth:`GaussianMonteCarloMetric.estimate`.
      Options: ``samples``, ``seed``, ``context``, ``input_mean``,
      ``input_covariance``.
    * ``"weight"`` (:class:`WeightMetric`): the cosine of the concatenated
      parameters (the naive baseline; models of equal shapes). No options.

    ``head`` (``(block, head)``) and ``family`` (chain indices; ``"tensor"``):
    compare one head path or one path family of the two models (SPEC §9;
    :func:`head_paths`, :func:`paths` give them all at once).

    ``max_memory`` (bytes; ``"tensor"`` and ``"gaussian"``): the most memory
    the comparison may use, by default what the machine has. A comparison
    whose estimated peak exceeds it is refused before it starts (a
    :class:`MemoryLimitError`), with the estimate and the largest context
    that fits. ``max_work`` (multiply–adds; ``"tensor"``): the most work the
    comparison may take, by default no limit. Attention's work grows as
    ``n⁴`` with the context; a comparison whose estimate exceeds the limit
    is refused before it starts (a :class:`MemoryLimitError`), with the
    estimate and the largest context within it.

    An option the metric does not take is an :class:`OptionError`.
    ``load_options`` are :func:`load`'s, for paths. The GIL is released
    while it computes. :func:`inner_product` and :func:`matrix` take the
    same keyword options, with the same meanings and defaults.
    """
    m = _as_metric(
        metric,
        dict(
            context=context,
            input_metric=input_metric,
            input_mean=input_mean,
            input_covariance=input_covariance,
            outputs=outputs,
            output_weights=output_weights,
            positions=positions,
            max_memory=max_memory,
            max_work=max_work,
            samples=samples,
            seed=seed,
            head=head,
            family=family,
        ),
    )
    return m.similarity(a, b, **load_options)


def _inner_product_metric(metric: Metric, what: str) -> _InnerProductMetric:
    if not isinstance(metric, _InnerProductMetric):
        raise OptionError(
            f"{what} needs an inner product: metric \"tensor\" or \"gaussian\", not \"{metric.kind}\""
        )
    return metric


def inner_product(
    a: Union[Model, PathLike],
    b: Union[Model, PathLike],
    metric: Union[str, Metric] = "tensor",
    *,
    log: bool = False,
    context: Optional[int] = None,
    input_metric: Any = None,
    input_mean: Any = None,
    input_covariance: Any = None,
    outputs: Any = None,
    output_weights: Any = None,
    positions: Any = None,
    max_memory: Optional[int] = None,
    max_work: Optional[float] = None,
    samples: Optional[int] = None,
    seed: Optional[int] = None,
    head: Optional[tuple] = None,
    family: Optional[Sequence[int]] = None,
    **load_options: Any,
) -> Union[float, tuple]:
    """The raw inner product ``⟨A, B⟩`` of the metric (``"tensor"`` or
    ``"gaussian"``, or such a metric object; options as for
    :func:`similarity`).

    Deep models' inner products overflow ``float`` (the core keeps them as
    logarithms): ``log=True`` returns ``(sign, ln |⟨A, B⟩|)`` instead of the
    value, which may be ``inf``.
    """
    m = _as_metric(
        metric,
        dict(
            context=context,
            input_metric=input_metric,
            input_mean=input_mean,
            input_covariance=input_covariance,
            outputs=outputs,
            output_weights=output_weights,
            positions=positions,
            max_memory=max_memory,
            max_work=max_work,
            samples=samples,
            seed=seed,
            head=head,
            family=family,
        ),
    )
    return _inner_product_metric(m, "inner_product").inner_product(a, b, log=log, **load_options)


def difference_similarity(
    a0: Union[Model, PathLike],
    a1: Union[Model, PathLike],
    b0: Union[Model, PathLike],
    b1: Union[Model, PathLike],
    metric: Union[str, Metric] = "tensor",
    **options: Any,
) -> float:
    """The cosine of the directions ``A1 − A0`` and ``B1 − B0`` (for instance two
    fine-tunes of one base, or two steps of training runs), by bilinearity
    of the inner product: ``⟨A1−A0, B1−B0⟩ = ⟨A1,B1⟩ − ⟨A1,B0⟩ − ⟨A0,B1⟩ + ⟨A0,B0⟩``.

    ``metric`` is ``"tensor"`` or ``"gaussian"`` (or such a metric object),
    with :func:`similarity`'s options.
    """
    metric_options, load = _split_options(options)
    m = _inner_product_metric(_as_metric(metric, metric_options), "difference_similarity")
    return m.difference_similarity(a0, a1, b0, b1, **load)


def is_gaussian_exact(a: Union[Model, PathLike], b: Union[Model, PathLike], **options: Any) -> bool:
    """Whether the Gaussian similarity of ``a`` and ``b`` is exact (every block
    of order ≥ 2 of either model at one position, or two chains up to degree
    8) rather than a Gaussian closure: :meth:`GaussianMetric.is_exact`."""
    metric_options, load = _split_options(options)
    m = _named("gaussian", metric_options)
    return m.is_exact(a, b, **load)


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


def matrix(
    models: Iterable[Union[Model, PathLike]],
    metric: Union[str, Metric] = "tensor",
    *,
    progress: bool = True,
    context: Optional[int] = None,
    input_metric: Any = None,
    input_mean: Any = None,
    input_covariance: Any = None,
    outputs: Any = None,
    output_weights: Any = None,
    positions: Any = None,
    max_memory: Optional[int] = None,
    max_work: Optional[float] = None,
    samples: Optional[int] = None,
    seed: Optional[int] = None,
    head: Optional[tuple] = None,
    family: Optional[Sequence[int]] = None,
    **load_options: Any,
) -> np.ndarray:
    """The symmetric ``N × N`` matrix of similarities between ``models`` (models
    or paths, in the order given), with a unit diagonal, as a NumPy array.

    Each model's squared norm is computed once, then the ``N(N−1)/2`` pairs in
    parallel on all cores, with the GIL released. ``progress`` shows a bar
    (tqdm if installed, else a counter on stderr). ``metric`` and the
    keyword options are :func:`similarity`'s (a ``max_memory`` counts one
    pair per thread); ``load_options`` are :func:`load`'s, for paths. Entry
    ``(i, j)`` equals ``similarity(models[i], models[j], metric, **options)``
    up to rounding.

    ``models`` is a list: a single path (a ``str`` or ``os.PathLike``; glob
    patterns are not expanded) is a ``TypeError`` saying to pass a list,
    and an empty list (a glob that matched no file) an
    :class:`OptionError`, "no models given", as on the command line.
    """
    m = _as_metric(
        metric,
        dict(
            context=context,
            input_metric=input_metric,
            input_mean=input_mean,
            input_covariance=input_covariance,
            outputs=outputs,
            output_weights=output_weights,
            positions=positions,
            max_memory=max_memory,
            max_work=max_work,
            samples=samples,
            seed=seed,
            head=head,
            family=family,
        ),
    )
    return m.matrix(models, progress=progress, **load_options)


def squared_norms(
    models: Iterable[Union[Model, PathLike]], metric: Union[str, Metric] = "tensor", **options: Any
) -> np.ndarray:
    """Each model's squared norm ``⟨A, A⟩`` under the metric, in log scale: an
    ``N × 2`` array whose rows are ``(sign, ln |⟨A, A⟩|)``, what :func:`tile`
    reuses so that a matrix computed by tiles computes each norm once.
    ``metric`` is ``"tensor"`` or ``"gaussian"`` (or such a metric object).
    """
    metric_options, load = _split_options(options)
    m = _inner_product_metric(_as_metric(metric, metric_options), "squared_norms")
    return m.squared_norms(models, **load)


def _norm_list(norms: Any, n: int, what: str) -> Optional[list]:
    if norms is None:
        return None
    a = np.asarray(norms, dtype=np.float64)
    if a.shape != (n, 2):
        raise ShapeError(
            f"{what}: expected shape ({n}, 2) (rows of squared_norms()), found {a.shape}"
        )
    return [(float(s), float(ln)) for s, ln in a]


def tile(
    rows: Iterable[Union[Model, PathLike]],
    cols: Optional[Iterable[Union[Model, PathLike]]] = None,
    *,
    row_norms: Any = None,
    col_norms: Any = None,
    metric: Union[str, Metric] = "tensor",
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
    m = _as_metric(metric, metric_options)
    return m.tile(rows, cols, row_norms=row_norms, col_norms=col_norms, progress=progress, **load)


def _tensor_metric(metric: Union[str, Metric], options: Mapping[str, Any], what: str) -> "TensorMetric":
    m = _as_metric(metric, options)
    if not isinstance(m, TensorMetric):
        raise OptionError(f"{what} is the tensor metric's (SPEC §9), not \"{m.kind}\"'s")
    return m


def _head_metric(metric: Union[str, Metric], options: Mapping[str, Any], what: str) -> "_InnerProductMetric":
    m = _as_metric(metric, options)
    if not isinstance(m, (TensorMetric, GaussianMetric)):
        raise OptionError(f"{what} is the tensor or Gaussian metric's (SPEC §9), not \"{m.kind}\"'s")
    return m


def head_paths(
    a: Union[Model, PathLike], b: Union[Model, PathLike], metric: Union[str, Metric] = "tensor", **options: Any
) -> list:
    """Where ``a`` and ``b`` differ, head by head (SPEC §9): one
    :class:`HeadPaths` per attention block, in chain order.

    The path of head ``h`` of the attention block at chain index ``i`` keeps
    the blocks before ``i``, only head ``h``'s attention term at ``i`` (no
    skip, no ``o`` bias), only the skip terms of the blocks after it, and
    the last block. Its cosine matrix with B's head paths is ``H_A × H_B``;
    a permutation of one model's heads permutes its rows or columns, so a
    head that became another is found, not assumed. ``metric``:
    ``"tensor"`` (default) or ``"gaussian"`` (exact at the first attention
    block, a closure elsewhere, each :class:`HeadPaths` saying which).
    Options as for :func:`similarity` (``context`` is required for sequence
    models).

    >>> import tensor_similarity as ts
    >>> run = "tests/files/torch/runs/tiny_lm/checkpoints"   # doctest: +SKIP
    >>> [p.block for p in ts.head_paths(f"{run}/step_20.pt", f"{run}/step_100.pt", context=4)]   # doctest: +SKIP
    [1, 2]
    """
    metric_options, load = _split_options(options)
    return _head_metric(metric, metric_options, "head_paths").head_paths(a, b, **load)


def heads(
    a: Union[Model, PathLike], b: Union[Model, PathLike], metric: Union[str, Metric] = "tensor", **options: Any
) -> list:
    """The cosine matrices of :func:`head_paths`: one ``H_A × H_B`` NumPy
    array per attention block, in chain order (NaN where a head path is
    zero)."""
    metric_options, load = _split_options(options)
    return _head_metric(metric, metric_options, "heads").heads(a, b, **load)


def paths(
    a: Union[Model, PathLike], b: Union[Model, PathLike], metric: Union[str, Metric] = "tensor", **options: Any
) -> PathFamilies:
    """Where ``a`` and ``b`` differ, path family by path family (SPEC §9): a
    :class:`PathFamilies`.

    A block with a skip term (attention; a bilinear block with a residual)
    splits into its skip part and its active part; the family ``S`` is the
    set of such blocks whose active part is on the path. The ``2^m × 2^m``
    family inner products sum to ``⟨A, B⟩`` (``total``). Options as for
    :func:`similarity` (the tensor metric's).
    """
    metric_options, load = _split_options(options)
    return _tensor_metric(metric, metric_options, "paths").paths(a, b, **load)


def head_matching(
    models: Iterable[Union[Model, PathLike]], metric: Union[str, Metric] = "tensor", *, progress: bool = True,
    **options: Any,
) -> list:
    """Which head became which across a run (SPEC §9): for every pair of
    ``models`` and each attention block, the best one-to-one matching of
    their head paths (the Hungarian method on :func:`heads`' cosines) and
    its mean cosine, as one :class:`HeadMatching` per attention block.
    Head permutations between checkpoints are found, not assumed. Options
    as for :func:`matrix` (the tensor metric's); ``progress`` shows a bar.
    """
    metric_options, load = _split_options(options)
    m = _tensor_metric(metric, metric_options, "head_matching")
    natives = _models(models, m._load_options(load), "head_matching")
    native = m._for(natives)
    n = len(natives)
    bar = _progress(progress, n * (n - 1) // 2, "head matching")
    try:
        found = _native.head_matching(native, natives, None if bar is None else bar.update)
    finally:
        if bar is not None:
            bar.close()
    return [
        HeadMatching(
            block=d["block"],
            mean=np.frombuffer(d["mean"], dtype=np.float64).reshape(n, n).copy(),
            matching=d["matching"],
        )
        for d in found
    ]
