"""Type stubs of the compiled core, ``tensor_similarity._native``.

Arrays are NumPy arrays (anything with ``__array_interface__``):
C-contiguous, aligned, native-endian ``float64`` or ``float32``, read in
place and copied once. ``from_state_dict``'s ``dtypes`` name each tensor's
stored dtype: ``"F64"``, ``"F32"``, ``"F16"``, ``"BF16"``, or ``"I64"`` (an
integer tensor, its values given as ``float64``: read only as a norm's
counter). Errors are the classes of
``tensor_similarity._errors``. Use the package's functions
(``tensor_similarity.load``, ``similarity``, …), which convert NumPy arrays,
torch tensors and options into these.
"""

from os import PathLike
from typing import Callable, Optional, Sequence, Union

import numpy as np

_Array = np.ndarray
_Log = tuple[float, float]
_Mask = Union[str, _Array]
_Path = Union[str, PathLike[str]]
_Config = Union[str, PathLike[str], dict]

__version__: str

class NativeModel:
    @property
    def input_width(self) -> int: ...
    @property
    def output_width(self) -> int: ...
    @property
    def is_sequence(self) -> bool: ...
    @property
    def depth(self) -> int: ...
    @property
    def orders(self) -> list[int]: ...
    @property
    def parameter_count(self) -> int: ...
    @property
    def layout(self) -> str: ...
    @property
    def layout_name(self) -> str: ...
    @property
    def config(self) -> Optional[str]: ...
    @property
    def native_context(self) -> Optional[int]: ...
    @property
    def assumptions(self) -> list[str]: ...
    @property
    def unused_options(self) -> list[str]: ...
    @property
    def ignored_config_keys(self) -> list[tuple[str, str, str]]: ...
    @property
    def norms_removed(self) -> bool: ...
    def norms(self) -> list[dict]: ...
    def blocks(self) -> list[dict]: ...
    def tensors(self) -> list[dict]: ...
    def forward(self, x: _Array, sequence: bool) -> bytes: ...

class Metric:
    def __init__(
        self,
        kind: str,
        *,
        context: Optional[int] = None,
        input_metric: Optional[_Array] = None,
        input_mean: Optional[_Array] = None,
        input_covariance: Optional[_Array] = None,
        outputs: Optional[Sequence[int]] = None,
        output_weights: Optional[_Array] = None,
        positions: Optional[Sequence[int]] = None,
        max_memory: Optional[int] = None,
        max_work: Optional[float] = None,
        samples: Optional[int] = None,
        seed: Optional[int] = None,
        head: Optional[tuple[int, int]] = None,
        family: Optional[Sequence[int]] = None,
    ) -> None: ...
    @property
    def name(self) -> str: ...

def load(
    path: _Path,
    *,
    residual_scale: Optional[float] = None,
    skip: Optional[float] = None,
    config: Optional[_Config] = None,
    heads: Optional[int] = None,
    mask: Optional[_Mask] = None,
    attn_scale: Optional[float] = None,
    rope_base: Optional[float] = None,
    ignore_norms: bool = False,
) -> NativeModel: ...
def load_many(
    paths: Sequence[_Path],
    *,
    residual_scale: Optional[float] = None,
    skip: Optional[float] = None,
    config: Optional[_Config] = None,
    heads: Optional[int] = None,
    mask: Optional[_Mask] = None,
    attn_scale: Optional[float] = None,
    rope_base: Optional[float] = None,
    ignore_norms: bool = False,
) -> list[NativeModel]: ...
def from_state_dict(
    names: Sequence[str],
    dtypes: Sequence[str],
    arrays: Sequence[_Array],
    metadata: Optional[str] = None,
    *,
    residual_scale: Optional[float] = None,
    skip: Optional[float] = None,
    config: Optional[_Config] = None,
    heads: Optional[int] = None,
    mask: Optional[_Mask] = None,
    attn_scale: Optional[float] = None,
    rope_base: Optional[float] = None,
    ignore_norms: bool = False,
) -> NativeModel: ...
def save(model: NativeModel, path: _Path, layout: str = "described", dtype: str = "F64") -> None: ...
def similarity(metric: Metric, a: NativeModel, b: NativeModel) -> float: ...
def inner_product(metric: Metric, a: NativeModel, b: NativeModel) -> _Log: ...
def difference_similarity(
    metric: Metric, a0: NativeModel, a1: NativeModel, b0: NativeModel, b1: NativeModel
) -> float: ...
def gaussian_is_exact(metric: Metric, a: NativeModel, b: NativeModel) -> bool: ...
def gaussian_all_exact(
    metric: Metric, rows: Sequence[NativeModel], cols: Optional[Sequence[NativeModel]] = None
) -> bool: ...
def monte_carlo_estimate(metric: Metric, a: NativeModel, b: NativeModel) -> dict: ...
def monte_carlo_difference(
    metric: Metric, a0: NativeModel, a1: NativeModel, b0: NativeModel, b1: NativeModel
) -> dict: ...
def monte_carlo_matrix(
    metric: Metric, models: Sequence[NativeModel]
) -> tuple[bytes, bytes, bytes, int, int]: ...
def squared_norms(metric: Metric, models: Sequence[NativeModel]) -> list[_Log]: ...
def matrix(
    metric: Metric, models: Sequence[NativeModel], progress: Optional[Callable[[], object]] = None
) -> bytes: ...
def tile(
    metric: Metric,
    rows: Sequence[NativeModel],
    row_norms: Optional[Sequence[_Log]] = None,
    cols: Optional[Sequence[NativeModel]] = None,
    col_norms: Optional[Sequence[_Log]] = None,
    progress: Optional[Callable[[], object]] = None,
) -> bytes: ...
def heads(metric: Metric, a: NativeModel, b: NativeModel) -> list[dict]:
    """Per attention block: ``block``, ``shape``, ``cosine`` (row-major
    ``float64`` bytes), ``inner`` (rows of ``(sign, ln |x|)``), ``norms_a``,
    ``norms_b``, ``exact``."""
    ...
def paths(metric: Metric, a: NativeModel, b: NativeModel) -> dict:
    """``blocks``, ``families``, ``cosine`` (row-major ``float64`` bytes),
    ``inner`` (rows of ``(sign, ln |x|)``), ``total`` (``(sign, ln |x|)``),
    ``similarity``."""
    ...
def head_matching(
    metric: Metric, models: Sequence[NativeModel], progress: Optional[Callable[[], object]] = None
) -> list[dict]:
    """Per attention block: ``block``, ``mean`` (row-major ``N × N``
    ``float64`` bytes), ``matching`` (``[i][j][h]``: a head of model ``j``,
    or ``None``)."""
    ...
