"""Live telemetry: Prometheus scrapes of a Go service and host sensors.

- :mod:`rlctl.telemetry.scrape` turns two ``/metrics`` scrapes into one
  :class:`rlctl.contract.TelemetrySample` (rates from counter deltas, quantiles from
  histogram bucket deltas).
- :mod:`rlctl.telemetry.sensors` reads the host: topology and NUMA from ``/sys``,
  temperatures from thermal zones, hwmon and IPMI, turbo and prefetcher state from MSRs.

Nothing here makes a number up: a field that cannot be read is NaN (scrapes) or a
:class:`~rlctl.telemetry.sensors.Reading` with the reason it is unavailable (sensors).
"""

from rlctl.telemetry.scrape import MetricsSnapshot, Scraper, compute_sample, fetch_metrics, parse_metrics
from rlctl.telemetry.sensors import Reading

__all__ = ["MetricsSnapshot", "Reading", "Scraper", "compute_sample", "fetch_metrics", "parse_metrics"]
