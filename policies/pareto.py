"""The knobs' Pareto front: P99 against cores against peak heap, for one service at one load.

Each knob setting of one service (replicas, GOMAXPROCS, GOGC, GOMEMLIMIT, object- and
connection-pool sizes, prefetch, turbo; :data:`rlctl.contract.KNOB_FIELDS`) is scored in the
simulator's physics at steady state (:func:`evaluate_knobs`): no faults, warm CPU, the GC
fixed point settled, as :func:`envs.sim.slo_capacity_qps` and the oracle's planner score theirs.
The load is one number or a trace window; over a window a setting scores its worst P99, its
mean cores and its highest heap. Three objectives, all minimised (:data:`OBJECTIVES`):

- ``p99_ms``: the client's P99 latency (the telemetry's ``p99_ms``);
- ``cores_used``: CPU cores in use over all replicas (the reward's and core-seconds' ``cores``);
- ``peak_heap_mib``: the heap the GC lets the replicas grow to before collecting (the
  telemetry's ``heap_bytes``, the GC heap goal summed over replicas).

One constraint: P99 within the SLO. The knob bounds are the search space itself
(:class:`KnobSpace`: every knob an index into its legal values inside
:class:`rlctl.contract.KnobBounds`, ladder knobs on their rungs; a knob outside ``allow`` keeps
its base value).

:func:`nsga2_front` searches with NSGA-II (Deb et al., "A fast and elitist multiobjective genetic
algorithm: NSGA-II", IEEE TEVC 2002; pymoo's implementation, Blank & Deb, IEEE Access 2020) on
integer variables (SBX crossover and polynomial mutation on the indices, rounded). The baselines
that measure that choice at the same number of evaluations: :func:`random_front` (uniform
settings) and :func:`grid_front` (a full-factorial grid of evenly spaced indices).
:func:`hypervolumes` scores fronts against one shared reference point (the objectives normalised
to the fronts' joint ideal and nadir, the reference at 1.1 of the nadir; pymoo's ``HV``).

pymoo comes with the ``train`` extra and is imported where NSGA-II or the hypervolume runs; the
evaluation, the baselines and the knees need only numpy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from envs.loads import trace_qps
from envs.model.faults import effects_table
from envs.model.service import ServiceState, step_services
from envs.profile import ServiceProfile, stack_profiles
from rlctl.contract import COL, KNOB_COL, KNOB_FIELDS, LADDERS, KnobBounds, Knobs, clamp_array
from rlctl.errors import ConfigError

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]

#: The objectives, all minimised, in column order of every objective array here.
OBJECTIVES: tuple[str, ...] = ("p99_ms", "cores_used", "peak_heap_mib")
#: The simulator's step; the steady state does not depend on it beyond the backlog term.
DT_S = 5.0
#: Knob rows scored per call of the physics (bounds the memory of long trace windows).
CHUNK_ROWS = 65_536
#: Longest trace window, in steps (one per trace value).
MAX_WINDOW_STEPS = 1440
#: The hypervolume's reference point, in objectives normalised to [0, 1] between ideal and nadir.
HV_REFERENCE = 1.1


# ------------------------------------------------------------------------------ the search space


@dataclass(frozen=True)
class KnobSpace:
    """Every knob as an index into its legal values within ``bounds``.

    Replicas and GOMAXPROCS take every integer in their bounds, the ladder knobs the rungs in
    their bounds, prefetch and turbo off and on. A knob that ``bounds.allow`` does not list
    keeps its value in ``base`` (clamped into the bounds): the front is over what may move.
    """

    bounds: KnobBounds = field(default_factory=KnobBounds)
    base: Knobs = field(default_factory=Knobs)

    @property
    def values(self) -> tuple[Array, ...]:
        lows, highs = self.bounds.lows(), self.bounds.highs()
        base = clamp_array(self.base.to_array(), self.bounds)
        out: list[Array] = []
        for col, name in enumerate(KNOB_FIELDS):
            if name not in self.bounds.allow:
                out.append(np.array([base[col]]))
            elif name in LADDERS:
                ladder = np.asarray(LADDERS[name], dtype=np.float64)
                rungs = ladder[(ladder >= lows[col]) & (ladder <= highs[col])]
                out.append(rungs if rungs.size else np.array([base[col]]))
            else:
                out.append(np.arange(lows[col], highs[col] + 1.0))
        return tuple(out)

    @property
    def sizes(self) -> npt.NDArray[np.int64]:
        return np.array([v.size for v in self.values], dtype=np.int64)

    @property
    def n_settings(self) -> int:
        """How many distinct settings the space holds."""
        return int(np.prod(self.sizes.astype(np.float64)))

    def decode(self, index: npt.ArrayLike) -> Array:
        """``(n, 8)`` indices (rounded and clipped) as ``(n, 8)`` knob rows in contract order."""
        idx = np.rint(np.atleast_2d(np.asarray(index, dtype=np.float64))).astype(np.int64)
        vals = self.values
        rows = np.empty(idx.shape, dtype=np.float64)
        for col, v in enumerate(vals):
            rows[:, col] = v[np.clip(idx[:, col], 0, v.size - 1)]
        return rows


# ------------------------------------------------------------------------------ the evaluation


@dataclass(frozen=True)
class Evaluation:
    """Knob rows and their scores at the load: ``objectives`` is ``(n, 3)`` in :data:`OBJECTIVES` order."""

    knobs: Array
    objectives: Array
    slo_p99_ms: float

    @property
    def feasible(self) -> npt.NDArray[np.bool_]:
        return np.asarray(self.objectives[:, 0] <= self.slo_p99_ms)


def profile_arrays(profile: ServiceProfile) -> dict[str, Array]:
    """One profile as the physics' ``(1,)`` arrays."""
    return stack_profiles([profile])


def evaluate_knobs(
    prof: Mapping[str, Array], knobs: npt.ArrayLike, loads_qps: npt.ArrayLike, dt_s: float = DT_S
) -> Array:
    """``(n, 3)`` objectives of ``(n, 8)`` knob rows, each at every load of ``loads_qps``.

    One step of :func:`envs.model.service.step_services` per (row, load), all rows at once: no
    fault, every replica serving, the CPU warm (ambient + 40 °C), run twice with the backlog
    cleared so the GC's allocation/frequency fixed point settles (as ``slo_capacity_qps``).
    Past saturation the one step's backlog shows in P99, which then leaves any SLO.
    Over several loads: the worst P99, the mean cores, the highest heap.
    """
    k = np.atleast_2d(np.asarray(knobs, dtype=np.float64))
    loads = np.atleast_1d(np.asarray(loads_qps, dtype=np.float64))
    n, t = k.shape[0], loads.size
    out = np.empty((n, len(OBJECTIVES)), dtype=np.float64)
    per = max(1, CHUNK_ROWS // t)
    for a in range(0, n, per):
        out[a : a + per] = _evaluate_chunk(prof, k[a : a + per], loads, dt_s)
    return out


def _evaluate_chunk(prof: Mapping[str, Array], k: Array, loads: Array, dt_s: float) -> Array:
    n, t = k.shape[0], loads.size
    m = n * t
    p = {name: np.repeat(np.asarray(v, dtype=np.float64)[:1], m) for name, v in prof.items()}
    rows = np.repeat(k, t, axis=0)
    offered = np.tile(loads, n)
    eff = np.repeat(effects_table([], 1, dt_s), m, axis=0)
    state = ServiceState.initial(p)
    state.temp_c[:] = p["t_amb_c"] + 40.0
    serving = rows[:, KNOB_COL["replicas"]].copy()
    result = None
    for _ in range(2):
        result = step_services(p, rows, serving, offered, eff, state, 0.0, dt_s)
        state.backlog[:] = 0.0
    assert result is not None
    tel = result.telemetry
    p99 = tel[:, COL["p99_ms"]].reshape(n, t).max(axis=1)
    cores = np.asarray(result.cores_used, dtype=np.float64).reshape(n, t).mean(axis=1)
    heap = (tel[:, COL["heap_bytes"]] / 2.0**20).reshape(n, t).max(axis=1)
    return np.stack([p99, cores, heap], axis=1)


# ------------------------------------------------------------------------------ fronts


def non_dominated(objectives: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Mask of the rows no other row dominates (at least as good in all, better in one).

    Rows with equal objectives are all kept. Pairwise in blocks: fine for the tens of thousands
    of rows a search evaluates.
    """
    f = np.asarray(objectives, dtype=np.float64)
    n = f.shape[0]
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    block = max(1, 4_000_000 // max(n, 1))
    for a in range(0, n, block):
        fi = f[a : a + block, None, :]
        le = np.all(f[None, :, :] <= fi, axis=2)
        lt = np.any(f[None, :, :] < fi, axis=2)
        keep[a : a + block] = ~np.any(le & lt, axis=1)
    return keep


@dataclass
class Front:
    """A search's result: its feasible non-dominated settings, figures of the run."""

    method: str
    knobs: Array
    objectives: Array
    evaluations: int
    wall_s: float
    #: After each generation, the front of every feasible setting evaluated so far (NSGA-II only).
    history: list[Array] = field(default_factory=list)
    generations: int = 0
    population: int = 0

    @classmethod
    def of(cls, method: str, ev: Evaluation, wall_s: float, **extra: Any) -> Front:
        """The front of every feasible row of ``ev``, one row per distinct objective vector."""
        ok = ev.feasible
        k, f = ev.knobs[ok], ev.objectives[ok]
        # Settings that differ only in a knob without effect score the same: keep the first.
        _, first = np.unique(np.round(f, 9), axis=0, return_index=True)
        first = np.sort(first)
        k, f = k[first], f[first]
        nd = non_dominated(f)
        return cls(method, k[nd], f[nd], evaluations=int(ev.knobs.shape[0]), wall_s=wall_s, **extra)


def _check(loads: Array, slo_p99_ms: float) -> None:
    if not np.all(np.isfinite(loads)) or loads.size == 0 or np.any(loads < 0):
        raise ConfigError(f"load {loads.tolist()[:5]} must be finite requests/s >= 0; give --load QPS")
    if not np.isfinite(slo_p99_ms) or slo_p99_ms <= 0:
        raise ConfigError(f"SLO P99 {slo_p99_ms!r} ms must be a positive number; give --slo-p99-ms MS")


def random_front(
    prof: Mapping[str, Array], space: KnobSpace, loads: Array, slo_p99_ms: float, evaluations: int, seed: int = 0
) -> Front:
    """Uniformly random settings, ``evaluations`` of them (with repeats, as random search draws)."""
    _check(loads, slo_p99_ms)
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, space.sizes, size=(evaluations, len(KNOB_FIELDS)))
    knobs = space.decode(idx)
    ev = Evaluation(knobs, evaluate_knobs(prof, knobs, loads), slo_p99_ms)
    return Front.of("random", ev, time.perf_counter() - start)


def grid_levels(sizes: npt.ArrayLike, budget: int) -> npt.NDArray[np.int64]:
    """Levels per knob of a full-factorial grid of at most ``budget`` settings.

    Greedy: the knob whose next level multiplies the grid least (the one with the fewest
    levels for its size) gains a level while the grid fits; every knob with a choice starts at
    two levels (its ends) when the budget allows.
    """
    s = np.asarray(sizes, dtype=np.int64)
    levels = np.minimum(s, 2)
    if np.prod(levels.astype(np.float64)) > budget:
        levels = np.ones_like(s)
    while True:
        room = levels < s
        if not room.any():
            return levels
        ratio = np.where(room, (levels + 1) / levels / np.maximum(s / levels, 1.0), np.inf)
        j = int(np.argmin(ratio))
        trial = levels.copy()
        trial[j] += 1
        if np.prod(trial.astype(np.float64)) > budget:
            return levels
        levels = trial


def grid_front(prof: Mapping[str, Array], space: KnobSpace, loads: Array, slo_p99_ms: float, evaluations: int) -> Front:
    """A full-factorial grid of at most ``evaluations`` settings (:func:`grid_levels`), each
    knob's levels evenly spaced over its indices, ends included."""
    _check(loads, slo_p99_ms)
    start = time.perf_counter()
    sizes = space.sizes
    levels = grid_levels(sizes, evaluations)
    axes = [
        np.unique(np.rint(np.linspace(0, s - 1, int(lv))).astype(np.int64)) if lv > 1 else np.array([(s - 1) // 2])
        for s, lv in zip(sizes.tolist(), levels.tolist(), strict=True)
    ]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(KNOB_FIELDS))
    knobs = space.decode(mesh)
    ev = Evaluation(knobs, evaluate_knobs(prof, knobs, loads), slo_p99_ms)
    return Front.of("grid", ev, time.perf_counter() - start)


#: The most settings :func:`exhaustive_front` enumerates (about 20 s per million on a 2-core VM).
MAX_EXHAUSTIVE = 5_000_000


def exhaustive_front(prof: Mapping[str, Array], space: KnobSpace, loads: Array, slo_p99_ms: float) -> Front:
    """Every setting of the space, scored: the true front of the discrete space, as a yardstick.

    In chunks, each chunk's front merged into the running front (a setting dominated within
    its chunk is dominated overall), so memory stays that of one chunk.
    """
    _check(loads, slo_p99_ms)
    n = space.n_settings
    if n > MAX_EXHAUSTIVE:
        raise ConfigError(
            f"the knob space holds {n:,} settings, more than {MAX_EXHAUSTIVE:,} to enumerate; narrow the bounds"
        )
    start = time.perf_counter()
    sizes = tuple(space.sizes.tolist())
    best_k, best_f = np.empty((0, len(KNOB_FIELDS))), np.empty((0, len(OBJECTIVES)))
    step = max(1, CHUNK_ROWS // loads.size)
    for a in range(0, n, step):
        idx = np.stack(np.unravel_index(np.arange(a, min(a + step, n)), sizes), axis=1)
        knobs = space.decode(idx)
        chunk = Front.of("exhaustive", Evaluation(knobs, evaluate_knobs(prof, knobs, loads), slo_p99_ms), 0.0)
        merged = Front.of(
            "exhaustive",
            Evaluation(np.concatenate([best_k, chunk.knobs]), np.concatenate([best_f, chunk.objectives]), slo_p99_ms),
            0.0,
        )
        best_k, best_f = merged.knobs, merged.objectives
    return Front("exhaustive", best_k, best_f, evaluations=n, wall_s=time.perf_counter() - start)


def nsga2_front(
    prof: Mapping[str, Array],
    space: KnobSpace,
    loads: Array,
    slo_p99_ms: float,
    *,
    population: int = 60,
    generations: int = 60,
    seed: int = 0,
    on_generation: Callable[[int], None] | None = None,
) -> Front:
    """NSGA-II over the knob indices: ``population`` settings for ``generations`` generations.

    Integer variables as pymoo recommends: random integer sampling, SBX crossover (p 0.9,
    eta 15) and polynomial mutation (eta 20) on the indices, rounded; duplicates removed. The
    SLO is a constraint (``p99 - slo <= 0``), handled by NSGA-II's constrained domination.
    ``history`` holds, after each generation, the front of every feasible setting evaluated so far.
    """
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.callback import Callback
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    _check(loads, slo_p99_ms)
    if population < 4 or generations < 1:
        raise ConfigError(
            f"NSGA-II needs a population of at least 4 and one generation, not {population} x {generations}"
        )
    sizes = space.sizes
    seen: list[tuple[Array, Array]] = []

    class KnobProblem(Problem):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(n_var=len(KNOB_FIELDS), n_obj=len(OBJECTIVES), n_ieq_constr=1, xl=np.zeros(len(sizes)),
                             xu=(sizes - 1).astype(np.float64), vtype=int)  # fmt: skip

        def _evaluate(self, x: Array, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            knobs = space.decode(x)
            f = evaluate_knobs(prof, knobs, loads)
            seen.append((knobs, f))
            out["F"] = f
            out["G"] = f[:, :1] - slo_p99_ms

    history: list[Array] = []
    archive = [np.empty((0, len(OBJECTIVES)))]
    consumed = [0]

    class Record(Callback):  # type: ignore[misc]
        def notify(self, algorithm: Any) -> None:
            # The front of every feasible setting evaluated so far (the archive, not only the
            # population: a setting crowding dropped is still one the search found).
            new = [f[f[:, 0] <= slo_p99_ms] for _, f in seen[consumed[0] :]]
            consumed[0] = len(seen)
            merged = np.unique(np.round(np.concatenate([archive[0], *new]), 9), axis=0)
            archive[0] = merged[non_dominated(merged)]
            history.append(archive[0])
            if on_generation is not None:
                on_generation(algorithm.n_gen)

    algorithm = NSGA2(
        pop_size=population,
        sampling=IntegerRandomSampling(),
        crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
        mutation=PM(eta=20, vtype=float, repair=RoundingRepair()),
        eliminate_duplicates=True,
    )
    start = time.perf_counter()
    minimize(KnobProblem(), algorithm, ("n_gen", generations), seed=seed, callback=Record(), verbose=False)
    wall = time.perf_counter() - start
    knobs = np.concatenate([k for k, _ in seen]) if seen else np.empty((0, len(KNOB_FIELDS)))
    objs = np.concatenate([f for _, f in seen]) if seen else np.empty((0, len(OBJECTIVES)))
    # The front of everything evaluated (NSGA-II's archive is its last population; an elite it
    # dropped for crowding is still a setting it found).
    front = Front.of("nsga2", Evaluation(knobs, objs, slo_p99_ms), wall)
    front.history, front.generations, front.population = history, generations, population
    return front


# ------------------------------------------------------------------------------ hypervolume, knees


@dataclass(frozen=True)
class Normalisation:
    """Objectives mapped to [0, 1] between ``ideal`` and ``nadir``; the reference at :data:`HV_REFERENCE`."""

    ideal: Array
    nadir: Array

    @classmethod
    def of(cls, *fronts: Array) -> Normalisation:
        pts = [f for f in fronts if f.size]
        if not pts:
            return cls(np.zeros(len(OBJECTIVES)), np.ones(len(OBJECTIVES)))
        allf = np.concatenate(pts)
        return cls(allf.min(axis=0), allf.max(axis=0))

    def apply(self, f: Array) -> Array:
        span = np.where(self.nadir > self.ideal, self.nadir - self.ideal, 1.0)
        return np.asarray((f - self.ideal) / span, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ideal": dict(zip(OBJECTIVES, self.ideal.tolist(), strict=True)),
            "nadir": dict(zip(OBJECTIVES, self.nadir.tolist(), strict=True)),
            "reference_normalised": HV_REFERENCE,
        }


def hypervolume(f: Array, norm: Normalisation) -> float:
    """pymoo's hypervolume of ``f`` normalised by ``norm``, reference point 1.1 in every objective."""
    from pymoo.indicators.hv import HV

    if f.size == 0:
        return 0.0
    return float(HV(ref_point=np.full(len(OBJECTIVES), HV_REFERENCE))(norm.apply(f)))


def hypervolumes(fronts: Mapping[str, Array]) -> tuple[dict[str, float], Normalisation]:
    """Each front's hypervolume against one shared reference (the fronts' joint ideal and nadir)."""
    norm = Normalisation.of(*fronts.values())
    return {name: hypervolume(f, norm) for name, f in fronts.items()}, norm


def knee_points(objectives: Array) -> dict[str, int]:
    """Indices into ``objectives`` (a feasible front) of the points to call out.

    - ``cheapest``: the fewest cores used (ties within 1 %: the smaller heap, then the lower P99);
    - ``lowest_p99``: the lowest P99 (ties within 1 %: fewer cores, then the smaller heap);
    - ``knee``: the point closest (Euclidean) to the ideal point after normalising each
      objective to [0, 1] over the front.
    """
    f = np.asarray(objectives, dtype=np.float64)
    if f.shape[0] == 0:
        return {}

    def best(primary: int, then: tuple[int, int]) -> int:
        near = f[:, primary] <= f[:, primary].min() * 1.01 + 1e-12
        cand = np.flatnonzero(near)
        order = np.lexsort((f[cand, then[1]], f[cand, then[0]]))
        return int(cand[order[0]])

    norm = Normalisation(f.min(axis=0), f.max(axis=0)).apply(f)
    return {
        "cheapest": best(1, (2, 0)),
        "lowest_p99": best(0, (1, 2)),
        "knee": int(np.argmin(np.sqrt((norm**2).sum(axis=1)))),
    }


# ------------------------------------------------------------------------------ the job


def trace_window(path: str | Path, *, interval_s: float, offset_s: float, window_s: float, peak_qps: float) -> Array:
    """Requests/s for each trace value in ``[offset_s, offset_s + window_s)``, the trace scaled to ``peak_qps``."""
    steps = int(np.ceil(window_s / interval_s))
    if steps < 1 or steps > MAX_WINDOW_STEPS:
        raise ConfigError(
            f"trace window {window_s:g} s at {interval_s:g} s per value is {steps} steps; "
            f"give --trace-window between {interval_s:g} and {MAX_WINDOW_STEPS * interval_s:g} s"
        )
    return trace_qps(path, steps, interval_s, interval_s=interval_s, peak_qps=peak_qps, offset_s=offset_s)


def point(knobs: Array, objectives: Array) -> dict[str, Any]:
    """One front point as JSON: its knobs and its objectives."""
    return {
        "knobs": Knobs.from_array(knobs).to_dict(),
        "objectives": {name: round(float(v), 6) for name, v in zip(OBJECTIVES, objectives, strict=True)},
    }


def front_report(front: Front, *, slo_p99_ms: float) -> dict[str, Any]:
    """The front as JSON: points ordered by P99, the knees, hypervolume per generation."""
    order = np.argsort(front.objectives[:, 0], kind="stable")
    knobs, objs = front.knobs[order], front.objectives[order]
    knees = knee_points(objs)
    norm = Normalisation.of(objs)
    hv = [round(hypervolume(f, norm), 6) for f in front.history]
    return {
        "objectives": list(OBJECTIVES),
        "slo_p99_ms": slo_p99_ms,
        "method": front.method,
        "generations": front.generations,
        "population": front.population,
        "evaluations": front.evaluations,
        "wall_s": round(front.wall_s, 3),
        "front": [point(k, f) for k, f in zip(knobs, objs, strict=True)],
        "knees": {name: {"index": i, **point(knobs[i], objs[i])} for name, i in knees.items()},
        "hypervolume": hv,
        "hypervolume_normalisation": norm.to_dict(),
    }


def plot_front(report: Mapping[str, Any], path: str | Path) -> Path:
    """Pairwise projections of the front (the knees marked) and hypervolume per generation, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = np.array([[p["objectives"][o] for o in OBJECTIVES] for p in report["front"]]).reshape(-1, len(OBJECTIVES))
    labels = {"p99_ms": "P99 (ms)", "cores_used": "cores used", "peak_heap_mib": "peak heap (MiB)"}
    fig, axes = plt.subplots(2, 2, figsize=(10, 8))
    pairs = ((0, 1), (0, 2), (1, 2))
    marks = {"cheapest": ("s", "tab:green"), "lowest_p99": ("^", "tab:red"), "knee": ("*", "tab:purple")}
    for ax, (i, j) in zip(axes.flat, pairs, strict=False):
        ax.scatter(f[:, i], f[:, j], s=14, c=f[:, 3 - i - j], cmap="viridis", alpha=0.8)
        for name, (m, c) in marks.items():
            knee = report["knees"].get(name)
            if knee is not None:
                o = knee["objectives"]
                ax.scatter(o[OBJECTIVES[i]], o[OBJECTIVES[j]], marker=m, s=140, c=c, edgecolors="k", label=name)
        ax.set_xlabel(labels[OBJECTIVES[i]])
        ax.set_ylabel(labels[OBJECTIVES[j]])
        if i == 0:
            ax.axvline(report["slo_p99_ms"], color="grey", ls=":", lw=1)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    hv_ax = axes.flat[3]
    hv = report.get("hypervolume") or []
    hv_ax.plot(np.arange(1, len(hv) + 1), hv, marker=".")
    hv_ax.set_xlabel("generation")
    hv_ax.set_ylabel("hypervolume (normalised)")
    hv_ax.grid(alpha=0.3)
    fig.suptitle(f"Pareto front: {len(f)} points ({report.get('method', '')}, P99 <= {report['slo_p99_ms']:g} ms)")
    fig.tight_layout()
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the plot ({exc.strerror}); give --plot a writable path") from None
    finally:
        plt.close(fig)
    return out


def compare(
    prof: Mapping[str, Array],
    space: KnobSpace,
    loads: Array,
    slo_p99_ms: float,
    *,
    population: int = 100,
    generations: int = 100,
    seeds: int = 3,
    exhaustive: bool = False,
) -> dict[str, Any]:
    """NSGA-II against random and grid search at the same number of evaluations.

    Per seed, NSGA-II and random search (the grid is deterministic: run once) at NSGA-II's
    evaluation count (the grid at most that many); every front's hypervolume against one
    reference shared by all of them (the joint ideal and nadir of every front here). With
    ``exhaustive``, also every setting of the space (:func:`exhaustive_front`): the true front.
    """
    runs: list[Front] = []
    for seed in range(seeds):
        nsga = nsga2_front(prof, space, loads, slo_p99_ms, population=population, generations=generations, seed=seed)
        runs.append(nsga)
        runs.append(random_front(prof, space, loads, slo_p99_ms, nsga.evaluations, seed=seed))
    runs.append(grid_front(prof, space, loads, slo_p99_ms, runs[0].evaluations))
    if exhaustive:
        runs.append(exhaustive_front(prof, space, loads, slo_p99_ms))
    norm = Normalisation.of(*(r.objectives for r in runs))
    methods: dict[str, dict[str, Any]] = {}
    for r in runs:
        m = methods.setdefault(r.method, {"hypervolume": [], "wall_s": [], "evaluations": [], "front_size": []})
        m["hypervolume"].append(round(hypervolume(r.objectives, norm), 6))
        m["wall_s"].append(round(r.wall_s, 3))
        m["evaluations"].append(r.evaluations)
        m["front_size"].append(int(r.objectives.shape[0]))
    for m in methods.values():
        m["hypervolume_mean"] = round(float(np.mean(m["hypervolume"])), 6)
        m["wall_s_mean"] = round(float(np.mean(m["wall_s"])), 3)
    nsga_hv, rand_hv = np.array(methods["nsga2"]["hypervolume"]), np.array(methods["random"]["hypervolume"])
    return {
        "objectives": list(OBJECTIVES),
        "slo_p99_ms": slo_p99_ms,
        "population": population,
        "generations": generations,
        "seeds": seeds,
        "settings_in_space": space.n_settings,
        "methods": methods,
        "nsga2_beats_random": int((nsga_hv > rand_hv).sum()),
        "hypervolume_normalisation": norm.to_dict(),
    }
