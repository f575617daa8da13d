"""Telemetry sources for the control loop: one ``/metrics`` URL, or every replica of a local service.

A source is a callable returning one :class:`~rlctl.contract.TelemetrySample` per call (or
raising :class:`~rlctl.errors.TelemetryError`). :class:`rlctl.telemetry.scrape.Scraper` is
one; :class:`ReplicaSetScraper` merges the scrapes of many replicas into one sample of the
whole service, exactly: every replica's series get a ``replica`` label and
:func:`rlctl.telemetry.scrape.compute_sample` sums counters and histogram buckets across
them, so the service's P99 is the quantile of all its requests (not an average of
per-replica quantiles). Runtime knobs are read from one replica (they are set on all).
"""

from __future__ import annotations

import dataclasses
import math
import socket
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

from rlctl.contract import TelemetrySample
from rlctl.errors import TelemetryError
from rlctl.telemetry.scrape import MetricsSnapshot, compute_sample, fetch_metrics, parse_metrics

#: Gauges that describe one replica's settings: summing them over replicas would be wrong.
_PER_REPLICA = ("gomaxprocs", "gogc", "gomemlimit_bytes", "object_pool_size", "conn_pool_size")


def each_address(url: str) -> Callable[[], list[str]]:
    """A callable returning ``url`` once per address its host resolves to now.

    For a Kubernetes headless Service (``gosvc-admin``, ``clusterIP: None``) that is one URL
    per ready pod, so every replica is scraped and every replica gets the runtime knobs.
    Resolved again on every call: pods come and go. An unresolvable host gives an empty list.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)

    def urls() -> list[str]:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError:
            return []
        addresses = sorted({str(info[4][0]) for info in infos})
        return [urlunsplit(parts._replace(netloc=f"[{a}]:{port}" if ":" in a else f"{a}:{port}")) for a in addresses]

    return urls


class ReplicaSetScraper:
    """Scrapes every replica's ``/metrics`` and returns one sample for the service.

    :param urls: returns the replicas' ``/metrics`` URLs now (replicas come and go).
    :param service: written into every sample.
    :param min_fraction: the scrape fails when fewer than this fraction of replicas answer.
    """

    def __init__(
        self,
        urls: Callable[[], Sequence[str]],
        *,
        service: str = "default",
        timeout_s: float = 2.0,
        min_fraction: float = 0.5,
    ) -> None:
        self.urls = urls
        self.service = service
        self.timeout_s = timeout_s
        self.min_fraction = min_fraction
        self.previous: MetricsSnapshot | None = None

    def snapshot(self) -> tuple[MetricsSnapshot, MetricsSnapshot, int]:
        """A merged snapshot of all replicas, the first replica's own, and how many answered."""
        urls = list(self.urls())
        if not urls:
            raise TelemetryError(f"service {self.service}: no replica to scrape")
        snaps: list[MetricsSnapshot] = []
        errors: list[str] = []
        for url in urls:
            try:
                snaps.append(parse_metrics(fetch_metrics(url, timeout_s=self.timeout_s), url=url))
            except TelemetryError as exc:
                errors.append(str(exc))
        if not snaps or len(snaps) < math.ceil(self.min_fraction * len(urls)):
            raise TelemetryError(f"service {self.service}: {len(errors)} of {len(urls)} replicas failed: " +
                                 "; ".join(errors))  # fmt: skip
        samples: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
        for snap in snaps:
            tag = ("replica", snap.url)
            for name, series in snap.samples.items():
                merged = samples.setdefault(name, {})
                for labels, value in series.items():
                    merged[frozenset((*labels, tag))] = value
        merged_snap = MetricsSnapshot(url=",".join(urls), time_s=time.time(), monotonic_s=time.monotonic(),
                                      samples=samples)  # fmt: skip
        return merged_snap, snaps[0], len(snaps)

    def scrape(self) -> TelemetrySample:
        merged, first, n = self.snapshot()
        sample = compute_sample(self.previous, merged, service=self.service, replicas=float(n))
        one = compute_sample(None, first, service=self.service)
        self.previous = merged
        return dataclasses.replace(sample, **{name: getattr(one, name) for name in _PER_REPLICA})

    __call__ = scrape
