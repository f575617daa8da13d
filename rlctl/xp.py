"""The two array namespaces the simulator's physics and the contract's features run on.

The physics (:mod:`envs.model`) and :func:`rlctl.contract.featurize` are written once,
against a namespace ``xp`` of elementwise operations, the way Array API code is
written against ``array_namespace(x)``:

- :data:`NUMPY` evaluates them over ``(N,)`` numpy arrays: the batched environment and
  every caller that passes arrays (the default everywhere);
- :data:`SCALAR` evaluates the same expressions on Python floats, with numpy's
  semantics where they differ from Python's (``log(0) = -inf``, NaN propagates through
  ``maximum``/``minimum``, overflow gives ``inf``). One service stepped through numpy
  pays about a microsecond of dispatch per operation on a one-element array, some 200
  of them per step; the same expressions on floats cost tens of nanoseconds each. The
  single environment steps through this namespace.

``tests/test_rlctl/test_xp.py`` pins the two together: every physics function gives the same
numbers (to 1e-12) through both, ``featurize`` the same float32 features, and whole
single-environment episodes equal a batch of one, step by step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

_INF = math.inf
_NAN = math.nan
_SQRT1_2 = math.sqrt(0.5)


@dataclass(frozen=True, slots=True)
class Namespace:
    """Elementwise operations the physics uses; see the module docstring."""

    name: str
    scalar: bool
    maximum: Callable[..., Any]
    minimum: Callable[..., Any]
    where: Callable[..., Any]
    log: Callable[..., Any]
    log1p: Callable[..., Any]
    log2: Callable[..., Any]
    exp: Callable[..., Any]
    sqrt: Callable[..., Any]
    isnan: Callable[..., Any]
    logical_not: Callable[..., Any]
    ndtr: Callable[..., Any]
    asarray: Callable[..., Any]
    clip: Callable[..., Any]
    #: ``columns(x)``: the ``K`` columns of ``(N, K)`` rows to unpack (numpy), one row itself (scalar).
    columns: Callable[..., Any]

    def __repr__(self) -> str:
        return f"<xp {self.name}>"


def _ndtr_numpy(x: Any) -> Any:
    from scipy.special import ndtr

    return ndtr(x)


def _np_asarray(x: Any) -> Any:
    return np.asarray(x, dtype=np.float64)


def _np_clip(x: Any, lo: Any, hi: Any) -> Any:
    """``np.clip`` without its dispatch overhead (about 5x faster on small arrays)."""
    return np.minimum(np.maximum(x, lo), hi)


def _np_columns(x: Any) -> Any:
    return x.T


def _maximum(a: float, b: float) -> float:
    return a if a >= b or a != a else b  # NaN propagates, as in np.maximum


def _minimum(a: float, b: float) -> float:
    return a if a <= b or a != a else b


def _where(cond: Any, a: Any, b: Any) -> Any:
    return a if cond else b


def _log(x: float) -> float:
    if x > 0.0:
        return math.log(x)
    return -_INF if x == 0.0 else _NAN


def _log1p(x: float) -> float:
    if x > -1.0:
        return math.log1p(x)
    return -_INF if x == -1.0 else _NAN


def _log2(x: float) -> float:
    if x > 0.0:
        return math.log2(x)
    return -_INF if x == 0.0 else _NAN


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return _INF


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0.0 else _NAN


def _ndtr(x: float) -> float:
    """The standard normal CDF, ``scipy.special.ndtr`` on a float."""
    return 0.5 * math.erfc(-x * _SQRT1_2)


def _clip(x: float, lo: float, hi: float) -> float:
    """``minimum(maximum(x, lo), hi)``: NaN stays NaN."""
    if x != x:
        return x
    return lo if x < lo else (hi if x > hi else x)


def _logical_not(x: Any) -> bool:
    return not x


def _columns(x: Any) -> Any:
    return x


#: numpy arrays of any broadcastable shapes (the default).
NUMPY = Namespace(
    name="numpy", scalar=False, maximum=np.maximum, minimum=np.minimum, where=np.where, log=np.log,
    log1p=np.log1p, log2=np.log2, exp=np.exp, sqrt=np.sqrt, isnan=np.isnan,
    logical_not=np.logical_not, ndtr=_ndtr_numpy, asarray=_np_asarray, clip=_np_clip,
    columns=_np_columns,
)  # fmt: skip
#: Python floats: one service.
SCALAR = Namespace(
    name="scalar", scalar=True, maximum=_maximum, minimum=_minimum, where=_where, log=_log, log1p=_log1p,
    log2=_log2, exp=_exp, sqrt=_sqrt, isnan=math.isnan, logical_not=_logical_not,
    ndtr=_ndtr, asarray=float, clip=_clip, columns=_columns,
)  # fmt: skip
