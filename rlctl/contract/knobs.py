"""The contract's knobs and actions: :class:`Knobs`, :class:`KnobBounds`, the ladders, the action
space (:data:`ACTION_NVEC`, :data:`NOOP_ACTION`) and :func:`apply`, the pure, clamped transition
``knobs x action -> knobs`` shared by simulator and controller. Part of :mod:`rlctl.contract`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rlctl.contract.telemetry import (
    FloatArray,
)
from rlctl.errors import ConfigError

# ------------------------------------------------------------------------------- knobs

KNOB_FIELDS: tuple[str, ...] = (
    "replicas",
    "gomaxprocs",
    "gogc",
    "gomemlimit_mib",
    "object_pool_size",
    "conn_pool_size",
    "prefetch",
    "turbo",
)
KNOB_COL: dict[str, int] = {name: i for i, name in enumerate(KNOB_FIELDS)}

#: GOGC moves one rung at a time on this ladder (percent).
GOGC_LADDER: tuple[int, ...] = (25, 50, 100, 200, 400, 800)
#: GOMEMLIMIT rungs in MiB; the top rung stands for "no practical limit".
GOMEMLIMIT_LADDER_MIB: tuple[int, ...] = (128, 256, 512, 1024, 2048, 4096, 8192)
#: sync.Pool capacity rungs (objects kept per replica).
OBJECT_POOL_LADDER: tuple[int, ...] = (0, 16, 64, 256, 1024, 4096)
#: Downstream connection-pool rungs (``MaxConnsPerHost``).
CONN_POOL_LADDER: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)

LADDERS: dict[str, tuple[int, ...]] = {
    "gogc": GOGC_LADDER,
    "gomemlimit_mib": GOMEMLIMIT_LADDER_MIB,
    "object_pool_size": OBJECT_POOL_LADDER,
    "conn_pool_size": CONN_POOL_LADDER,
}


@dataclass(frozen=True, slots=True)
class Knobs:
    """The knobs rlctl turns on one service. Runtime knobs apply to every replica."""

    replicas: int = 2
    gomaxprocs: int = 2
    gogc: int = 100
    gomemlimit_mib: int = 8192
    object_pool_size: int = 256
    conn_pool_size: int = 16
    prefetch: bool = True
    turbo: bool = True

    def to_array(self) -> FloatArray:
        """This setting as one row in :data:`KNOB_FIELDS` order."""
        return np.array([float(getattr(self, f)) for f in KNOB_FIELDS], dtype=np.float64)

    @classmethod
    def from_array(cls, row: npt.ArrayLike) -> Knobs:
        """Build knobs from one row in :data:`KNOB_FIELDS` order."""
        v = np.asarray(row, dtype=np.float64)
        return cls(
            replicas=int(v[0]),
            gomaxprocs=int(v[1]),
            gogc=int(v[2]),
            gomemlimit_mib=int(v[3]),
            object_pool_size=int(v[4]),
            conn_pool_size=int(v[5]),
            prefetch=bool(v[6] >= 0.5),
            turbo=bool(v[7] >= 0.5),
        )

    def to_dict(self) -> dict[str, int | bool]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class KnobBounds:
    """Inclusive bounds on every knob. Ladder knobs stay on their ladders.

    ``allow`` lists the knobs the controller may move at all; a knob not listed keeps
    its value whatever the action says (a platform team may, for example, forbid
    touching turbo).
    """

    min_replicas: int = 1
    max_replicas: int = 16
    min_gomaxprocs: int = 1
    max_gomaxprocs: int = 8
    min_gogc: int = 25
    max_gogc: int = 800
    min_gomemlimit_mib: int = 128
    max_gomemlimit_mib: int = 8192
    min_object_pool_size: int = 0
    max_object_pool_size: int = 4096
    min_conn_pool_size: int = 1
    max_conn_pool_size: int = 128
    allow: tuple[str, ...] = KNOB_FIELDS

    def __post_init__(self) -> None:
        for name in ("replicas", "gomaxprocs", "gogc", "gomemlimit_mib", "object_pool_size", "conn_pool_size"):
            lo, hi = getattr(self, f"min_{name}"), getattr(self, f"max_{name}")
            if lo > hi:
                raise ConfigError(f"knob bounds: min_{name}={lo} is above max_{name}={hi}; swap them")
        if self.min_replicas < 1 or self.min_gomaxprocs < 1:
            raise ConfigError("knob bounds: min_replicas and min_gomaxprocs must be at least 1")
        bad = set(self.allow) - set(KNOB_FIELDS)
        if bad:
            raise ConfigError(f"knob bounds: unknown knob(s) in allow: {sorted(bad)}; choose from {list(KNOB_FIELDS)}")

    def lows(self) -> FloatArray:
        return np.array(
            [self.min_replicas, self.min_gomaxprocs, self.min_gogc, self.min_gomemlimit_mib,
             self.min_object_pool_size, self.min_conn_pool_size, 0, 0],
            dtype=np.float64,
        )  # fmt: skip

    def highs(self) -> FloatArray:
        return np.array(
            [self.max_replicas, self.max_gomaxprocs, self.max_gogc, self.max_gomemlimit_mib,
             self.max_object_pool_size, self.max_conn_pool_size, 1, 1],
            dtype=np.float64,
        )  # fmt: skip

    def allowed_mask(self) -> npt.NDArray[np.bool_]:
        return np.array([f in self.allow for f in KNOB_FIELDS])

    def clamp(self, knobs: Knobs) -> Knobs:
        """``knobs`` moved inside the bounds (ladder knobs to the nearest allowed rung)."""
        return Knobs.from_array(clamp_array(knobs.to_array(), self))


# ------------------------------------------------------------------------ action space

#: MultiDiscrete sizes: replicas -2..+2; GOMAXPROCS -1/0/+1; GOGC, GOMEMLIMIT, object pool,
#: connection pool one rung down/keep/up; prefetch toggle; turbo toggle.
ACTION_NVEC: tuple[int, ...] = (5, 3, 3, 3, 3, 3, 2, 2)
ACTION_FIELDS: tuple[str, ...] = KNOB_FIELDS
#: The action that changes nothing.
NOOP_ACTION: tuple[int, ...] = (2, 1, 1, 1, 1, 1, 0, 0)
_ACTION_OFFSET = np.array([2, 1, 1, 1, 1, 1, 0, 0], dtype=np.int64)
_ACTION_MAX = np.asarray(ACTION_NVEC, dtype=np.int64) - 1
_LADDER_COLS = {KNOB_COL[k]: np.array(v, dtype=np.float64) for k, v in LADDERS.items()}
_TOGGLE_COLS = (KNOB_COL["prefetch"], KNOB_COL["turbo"])


def _snap_to_ladder(values: FloatArray, ladder: FloatArray) -> npt.NDArray[np.int64]:
    """Index of the nearest rung for each value."""
    if ladder.size == 1:
        return np.zeros(np.shape(values), dtype=np.int64)
    idx = np.minimum(np.maximum(np.searchsorted(ladder, values), 1), len(ladder) - 1)
    left, right = ladder[idx - 1], ladder[idx]
    return idx - (np.abs(values - left) <= np.abs(right - values))


#: Ladders whose bounds span at most this many integers get a value -> rung lookup table.
_MAX_RUNG_TABLE = 1 << 16


@functools.lru_cache(maxsize=64)
def _bounds_arrays(bounds: KnobBounds) -> tuple[FloatArray, FloatArray, FloatArray, dict[int, FloatArray]]:
    """lows, highs, allowed mask (as 0/1 floats) and each ladder's allowed rungs."""
    lows, highs = bounds.lows(), bounds.highs()
    ladders: dict[int, FloatArray] = {}
    for col, ladder in _LADDER_COLS.items():
        allowed = ladder[(ladder >= lows[col]) & (ladder <= highs[col])]
        ladders[col] = allowed if allowed.size else np.array([lows[col]])
    return lows, highs, bounds.allowed_mask().astype(np.float64), ladders


@functools.lru_cache(maxsize=64)
def _rung_tables(bounds: KnobBounds) -> dict[int, npt.NDArray[np.int64]]:
    """For each ladder knob, :func:`_snap_to_ladder` of every integer in ``[0, high]``.

    Clamped knob values are integers inside the bounds, so a table lookup gives the same
    rung as the search, several times faster (``apply_array`` runs every simulator step).
    Ladders with negative, fractional or very large bounds are searched instead.
    """
    lows, highs, _, ladders = _bounds_arrays(bounds)
    tables: dict[int, npt.NDArray[np.int64]] = {}
    for col, allowed in ladders.items():
        lo, hi = float(lows[col]), float(highs[col])
        if lo >= 0 and hi <= _MAX_RUNG_TABLE and lo.is_integer() and hi.is_integer():
            tables[col] = _snap_to_ladder(np.arange(int(highs[col]) + 1, dtype=np.float64), allowed)
    return tables


def _clamp(knobs: npt.ArrayLike, bounds: KnobBounds) -> tuple[FloatArray, dict[int, npt.NDArray[np.int64]]]:
    """:func:`clamp_array` plus the rung index of each ladder knob."""
    lows, highs, _, ladders = _bounds_arrays(bounds)
    tables = _rung_tables(bounds)
    k = np.asarray(knobs, dtype=np.float64)
    finite = np.isfinite(k)
    if not finite.all():
        k = np.where(finite, k, lows)
    k = np.minimum(np.maximum(np.rint(k), lows), highs)
    rungs: dict[int, npt.NDArray[np.int64]] = {}
    for col, allowed in ladders.items():
        table = tables.get(col)
        idx = _snap_to_ladder(k[..., col], allowed) if table is None else table[k[..., col].astype(np.int64)]
        rungs[col] = idx
        k[..., col] = allowed[idx]
    return k, rungs


def clamp_array(knobs: npt.ArrayLike, bounds: KnobBounds) -> FloatArray:
    """Knob rows moved inside ``bounds``; non-finite values become the lower bound."""
    return _clamp(knobs, bounds)[0]


def apply_array(knobs: npt.ArrayLike, action: npt.ArrayLike, bounds: KnobBounds) -> FloatArray:
    """Vectorised :func:`apply`: ``(..., 8)`` knob rows and ``(..., 8)`` actions.

    Pure and clamped. Out-of-range action components are clipped to the action space,
    so a malformed action can never move a knob further than one legal step.
    """
    lows, highs, allowed_mask, ladders = _bounds_arrays(bounds)
    k, rungs = _clamp(knobs, bounds)
    a = np.asarray(action)
    if a.shape[-1] != len(ACTION_NVEC):
        raise ConfigError(f"action has {a.shape[-1]} components, expected {len(ACTION_NVEC)} ({ACTION_FIELDS})")
    a = np.minimum(np.maximum(a.astype(np.int64), 0), _ACTION_MAX)
    delta = (a - _ACTION_OFFSET) * allowed_mask
    out = np.minimum(np.maximum(k + delta, lows), highs)
    for col, allowed in ladders.items():
        idx = rungs[col] + delta[..., col].astype(np.int64)
        out[..., col] = allowed[np.minimum(np.maximum(idx, 0), allowed.size - 1)]
    for col in _TOGGLE_COLS:
        out[..., col] = np.where(delta[..., col] > 0, 1.0 - k[..., col], k[..., col])
    return out


#: Knobs with more legal values than this get no transition table (see :func:`row_applier`).
_MAX_TRANSITION_VALUES = 4096


@functools.lru_cache(maxsize=64)
def _transition_tables(bounds: KnobBounds) -> tuple[dict[tuple[float, int], float], ...] | None:
    """Per knob: ``(legal value, action component) -> next value``, computed by :func:`apply_array`.

    Each knob moves independently of the others under :func:`apply_array`, so one call
    over every legal value of every knob and every action component tabulates it; the
    table is ``apply_array`` itself, looked up. ``None`` when a knob has too many values.
    """
    lows, highs, _, ladders = _bounds_arrays(bounds)
    base = clamp_array(lows, bounds)
    tables: list[dict[tuple[float, int], float]] = []
    for col in range(len(KNOB_FIELDS)):
        if col in ladders:
            values = ladders[col]
        else:
            if highs[col] - lows[col] >= _MAX_TRANSITION_VALUES:
                return None
            values = np.arange(lows[col], highs[col] + 1.0)
        n_actions = ACTION_NVEC[col]
        rows = np.tile(base, (values.size * n_actions, 1))
        rows[:, col] = np.repeat(values, n_actions)
        actions = np.tile(np.asarray(NOOP_ACTION, dtype=np.int64), (rows.shape[0], 1))
        actions[:, col] = np.tile(np.arange(n_actions), values.size)
        nxt = apply_array(rows, actions, bounds)[:, col]
        keys = zip(rows[:, col].tolist(), actions[:, col].tolist(), strict=True)
        tables.append(dict(zip(keys, nxt.tolist(), strict=True)))
    return tuple(tables)


class RowApplier:
    """``f(knobs, action)``: :func:`apply_array` of one knob row of floats, as a list of floats.

    The simulator's single environment calls it every step: one table lookup per knob
    (tables built by ``apply_array`` for these bounds), falling back to ``apply_array``
    for rows the tables do not cover (knobs off their legal values, out-of-range actions).
    Pickles as its bounds.
    """

    __slots__ = ("_tables", "bounds")

    def __init__(self, bounds: KnobBounds) -> None:
        self.bounds = bounds
        self._tables = _transition_tables(bounds)

    def __reduce__(self) -> tuple[type[RowApplier], tuple[KnobBounds]]:
        return (RowApplier, (self.bounds,))

    def __call__(self, knobs: Sequence[float], action: Sequence[int]) -> list[float]:
        tables = self._tables
        if tables is not None and len(knobs) == len(tables) == len(action):
            try:
                return [t[k, a] for t, k, a in zip(tables, knobs, action, strict=True)]
            except (KeyError, TypeError):
                pass
        return [float(v) for v in apply_array(np.asarray(knobs, dtype=np.float64), action, self.bounds)]


def row_applier(bounds: KnobBounds) -> RowApplier:
    """:class:`RowApplier` for ``bounds``."""
    return RowApplier(bounds)


def apply(knobs: Knobs, action: npt.ArrayLike, bounds: KnobBounds) -> Knobs:
    """The knobs after ``action``: pure, clamped, the same in simulator and controller."""
    return Knobs.from_array(apply_array(knobs.to_array(), action, bounds))
