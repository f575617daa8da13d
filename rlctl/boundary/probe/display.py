"""The probe's output for people: the P99-against-load plot and the live Rich table of the ramp.
Part of :mod:`rlctl.boundary.probe`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlctl.boundary.probe.steps import ProbeState


def plot_report(report: dict[str, Any], path: str | Path) -> Path:
    """P99 against load with the knees, the SLO and the stop point, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = report["curve"]
    qps = [p["qps"] for p in curve]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(qps, [p["p99_ms"] for p in curve], "o-", label="P99 (client, incl. queueing)")
    ax.plot(qps, [p["server_p99_ms"] for p in curve], "x--", alpha=0.7, label="P99 (server histogram)")
    ax.plot(qps, [p["p50_ms"] for p in curve], ".-", alpha=0.6, label="P50 (client)")
    ax.axhline(report["slo_p99_ms"], color="grey", ls=":", label=f"SLO {report['slo_p99_ms']:g} ms")
    methods = report.get("knee_methods") or ["kneedle", "two_segment_least_squares"]
    marks = [
        ("knee_qps", f"knee ({methods[0]})", "red"),
        ("knee_qps_second_method", f"cross-check ({methods[1]})", "orange"),
        ("max_qps_at_slo", "max QPS at SLO", "green"),
        ("stopped_at_qps", "ramp stopped", "black"),
    ]
    for key, label, color in marks:
        if report.get(key) is not None:
            ax.axvline(report[key], color=color, ls="--", lw=1, label=f"{label} {report[key]:.0f}")
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"rlctl probe {report['url']}")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


class ProbeDisplay:
    """A Rich live table of the ramp on stderr; use as a context manager and callback."""

    def __init__(self, rows: int = 14) -> None:
        from rich.console import Console
        from rich.live import Live

        self.rows = rows
        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> ProbeDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def __call__(self, state: ProbeState) -> None:
        self.live.update(self.render(state))

    def render(self, state: ProbeState) -> Any:
        from rich.table import Table

        table = Table(title=f"rlctl probe {state.config.url} — {state.status}", title_justify="left")
        for col in ("step", "target", "offered", "p50 ms", "p99 ms", "srv p99", "gor", "MB/s", "GC", "thr",
                    "signals"):  # fmt: skip
            table.add_column(col, justify="right" if col != "signals" else "left")
        for s in state.steps[-self.rows :]:
            table.add_row(
                str(s.index),
                f"{s.target_qps:.0f}",
                f"{s.offered_qps:.0f}",
                _fmt(s.p50_ms, ".2f"),
                _fmt(s.p99_ms, ".2f"),
                _fmt(s.server_p99_ms, ".2f"),
                _fmt(s.goroutines, ".0f"),
                _fmt(s.alloc_bytes_per_s / 1e6, ".1f"),
                _fmt(s.gc_cpu_fraction * 100, ".1f") + "%",
                _fmt(s.cfs_throttled_fraction * 100, ".0f") + "%",
                " ".join(_SHORT.get(name, name) for name in s.fired) or "-",
                style="bold red" if state.event and s is state.steps[-1] else None,
            )
        line = state.last_line
        if line and state.status == "ramping":
            table.caption = (
                f"now: target {state.current_target:.0f} qps, p99 {line.get('p99_ms', math.nan):.2f} ms, "
                f"in flight {line.get('inflight', '?')}"
            )
        return table


#: Signal names as the live table shows them.
_SHORT = {"p99_rise": "P99x4", "p99_mad": "P99-MAD", "alloc_rate": "alloc", "goroutines": "gorout"}


def _fmt(v: float, spec: str) -> str:
    return format(v, spec) if math.isfinite(v) else "n/a"
