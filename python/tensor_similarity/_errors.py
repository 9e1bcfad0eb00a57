"""The exceptions of ``tensor_similarity``: one class per family of errors,
all under :class:`TensorSimilarityError`; and its warnings,
:class:`NormsRemovedWarning` and :class:`GaussianClosureWarning`.

Every error of the core has always been raised as a
:class:`TensorSimilarityError`, a ``ValueError``; each family keeps both as
bases, so that ``except ValueError`` and ``except TensorSimilarityError``
still catch everything they caught. The compiled core picks the class of
each of its errors (``python/src/errors.rs``).

>>> import tensor_similarity as ts
>>> issubclass(ts.FileError, ts.TensorSimilarityError), issubclass(ts.FileError, ValueError)
(True, True)
>>> try:
...     ts.load("no/such/file.safetensors")
... except ts.FileError as e:
...     print(type(e).__name__, "no/such/file.safetensors" in str(e))
FileError True
"""

from __future__ import annotations

__all__ = [
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
]


class TensorSimilarityError(ValueError):
    """An error of the tensor-similarity core (a model that cannot be built or
    read, models that cannot be compared, an invalid option), with its
    message. The base of every family below, and raised as itself for what
    fits none; a ``ValueError``."""


class OptionError(TensorSimilarityError):
    """An option that is invalid (an input metric that is not symmetric, an
    index out of range, an unknown metric name), missing (``context=`` for a
    sequence model) or not taken by the metric it was given to."""


class ShapeError(TensorSimilarityError):
    """An array of the wrong shape: an option's matrix, a forward input, the
    norms given to :func:`tile`."""


class NonFiniteError(TensorSimilarityError):
    """An array option that holds NaN or an infinity."""


class IncomparableError(TensorSimilarityError):
    """Models that cannot be compared: different depths, block orders or
    widths, parameter shapes that differ (the weight metric), or a block the
    metric does not support."""


class ZeroNormError(TensorSimilarityError):
    """A model whose norm is zero (or below rounding error) under the metric,
    or whose output on a sample is zero, so its cosine is undefined."""


class NumericalError(TensorSimilarityError):
    """A computation that became NaN or infinite although its inputs were
    finite (a numerical breakdown, naming the block)."""


class MemoryLimitError(TensorSimilarityError, MemoryError):
    """A comparison whose estimated peak memory exceeds ``max_memory=`` (or the
    machine's memory), refused before it starts, naming the estimate and
    the largest context that fits; or a size that overflows. Also a
    ``MemoryError``."""


class FileError(TensorSimilarityError):
    """A model file that cannot be read or written (missing, truncated, not
    safetensors or ``torch.save``, a layout that does not fit), or a
    ``state_dict`` whose tensors do not make a model (a missing or unused
    tensor, a wrong shape, NaN); the message names the file and tensor.

    A normalisation that depends on its input (``rmsnorm``, ``layernorm``,
    ``maxrmsnorm``, ``causal_maxrmsnorm``, ``tok0``) is one too: such a model
    is not polynomial, and the message names the norm and
    ``ignore_norms=``, which reads the model without its norms."""


class NormsRemovedWarning(UserWarning):
    """A model was read without its normalisations, as ``ignore_norms=True``
    asks (:func:`tensor_similarity.load`): it is another function than the
    checkpoint's, and every similarity with it is that of the model without
    its norms. Emitted when such a model is loaded, naming the file (or the
    ``state_dict``) and the norms removed; :attr:`Model.norms_removed` and the
    model's ``repr`` say so too. Silence it with
    ``warnings.simplefilter("ignore", ts.NormsRemovedWarning)`` once you know."""


class GaussianClosureWarning(UserWarning):
    """A Gaussian value (metric ``"gaussian"`` or ``"gaussian-closure"``) is
    the Gaussian closure, not the exact expectation ``E[f_A·f_B]``: the
    models hold blocks of order ≥ 2 at more than one position, and later
    blocks were given a Gaussian with the tracked mean and covariance (SPEC
    §3), with no error bound. ``metric="gaussian-mc"``
    (:class:`GaussianMonteCarloMetric`) is an unbiased estimate with a
    standard error. Emitted with ``warnings.warn``, so Python's default
    filter shows it once per calling line; silence it with
    ``warnings.simplefilter("ignore", ts.GaussianClosureWarning)``."""


for _cls in (
    TensorSimilarityError,
    OptionError,
    ShapeError,
    NonFiniteError,
    IncomparableError,
    ZeroNormError,
    NumericalError,
    MemoryLimitError,
    FileError,
    NormsRemovedWarning,
    GaussianClosureWarning,
):
    # Shown, and pickled (Dask sends a worker's error back to the client),
    # as the package's names.
    _cls.__module__ = "tensor_similarity"
del _cls
