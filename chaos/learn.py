"""Learning the boundary rule library (:mod:`rlctl.rules`) from chaos run reports.

**Where a strategy stopped holding.** Every fault window of every controller's run in a report
(``rlctl chaos run``, any backend: :data:`chaos.runner.REPORT_SCHEMA`) becomes one
:class:`Observation`:

- the fault: its kind and parameters (defaults filled in, :data:`chaos.spec.FAULT_PARAMS`),
  and the run's SLO (context: a delay that breaks an 8 ms SLO may not break a 250 ms one);
  on a live backend the injected and reverted times, not the planned ones;
- the knob settings in force when it hit: the series' replicas, GOMAXPROCS and GOGC of the
  last interval ending at or before the onset (the first interval if the fault opens the run),
  and ``qps_per_replica``, offered load over replicas (:data:`rlctl.rules.FEATURES`);
- what broke, and when: a metric *breaks* when it stays out of its bound (P99 above the
  scenario's SLO, the error rate above ``max_error_rate``) for ``breach_intervals``
  consecutive intervals between the onset and ``after_s`` past the fault's end; the first to
  break and the seconds from onset to its breach are kept.

A window is left out (confounded) when a metric was already out of bounds in the
``baseline_s`` before it, when another fault window overlaps it, or when its injection failed.

**Independent runs.** Observations from one report share an experiment; experiments are
independent when their independence key differs (:func:`independence_key`): on the sim
backend the scenario (name and content) and the seed — the same scenario and seed replays the
same run —, on a live backend the run id (every run has its own noise).

**Rules.** For every fault kind and metric, sequential covering (as in CN2 or RIPPER): the
windows where the metric broke are the positives, the windows where it did not are the
negatives; a rule is a conjunction of at most ``max_conditions`` thresholds ``f >= v`` or
``f <= v`` on the fault's parameters and the features, with ``v`` one of the positives'
values, that covers no negative. The rule covering the most independent experiments (then the
fewest conditions, then the most windows) is taken, its positives removed, and so on. Conditions
take only the directions :data:`rlctl.rules.FEATURE_OPS` allows (a monotonicity prior: fewer
replicas, more load per replica and a stronger fault are never safer). A rule
with at least ``min_support`` experiments enters the library; fewer, it is a candidate.

**Contradiction.** A window inside a rule's region (its fault kind, parameters and features)
where its metric did not break contradicts it; a library rule so contradicted is retired with
that run, and a new rule the stored contradiction would satisfy is refused.

Nothing here knows the scenarios or the simulator: only the report's fields.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chaos.runner import REPORT_SCHEMA
from chaos.spec import FAULT_PARAMS, FaultKind
from rlctl.errors import ConfigError
from rlctl.inputs import read_text
from rlctl.rules import (
    FEATURE_OPS,
    FEATURES,
    METRICS,
    WEAKER_WHEN_HIGHER,
    Condition,
    Experiment,
    Library,
    Retirement,
    Rule,
    Support,
    feature_values,
    now_utc,
)

log = logging.getLogger(__name__)

#: Largest report read (a week-long sim run with several controllers stays far below).
MAX_REPORT_BYTES = 256 << 20
#: Thresholds tried per feature at most (the positives' values, thinned to quantiles).
MAX_THRESHOLDS = 24


@dataclass(frozen=True)
class LearnSettings:
    """How windows are judged and rules accepted."""

    min_support: int = 5
    """Independent experiments a rule needs to enter the library."""
    max_error_rate: float = 0.01
    """Error rate above which the error-rate metric has broken."""
    breach_intervals: int = 2
    """Consecutive intervals out of bounds that make a breach (one bad interval is noise)."""
    baseline_s: float = 20.0
    """Seconds before the onset that must be in bounds, or the window is confounded."""
    after_s: float = 10.0
    """Seconds past the fault's end still charged to it (a restart, a queue draining)."""
    max_conditions: int = 2
    """Thresholds per rule at most (fault parameters and features together)."""

    def __post_init__(self) -> None:
        if self.min_support < 1 or self.breach_intervals < 1 or not 0 <= self.max_conditions <= 3:
            raise ConfigError("rules: min_support and breach_intervals must be >= 1, max_conditions 0..3")
        if not (0 <= self.max_error_rate <= 1) or self.baseline_s < 0 or self.after_s < 0:
            raise ConfigError("rules: max_error_rate must be in 0..1, baseline_s and after_s >= 0")


@dataclass(frozen=True)
class Observation:
    """One fault window of one controller's run: what hit, what was set, what broke."""

    run: str
    """``<backend>:<run id>:<controller>``."""
    experiment: Experiment
    fault: str
    kind: str
    start_s: float
    values: dict[str, float]
    """The fault's numeric parameters and the features at onset."""
    broke: dict[str, float] = field(default_factory=dict)
    """Metric -> seconds from onset to its breach."""
    peak: dict[str, float] = field(default_factory=dict)
    """Metric -> its worst value in the window, over its bound (1.0 = at the bound)."""

    @property
    def first(self) -> str | None:
        return min(self.broke, key=lambda m: (self.broke[m], m)) if self.broke else None


# ------------------------------------------------------------------ reading reports


def report_paths(paths: Iterable[Path]) -> list[Path]:
    """Report files: each path itself, or every ``report.json`` under a folder."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.rglob("report.json"))
            if not found:
                raise ConfigError(
                    f"{p}: no report.json under this folder; pass chaos run reports (rlctl chaos run --report DIR)"
                )
            out += found
        else:
            out.append(p)
    return out


def read_report(path: Path) -> dict[str, Any]:
    """A chaos run report; a clear error when the file is not one."""
    text = read_text(path, what="chaos run report", max_bytes=MAX_REPORT_BYTES)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not JSON ({exc.msg} at line {exc.lineno}); pass a report.json of rlctl chaos run"
        ) from None
    if not isinstance(data, dict) or data.get("schema") != REPORT_SCHEMA:
        got = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(
            f"{path}: not a chaos run report (schema {got!r}, expected {REPORT_SCHEMA!r}); "
            "pass the report.json written by `rlctl chaos run --report DIR` or `--json FILE`"
        )
    for key in ("run_id", "backend", "scenario", "faults", "results"):
        if key not in data:
            raise ConfigError(f"{path}: chaos run report without {key!r}; is it truncated? Rerun or pass another")
    return data


def independence_key(report: dict[str, Any], seed: Any) -> str:
    """Experiments with different keys are independent (see the module docstring)."""
    if report["backend"] != "sim":
        return f"{report['backend']}|{report['run_id']}"
    sc = report["scenario"]
    content = json.dumps({"load": sc.get("load"), "faults": report["faults"], "slo": sc.get("slo_p99_ms"),
                          "duration": sc.get("duration_s")}, sort_keys=True)  # fmt: skip
    digest = hashlib.sha256(content.encode()).hexdigest()[:10]
    return f"sim|{sc.get('name')}|{digest}|seed={seed}"


def _series(res: dict[str, Any], key: str, n: int) -> np.ndarray:
    raw = res.get("series", {}).get(key)
    if raw is None or len(raw) != n:
        return np.full(n, np.nan)
    return np.array([np.nan if v is None else v for v in raw], dtype=np.float64)


def _breach_start(bad: np.ndarray, t_s: np.ndarray, run: int) -> float | None:
    """End time of the first interval of the first ``run`` consecutive out-of-bounds intervals."""
    count = 0
    for i, b in enumerate(bad):
        count = count + 1 if b else 0
        if count >= run:
            return float(t_s[i - run + 1])
    return None


def observations(report: dict[str, Any], settings: LearnSettings, source: str = "") -> list[Observation]:
    """Every usable fault window of every controller's run in ``report``."""
    sc = report["scenario"]
    slo = float(sc.get("slo_p99_ms") or math.nan)
    out: list[Observation] = []
    windows = []
    for i, f in enumerate(report["faults"]):
        try:
            kind = FaultKind(f["kind"])
            windows.append((i, f, kind, float(f["start_s"]), float(f["end_s"])))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{source}: faults[{i}] is not a fault window of a chaos run report") from None
    for controller, res in report["results"].items():
        t_s = np.asarray(res.get("series", {}).get("t_s") or [], dtype=np.float64)
        n = len(t_s)
        if n == 0:
            continue
        p99, err = _series(res, "p99_ms", n), _series(res, "error_rate", n)
        bad = {"p99_ms": p99 > slo, "error_rate": err > settings.max_error_rate}
        worst = {"p99_ms": p99 / slo, "error_rate": err / max(settings.max_error_rate, 1e-12)}
        seed = (res.get("extra") or {}).get("seed")
        exp = Experiment(
            key=independence_key(report, seed), backend=report["backend"], scenario=str(sc.get("name")),
            run_id=str(report["run_id"]), controllers=[controller], created=str(report.get("created", "")),
        )  # fmt: skip
        injections = {j.get("fault"): j for j in res.get("injections") or []}
        spans: list[tuple[float, float] | None] = []
        for _, f, _, start, end in windows:
            inj = injections.get(f.get("fault"), {})
            if inj.get("error"):
                spans.append(None)
                continue
            if report["backend"] != "sim" and inj.get("injected_s") is not None:
                start = float(inj["injected_s"])
                end = float(inj["reverted_s"]) if inj.get("reverted_s") is not None else end
            spans.append((start, end))
        for (i, f, kind, _, _), span in zip(windows, spans, strict=True):
            if span is None:
                continue
            start, end = span
            others = [s for j, s in enumerate(spans) if j != i and s is not None]
            if any(a < end + settings.after_s and start < b for a, b in others):
                continue  # another fault in the same stretch: whose effect would it be?
            pre = (t_s > start - settings.baseline_s) & (t_s <= start)
            if any(bool(np.any(b[pre])) for b in bad.values()):
                continue  # already out of bounds before the fault hit
            inside = (t_s > start) & (t_s <= end + settings.after_s)
            if not np.any(inside):
                continue
            before = np.flatnonzero(t_s <= start)  # the interval in force when the fault hit
            onset = int(before[-1]) if before.size else int(np.argmax(inside))
            knobs = {k: float(_series(res, k, n)[onset]) for k in ("replicas", "gomaxprocs", "gogc")}
            values = {
                **_params(kind, f.get("params") or {}),
                "slo_p99_ms": slo,
                **feature_values(knobs, float(_series(res, "offered_qps", n)[onset])),
            }
            broke, peak = {}, {}
            for metric in METRICS:
                at = _breach_start(bad[metric][inside], t_s[inside], settings.breach_intervals)
                if at is not None:
                    broke[metric] = round(max(at - start, 0.0), 3)
                w = worst[metric][inside]
                if np.any(np.isfinite(w)):
                    peak[metric] = round(float(np.nanmax(w)), 4)
            out.append(Observation(
                run=f"{report['backend']}:{report['run_id']}:{controller}", experiment=exp, fault=str(f.get("fault")),
                kind=kind.value, start_s=start, values=values, broke=broke, peak=peak,
            ))  # fmt: skip
    return out


def _params(kind: FaultKind, params: dict[str, Any]) -> dict[str, float]:
    merged = {**FAULT_PARAMS[kind], **params}
    return {k: float(v) for k, v in merged.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def read_observations(paths: Sequence[Path], settings: LearnSettings) -> tuple[list[Observation], int]:
    """Observations of every report under ``paths`` (reports read twice count once), and reports read."""
    seen: set[tuple[str, str]] = set()
    obs: list[Observation] = []
    for p in report_paths(paths):
        report = read_report(p)
        ident = (str(report["backend"]), str(report["run_id"]))
        if ident in seen:
            log.info("%s: run %s already read, skipped", p, ident[1])
            continue
        seen.add(ident)
        obs += observations(report, settings, source=str(p))
    return obs, len(seen)


# ------------------------------------------------------------------ learning


def _candidate_conditions(kind: str, pos: Sequence[Observation]) -> list[Condition]:
    names = sorted({k for o in pos for k in o.values} - set(FEATURES)) + list(FEATURES)
    out = []
    for name in names:
        vals = sorted({o.values[name] for o in pos if math.isfinite(o.values.get(name, math.nan))})
        if len(vals) > MAX_THRESHOLDS:  # quantiles of the positives' values keep the search small
            vals = sorted({vals[int(q)] for q in np.linspace(0, len(vals) - 1, MAX_THRESHOLDS)})
        ops = FEATURE_OPS.get(name) or (("<=",) if name in WEAKER_WHEN_HIGHER else (">=",))
        out += [Condition(feature=name, op=op, value=v) for v in vals for op in ops]  # type: ignore[arg-type]
    return out


def _consistent(conds: list[Condition], hits: Any, max_size: int) -> list[tuple[int, ...]]:
    """Index tuples of conditions on distinct features that no negative satisfies together."""
    feats = np.array([c.feature for c in conds], dtype=object)
    out: list[tuple[int, ...]] = [()]
    frontier: list[tuple[tuple[int, ...], Any]] = [((), np.ones(hits.shape[1], dtype=bool))]
    for _ in range(max_size):
        grown = []
        for ix, together in frontier:
            start = ix[-1] + 1 if ix else 0
            used = {conds[i].feature for i in ix}
            rest = np.arange(start, len(conds))
            rest = rest[[f not in used for f in feats[start:]]] if used else rest
            joint = together[None, :] & hits[rest]
            clean = ~joint.any(axis=1)
            out += [(*ix, int(i)) for i in rest[clean]]
            grown += [((*ix, int(i)), joint[k]) for k, i in enumerate(rest) if not clean[k]]
        frontier = grown
    return out


def learn_kind(kind: str, metric: str, obs: Sequence[Observation], settings: LearnSettings) -> list[Rule]:
    """Sequential covering for one fault kind and metric (see the module docstring)."""
    mine = [o for o in obs if o.kind == kind]
    pos = [o for o in mine if metric in o.broke]
    neg = [o for o in mine if metric not in o.broke]
    conds = _candidate_conditions(kind, pos)
    # covers[c, i]: condition c holds for positive i; hits[c, j]: for negative j.
    covers = np.array([[c.holds(o.values) for o in pos] for c in conds], dtype=bool).reshape(len(conds), len(pos))
    hits = np.array([[c.holds(o.values) for o in neg] for c in conds], dtype=bool).reshape(len(conds), len(neg))
    keys = np.array([o.experiment.key for o in pos], dtype=object)
    combos = _consistent(conds, hits, settings.max_conditions)
    if neg:
        combos = [ix for ix in combos if ix]  # the empty rule covers every negative too
    rules: list[Rule] = []
    left = np.ones(len(pos), dtype=bool)
    while left.any():
        best: tuple[tuple[int, int, int], tuple[int, ...], Any] | None = None
        for ix in combos:
            covered = (covers[list(ix)].all(axis=0) if ix else np.ones(len(pos), dtype=bool)) & left
            n = int(covered.sum())
            if n == 0:
                continue
            score = (len(set(keys[covered])), -len(ix), n)
            if best is None or score > best[0]:
                best = (score, ix, covered)
        if best is None:
            break
        _, ix, covered = best
        rules.append(
            _make_rule(kind, metric, [conds[i] for i in ix], [p for p, c in zip(pos, covered, strict=True) if c], neg)
        )
        left &= ~covered
    return rules


def _make_rule(kind: str, metric: str, combo: Sequence[Condition], pos: list[Observation],
               neg: list[Observation]) -> Rule:  # fmt: skip
    intensity = [c for c in combo if c.feature not in FEATURES]
    when = [c for c in combo if c.feature in FEATURES]
    # Prefer: the other side of each knob condition, at the nearest value seen holding (if any).
    prefer = []
    for c in when:
        others = [d for d in combo if d is not c]
        held = [o.values[c.feature] for o in neg if all(d.holds(o.values) for d in others)
                and math.isfinite(o.values.get(c.feature, math.nan))]  # fmt: skip
        if c.op == "<=":
            above = [v for v in held if v > c.value]
            prefer.append(Condition(feature=c.feature, op=">=", value=min(above) if above else _beyond(c)))
        else:
            below = [v for v in held if v < c.value]
            prefer.append(Condition(feature=c.feature, op="<=", value=max(below) if below else _beyond(c)))
    times = [o.broke[metric] for o in pos]
    firsts: dict[str, int] = {}
    for o in pos:
        if o.first is not None:
            firsts[o.first] = firsts.get(o.first, 0) + 1
    peaks = [o.peak.get(metric, math.nan) for o in pos]
    rule = Rule(
        fault=kind, intensity=intensity, when=when, breaks=metric, prefer=prefer,
        support=Support.of([o.experiment for o in pos]),
        evidence={
            "windows": len(pos),
            "seconds_to_break": {"median": _r(np.median(times)), "max": _r(max(times))},
            "broke_first": dict(sorted(firsts.items())),
            "peak_over_bound": {"median": _r(np.nanmedian(peaks)), "max": _r(np.nanmax(peaks))},
            "held_windows_of_this_fault": len(neg),
            "ranges": _ranges([o.values for o in pos], [c.feature for c in combo]),
        },
    )  # fmt: skip
    return rule


def _beyond(c: Condition) -> float:
    # No window held on the other side: prefer the nearest value past the threshold.
    step = 1.0 if float(c.value).is_integer() else abs(c.value) * 0.1 or 1.0
    return c.value + step if c.op == "<=" else c.value - step


def _ranges(values: list[dict[str, float]], names: list[str]) -> dict[str, list[float]]:
    out = {}
    for n in names:
        vs = [v[n] for v in values if math.isfinite(v.get(n, math.nan))]
        if vs:
            out[n] = [_r(min(vs)), _r(max(vs))]
    return out


def _r(v: Any) -> float:
    return round(float(v), 4)


def learn(obs: Sequence[Observation], settings: LearnSettings) -> list[Rule]:
    """Every rule the observations support (any support; the caller splits rules from candidates)."""
    rules = []
    for kind in sorted({o.kind for o in obs}):
        for metric in METRICS:
            rules += learn_kind(kind, metric, obs, settings)
    return rules


# ------------------------------------------------------------------ updating a library


def contradiction(rule: Rule, obs: Sequence[Observation]) -> Observation | None:
    """The first window inside ``rule``'s region where its metric held, else None."""
    for o in sorted(obs, key=lambda o: (o.experiment.created, o.run, o.start_s)):
        if rule.matches(o.kind, o.values) and rule.breaks not in o.broke:
            return o
    return None


def update(lib: Library, obs: Sequence[Observation], settings: LearnSettings, runs_read: int) -> Library:
    """``lib`` updated with what ``obs`` show: contradicted rules retired, support added, new rules numbered.

    Ids are never reused or changed; a relearned rule with the identity (fault, metric, which
    conditions) of an active rule keeps its id and takes the new thresholds; reviewers' ``note``
    and ``enforce`` are kept. Earlier candidates stay unless this batch contradicts them.
    """
    stamp = now_utc()
    rules = [r.model_copy(deep=True) for r in lib.rules]
    retired_values = [(r, r.retired.values) for r in rules if r.retired is not None]
    learned = learn(obs, settings)
    by_identity = {r.identity(): r for r in rules if r.status == "active"}
    candidates: list[Rule] = []
    for new in learned:
        if any(new.matches(old.fault, vals) and new.breaks == old.breaks for old, vals in retired_values):
            log.info("learned rule refused, a retired rule's contradiction lies in it: %s", new.describe())
            continue
        old = by_identity.get(new.identity())
        if old is not None:
            old.intensity, old.when, old.prefer, old.evidence = new.intensity, new.when, new.prefer, new.evidence
            old.support = Support.of([*old.support.experiments, *new.support.experiments])
            continue
        prior = [c for c in lib.candidates if c.identity() == new.identity()]
        if prior:
            new.support = Support.of([*prior[0].support.experiments, *new.support.experiments])
        if new.support.count >= settings.min_support:
            new.id, new.status = max((r.id for r in rules), default=0) + 1, "active"
            rules.append(new)
            by_identity[new.identity()] = new
        else:
            candidates.append(new)
    learned_ids = {r.identity() for r in learned}
    for old_c in lib.candidates:  # earlier candidates this batch neither relearned nor contradicted stay
        if old_c.identity() in learned_ids or contradiction(old_c, obs) is not None:
            continue
        c = old_c.model_copy(deep=True)
        extra = [o.experiment for o in obs if c.matches(o.kind, o.values) and c.breaks in o.broke]
        c.support = Support.of([*c.support.experiments, *extra])
        if c.support.count >= settings.min_support:
            c.id, c.status = max((r.id for r in rules), default=0) + 1, "active"
            rules.append(c)
        else:
            candidates.append(c)
    for r in rules:
        if r.status != "active":
            continue
        hit = contradiction(r, obs)
        if hit is not None:
            r.status = "retired"
            r.retired = Retirement(
                run=hit.run, key=hit.experiment.key, fault=hit.fault, at=stamp,
                reason=f"{hit.kind} window {hit.fault} at {hit.start_s:g} s held ({r.breaks} did not break) "
                f"inside the rule's region",
                values={k: v for k, v in hit.values.items() if math.isfinite(v)},
            )  # fmt: skip
            continue
        extra = [o.experiment for o in obs if r.matches(o.kind, o.values) and r.breaks in o.broke]
        r.support = Support.of([*r.support.experiments, *extra])
        r.statement = r.describe()
    for c in candidates:
        c.statement = c.describe()
    for r in rules:
        if r.status == "active" and not r.statement:
            r.statement = r.describe()
    return lib.model_copy(
        update={
            "updated": stamp,
            "settings": {**settings.__dict__},
            "rules": rules,
            "candidates": candidates,
            "runs_read": lib.runs_read + runs_read,
        }
    )


# ------------------------------------------------------------------ evidence figure


def plot_rule(rule: Rule, obs: Sequence[Observation], path: Path) -> Path:
    """``rule-N.png``: every window of the rule's fault, its first condition's value against how far
    the rule's metric went past its bound (1 = at the bound); broke, held, and the threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = [*rule.when, *rule.intensity]
    x_name = conds[0].feature if conds else None
    mine = [o for o in obs if o.kind == rule.fault]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    rng = np.random.default_rng(0)  # jitter, so windows with one setting do not hide each other
    for broke, colour, label in ((True, "tab:red", f"{rule.breaks} broke"), (False, "tab:green", "held")):
        pts = [o for o in mine if (rule.breaks in o.broke) == broke]
        xs = np.array([o.values.get(x_name, np.nan) if x_name else 0.0 for o in pts], dtype=np.float64)
        ys = np.array([max(o.peak.get(rule.breaks, np.nan), 1e-3) for o in pts], dtype=np.float64)
        inside = np.array([rule.matches(o.kind, o.values) for o in pts], dtype=bool)
        xs = xs * (1 + 0.04 * rng.standard_normal(len(xs)))
        ax.scatter(xs[inside], ys[inside], c=colour, marker="o", label=f"{label}, inside the rule ({inside.sum()})")
        ax.scatter(
            xs[~inside], ys[~inside], c=colour, marker="x", alpha=0.6, label=f"{label}, outside ({(~inside).sum()})"
        )
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    if x_name:
        ax.axvline(conds[0].value, color="black", lw=0.8, ls=":")
        ax.set_xlabel(x_name)
    ax.set_yscale("log")
    ax.set_ylabel(f"peak {rule.breaks} / bound")
    ax.set_title(f"rule {rule.id}: {rule.fault}, {rule.support.count} experiments", fontsize=9)
    ax.legend(fontsize=7)
    fig.text(0.01, 0.01, rule.describe(), fontsize=6, wrap=True)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
