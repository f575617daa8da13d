"""``rlctl probe``: ramp load against a live service until it crosses its boundary.

The probe runs ``gosvc loadgen`` (open loop, latency measured from each request's
intended send time, so queueing is included) with a stepped ramp, reads its one-JSON-
line-per-interval output, scrapes the service's ``/metrics`` after every interval, and
at the end of every ramp step feeds one aggregated :class:`TelemetrySample` to a
:class:`BoundaryDetector`. The first ``warmup_steps`` steps are the detector's baseline
(frozen after them; a warm-up step whose P99 is over twice the lowest warm-up P99 is
treated as interference from another tenant and replaced by a later step). When the
detector fires, the probe stops the load generator
(SIGTERM), so the service is driven past its knee by at most ``consecutive`` steps.
Then the knee of the measured P99-against-load curve is located (Kneedle and a
two-segment fit) and a JSON report is written.

Per-step aggregation: the client-side P50/P99 of a step is the median of its intervals'
P50/P99 (the load generator reports per-interval quantiles, not histograms, and on a
shared host one interval can catch another tenant's burst; a queue that is really
building up raises every interval from then on); server-side rates come from the
scrapes at the step's two ends; goroutines are the mean of the step's scrapes.

A scrape can fail at the boundary (``/metrics`` is served by the saturated process);
the probe records NaN for it and carries on, and gives up only after
``max_scrape_failures`` failures in a row. Scrapes run on their own thread every interval,
so a slow ``/metrics`` never delays the stop decision.

The package is split by concern: :mod:`~rlctl.boundary.probe.config` (ramp, settings, URLs),
:mod:`~rlctl.boundary.probe.steps` (per-step aggregation), :mod:`~rlctl.boundary.probe.loadgen`
(the load generator process and the scraper thread), :mod:`~rlctl.boundary.probe.run` (the ramp
driver and its stop rule), :mod:`~rlctl.boundary.probe.report` (the JSON report) and
:mod:`~rlctl.boundary.probe.display` (plot and live table). Every public name is re-exported here.
"""

from __future__ import annotations

from rlctl.boundary.probe.config import REPORT_SCHEMA, ProbeConfig, Ramp, resolve_loadgen, resolve_urls
from rlctl.boundary.probe.display import ProbeDisplay, plot_report
from rlctl.boundary.probe.loadgen import loadgen_argv
from rlctl.boundary.probe.report import build_report, write_report
from rlctl.boundary.probe.run import run_probe
from rlctl.boundary.probe.steps import ProbeState, StepResult
from rlctl.harness.process import REPO_GOSVC

__all__ = [
    "REPORT_SCHEMA",
    "REPO_GOSVC",
    "ProbeConfig",
    "ProbeDisplay",
    "ProbeState",
    "Ramp",
    "StepResult",
    "build_report",
    "loadgen_argv",
    "plot_report",
    "resolve_loadgen",
    "resolve_urls",
    "run_probe",
    "write_report",
]
