"""Timeline plots and tables shared by the demo, evaluation and chaos reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rlctl.errors import ConfigError

Array = npt.NDArray[np.float64]


def plot_timelines(
    path: str | Path,
    runs: Mapping[str, Mapping[str, Array]],
    *,
    slo_p99_ms: float,
    title: str = "",
    fault_windows: Sequence[tuple[float, float, str]] = (),
    time_unit: str = "h",
) -> Path:
    """One PNG with four stacked panels: load, P99 against the SLO, replicas, runtime knobs.

    ``runs`` maps a controller name to series keyed ``t_s``, ``offered_qps``, ``p99_ms``,
    ``replicas`` and optionally ``gomaxprocs``, ``gogc``. Fault windows are shaded. The time
    axis is in ``time_unit``: ``h`` (hours), ``min`` or ``s`` (for runs of a few minutes).
    """
    scale = {"h": 3600.0, "min": 60.0, "s": 1.0}[time_unit]
    label = {"h": "hours", "min": "minutes", "s": "seconds"}[time_unit]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    first = next(iter(runs.values()))
    t_h = first["t_s"] / scale
    axes[0].plot(t_h, first["offered_qps"], color="black", lw=0.8)
    axes[0].set_ylabel("offered req/s")
    for name, s in runs.items():
        th = s["t_s"] / scale
        axes[1].plot(th, np.maximum(s["p99_ms"], 1e-2), lw=0.8, label=name)
        axes[2].step(th, s["replicas"], where="post", lw=0.9, label=name)
        if "gomaxprocs" in s:
            axes[3].step(th, s["gomaxprocs"], where="post", lw=0.9, label=f"{name} GOMAXPROCS")
        if "gogc" in s:
            axes[3].step(th, np.log2(s["gogc"] / 100.0), where="post", lw=0.9, ls="--", label=f"{name} log2(GOGC/100)")
    axes[1].axhline(slo_p99_ms, color="red", ls="--", lw=1, label=f"SLO {slo_p99_ms:g} ms")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("P99 ms")
    axes[2].set_ylabel("replicas")
    axes[3].set_ylabel("runtime knobs")
    axes[3].set_xlabel(label)
    for ax in axes[1:]:
        ax.legend(loc="upper right", fontsize=7)
    for start, end, name in fault_windows:
        for ax in axes:
            ax.axvspan(start / scale, end / scale, color="orange", alpha=0.15)
        axes[0].text(start / scale, axes[0].get_ylim()[1] * 0.9, name, fontsize=7, color="darkorange")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def write_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, so a failure leaves no partial file.

    Missing parent folders are created; a path that cannot be written is a :class:`ConfigError`
    naming it (a user's ``--output``/``--json`` value), with the temporary file removed.
    """

    out = Path(path)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"{out}: cannot write ({exc.strerror or exc}); give a writable file path") from None
    return out
