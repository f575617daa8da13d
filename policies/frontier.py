"""The frontier check: is the learned policy dominated by a baseline without foresight?

A controller earns its place only if no controller that could be built without knowing the
future (an HPA at some CPU target, the reactive oracle at some headroom, each also under the
SLO guard) has *both* less SLO-violation time *and* fewer replica-seconds on the same
scenarios. A single ratio to ``hpa-tuned`` cannot show that: a policy can beat the tuned HPA on
violations by buying replicas that a more cautious fixed-target HPA would also have bought, and
missed less with. The check therefore sweeps a grid of such baselines (:data:`FRONTIER_BASELINES`)
and, per scenario kind and over all kinds, lists the ones that dominate each controller under
test (:func:`frontier_check`).

Domination is strict in both coordinates (:func:`dominates`): a baseline that ties on either
violations or cost does not dominate, so a policy that matches a baseline's misses at lower
cost is not flagged. The plotted Pareto front (:func:`pareto_front`) uses the usual weak form:
a point is on it unless another is at least as good in both and better in one.

This module is post-processing only: it reads the per-kind totals
(``report["summary"]["totals"]``) that :func:`policies.evaluate.evaluate` already produces, so
the frontier is scored by exactly the rollouts and scores every other figure comes from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlctl.report import write_atomic

#: CPU targets of the ``hpa-<t>`` grid: 0.3-0.9 in steps of 0.1. ``hpa-tuned`` sweeps a 0.025
#: grid, but here every target is a full rollout per suite (and again under the guard): a 0.1
#: step keeps ``rlctl eval --frontier`` to 30 more controllers (with 22, validation, 3 seeds: 270 s of CPU, 2026-12-05).
FRONTIER_HPA_TARGETS: tuple[float, ...] = tuple(round(0.3 + 0.1 * i, 1) for i in range(7))
#: Headrooms of the ``oracle-reactive-<h>`` grid: 1.0-1.3 in steps of 0.1 (above 1.3 it only
#: buys replicas: its misses are the bursts it cannot see, not the size of its margin).
FRONTIER_HEADROOMS: tuple[float, ...] = (1.0, 1.1, 1.2, 1.3)
#: The non-clairvoyant baselines every controller under test is checked against, each alone
#: and under the SLO guard (the fair comparison for ``ppo+guard``): 30 names. ``capacity-<h>`` is the
#: rule a residual policy acts over (``policies.residual``): the learned part must beat it too.
FRONTIER_BASELINES: tuple[str, ...] = tuple(
    name
    for base in (
        *(f"hpa-{t:.1f}" for t in FRONTIER_HPA_TARGETS),
        *(f"oracle-reactive-{h:.1f}" for h in FRONTIER_HEADROOMS),
        *(f"capacity-{h:.1f}" for h in FRONTIER_HEADROOMS),
    )
    for name in (base, f"{base}+guard")
)
#: Drawn as references but never checked against: each knows what no deployed controller can
#: (``hpa-tuned`` its target in hindsight, ``oracle`` the future load and faults).
CLAIRVOYANT: tuple[str, ...] = ("hpa-tuned", "oracle")
#: The key of the all-kinds total in :func:`frontier_check`'s result.
TOTAL = "total"
#: Relative difference below which two totals are a tie: means over seeds summed in another
#: order differ in the last bits, and a rounding error must not make a baseline dominate.
REL_TOL = 1e-9

Point = tuple[float, float]  # (SLO-violation time, replica-seconds)


def _less(a: float, b: float) -> bool:
    """``a`` strictly below ``b`` by more than rounding (see :data:`REL_TOL`)."""
    return a < b - REL_TOL * max(abs(a), abs(b), 1.0)


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` has strictly less violation time *and* strictly fewer replica-seconds
    than ``b``; a tie on either does not dominate (the check's definition)."""
    return _less(a[0], b[0]) and _less(a[1], b[1])


def dominated_by(point: Point, others: Mapping[str, Point]) -> list[str]:
    """Names of the ``others`` that dominate ``point``, cheapest first (the most damning first)."""
    names = [n for n, p in others.items() if dominates(p, point)]
    return sorted(names, key=lambda n: (others[n][1], others[n][0], n))


def pareto_front(points: Mapping[str, Point]) -> list[str]:
    """Names of the points no other point weakly dominates (at least as good in both, better in
    one), sorted by replica-seconds: the cost-misses trade-off the baselines can reach."""

    def weakly(a: Point, b: Point) -> bool:
        return a[0] <= b[0] and a[1] <= b[1] and (_less(a[0], b[0]) or _less(a[1], b[1]))

    front = [n for n, p in points.items() if not any(weakly(q, p) for m, q in points.items() if m != n)]
    return sorted(front, key=lambda n: (points[n][1], points[n][0], n))


def violation_key(totals: Mapping[str, Mapping[str, Mapping[str, float]]]) -> tuple[str, str]:
    """The totals' violation score and its unit: ``slo_violation_s`` (seconds, ``rlctl.scoring``)
    or, in reports written before it, ``slo_violation_minutes``. Domination does not depend on
    the unit, so both are checked as they are and the unit is reported beside the figure."""
    for by_ctrl in totals.values():
        for t in by_ctrl.values():
            return ("slo_violation_s", "s") if "slo_violation_s" in t else ("slo_violation_minutes", "min")
    return "slo_violation_s", "s"


def kind_points(totals: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict[str, dict[str, Point]]:
    """``{kind: {controller: point}}`` from evaluate's ``summary.totals``, plus :data:`TOTAL`
    (the sum over kinds of the controllers scored on every kind)."""
    key, _ = violation_key(totals)
    out: dict[str, dict[str, Point]] = {}
    for kind, by_ctrl in totals.items():
        out[kind] = {c: (float(t[key]), float(t["replica_seconds"])) for c, t in by_ctrl.items()}
    everywhere = set.intersection(*(set(p) for p in out.values())) if out else set()
    out[TOTAL] = {c: (sum(out[k][c][0] for k in totals), sum(out[k][c][1] for k in totals)) for c in sorted(everywhere)}
    return out


def frontier_check(
    totals: Mapping[str, Mapping[str, Mapping[str, float]]],
    under_test: Sequence[str],
    baselines: Iterable[str],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per controller under test and kind (and :data:`TOTAL`): the baselines that dominate it,
    and its own violation time and replica-seconds.

    ``baselines`` are the names checked against (those scored on a kind); a clairvoyant name
    (:data:`CLAIRVOYANT`) among them is ignored, since beating what needs foresight is not the
    claim. Returns ``{controller: {kind: {"dominated_by", "violation", "violation_unit",
    "replica_seconds"}}}``, ``violation`` in the totals' unit (:func:`violation_key`).
    """
    _, unit = violation_key(totals)
    names = [b for b in baselines if b not in CLAIRVOYANT and b not in under_test]
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, points in kind_points(totals).items():
        others = {b: points[b] for b in names if b in points}
        for ctrl in under_test:
            if ctrl not in points:
                continue
            viol, reps = points[ctrl]
            result.setdefault(ctrl, {})[kind] = {
                "dominated_by": dominated_by(points[ctrl], others),
                "violation": viol,
                "violation_unit": unit,
                "replica_seconds": reps,
            }
    return result


def failures(frontier: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
    """One line per (controller, kind) that is dominated, for the ``CheckFailed`` message."""
    return [
        f"{ctrl} on {kind} by {', '.join(entry['dominated_by'])}"
        for ctrl, by_kind in frontier.items()
        for kind, entry in by_kind.items()
        if entry["dominated_by"]
    ]


def _unit(frontier: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    for by_kind in frontier.values():
        for e in by_kind.values():
            return str(e.get("violation_unit", "s"))
    return "s"


def render_frontier_table(frontier: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> Any:
    """A Rich table: one row per controller under test and kind, with its verdict."""
    from rich.table import Table

    unit = _unit(frontier)
    table = Table(title="Frontier check: baselines without foresight with fewer violations AND fewer replica-s")
    for col, justify in (("controller", "left"), ("kind", "left"), (f"SLO-viol {unit}", "right"),
                         ("replica-s", "right"), ("verdict", "left"), ("dominated by", "left")):  # fmt: skip
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for ctrl, by_kind in frontier.items():
        for i, (kind, e) in enumerate(by_kind.items()):
            verdict = "[red]dominated[/red]" if e["dominated_by"] else "[green]not dominated[/green]"
            table.add_row(ctrl if i == 0 else "", kind, f"{e['violation']:.2f}", f"{e['replica_seconds']:,.0f}",
                          verdict, ", ".join(e["dominated_by"]) or "-")  # fmt: skip
        table.add_section()
    return table


def frontier_markdown(frontier: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """The same table in Markdown (``frontier.md`` beside the plots)."""
    unit = _unit(frontier)
    lines = [
        "# Frontier check",
        "",
        "Baselines without foresight (hpa-<t>, oracle-reactive-<h>, each also +guard) with strictly fewer",
        "SLO-violation time and strictly fewer replica-seconds than the controller. Plots: `frontier-<kind>.png`.",
        "",
        f"| controller | kind | SLO-violation {unit} | replica-s | dominated by |",
        "|---|---|---:|---:|---|",
    ]
    for ctrl, by_kind in frontier.items():
        for kind, e in by_kind.items():
            by = ", ".join(e["dominated_by"]) or "none"
            lines.append(f"| {ctrl} | {kind} | {e['violation']:.2f} | {e['replica_seconds']:,.0f} | {by} |")
    return "\n".join(lines) + "\n"


#: Violation time below which the plot's axis is linear (about one minute of misses).
_LINEAR = {"s": 60.0, "min": 1.0}


def plot_frontier(
    path: str | Path,
    points: Mapping[str, Point],
    under_test: Sequence[str],
    baselines: Iterable[str],
    *,
    title: str = "",
    unit: str = "s",
) -> Path:
    """One PNG: violation time (in ``unit``) against replica-seconds of every controller on one kind.

    Baselines are dots (HPA blue, reactive oracle green, guarded ones hollow; named if on the
    front or dominating a controller under test) with their Pareto front as a step line; the
    controllers under test are highlighted; ``hpa-tuned`` and ``oracle`` are marked as
    references (a square and a diamond). A controller is dominated when a baseline sits strictly
    below-left of it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = {b: points[b] for b in baselines if b in points and b not in CLAIRVOYANT and b not in under_test}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    front = pareto_front(base)
    # Only the front and the dominating baselines are named: 22 labels on a cluster are unreadable,
    # and these are the ones the verdict is about (frontier.md lists every figure).
    named = set(front).union(*(dominated_by(points[c], base) for c in under_test if c in points))
    for name, (v, r) in base.items():
        guarded = name.endswith("+guard")
        colour = "tab:blue" if name.startswith("hpa") else "tab:green"
        ax.scatter([r], [v], s=22, facecolors="none" if guarded else colour, edgecolors=colour, zorder=2)
        if name in named:
            ax.annotate(name, (r, v), fontsize=6, color="dimgrey", xytext=(3, 2), textcoords="offset points")
    if front:
        xs, ys = [base[n][1] for n in front], [base[n][0] for n in front]
        ax.step(xs, ys, where="post", color="black", lw=1, ls="--", label="Pareto front of the baselines", zorder=1)
    for name, marker in zip(CLAIRVOYANT, ("s", "D"), strict=True):
        if name in points:
            v, r = points[name]
            ax.scatter([r], [v], marker=marker, s=50, color="darkorange", edgecolors="black", zorder=3,
                       label=f"{name} (reference, not checked)")  # fmt: skip
    for name, colour in zip(under_test, ("red", "purple", "magenta", "brown"), strict=False):
        if name in points:
            v, r = points[name]
            ax.scatter([r], [v], marker="*", s=220, color=colour, edgecolors="black", zorder=4, label=name)
    ax.scatter([], [], s=22, color="tab:blue", label="hpa-<t> (hollow: +guard)")
    ax.scatter([], [], s=22, color="tab:green", label="oracle-reactive-<h> (hollow: +guard)")
    ax.set_xlabel("replica-seconds (sum over scenarios of the means over seeds)")
    ax.set_ylabel(f"SLO-violation {'seconds' if unit == 's' else 'minutes'} (log above {_LINEAR[unit]:g})")
    # Log above a few steps: a cheap high-target HPA misses 100x what the rest do and would
    # flatten every point that matters onto the axis; linear below, since zero misses happen.
    ax.set_yscale("symlog", linthresh=_LINEAR[unit])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def write_frontier_report(
    out_dir: str | Path,
    totals: Mapping[str, Mapping[str, Mapping[str, float]]],
    frontier: Mapping[str, Mapping[str, Mapping[str, Any]]],
    baselines: Iterable[str],
) -> list[Path]:
    """``frontier.md`` and ``frontier-<kind>.png`` per kind (and the total) in ``out_dir``."""

    out = Path(out_dir)
    names = list(baselines)
    under_test = list(frontier)
    _, unit = violation_key(totals)
    written = []
    for kind, points in kind_points(totals).items():
        path = out / f"frontier-{kind}.png"
        written.append(plot_frontier(path, points, under_test, names, title=kind, unit=unit))
    written.append(write_atomic(out / "frontier.md", frontier_markdown(frontier)))
    return written
