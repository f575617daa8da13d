"""The probe's two feeds: ``gosvc loadgen`` as a child process whose JSON lines arrive on a queue
(started through :mod:`rlctl.harness`), and the ``/metrics`` scraper on its own thread. Part of
:mod:`rlctl.boundary.probe`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from rlctl.boundary.probe.config import ProbeConfig
from rlctl.errors import TelemetryError
from rlctl.harness.process import spawn
from rlctl.telemetry.scrape import MetricsSnapshot, Scraper

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ loadgen


class _LoadgenProcess:
    """``gosvc loadgen`` as a child process whose JSON lines arrive on a queue."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - lives as long as the process
        self._managed = spawn(None, "loadgen", argv, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=1,
                              command="probe")  # fmt: skip
        self.proc = self._managed.proc
        self.stderr_final = ""
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, name="loadgen-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            raw = raw.strip()
            if not raw:
                continue
            try:
                self.lines.put(json.loads(raw))
            except json.JSONDecodeError:
                logger.warning("loadgen printed a non-JSON line: %s", raw[:200])
        self.lines.put(None)

    def next_line(self, timeout_s: float) -> dict[str, Any] | None:
        """The next JSON line, or None at EOF; TelemetryError if nothing comes in time."""
        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TelemetryError(
                f"load generator {self.argv[0]} printed nothing for {timeout_s:g}s; stderr: {self.stderr_tail()}"
            ) from None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stderr_tail(self, n: int = 3) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().strip().splitlines()
        return " | ".join(lines[-n:]) or "(empty)"

    def close(self, grace_s: float) -> int | None:
        """Stop the process (SIGTERM, then SIGKILL after ``grace_s``) and return its exit code."""
        self.stop()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=grace_s)
        self._managed.stop(grace_s=0.0)  # SIGKILL if it is still running; forget its journal entry
        self._reader.join(timeout=2)
        self.stderr_final = self.stderr_tail()
        self._stderr.close()
        return self.proc.returncode


def loadgen_argv(config: ProbeConfig) -> list[str]:
    return [
        config.loadgen,
        "loadgen",
        "--url",
        config.url,
        "--ramp",
        str(config.ramp),
        "--max-rate",
        f"{config.max_qps:g}",
        "--interval",
        f"{config.interval_s:g}s",
        "--timeout",
        f"{config.request_timeout_s:g}s",
    ]


class _BackgroundScraper:
    """Scrapes ``/metrics`` every interval on its own thread.

    A saturated service answers ``/metrics`` late (its handler queues behind the load), so
    scraping inline would hold up the load generator's lines and delay the stop decision.
    The probe takes the newest snapshot when a line arrives instead.
    """

    def __init__(self, scraper: Scraper, interval_s: float, max_failures: int) -> None:
        self.scraper, self.interval_s, self.max_failures = scraper, interval_s, max_failures
        self._lock = threading.Lock()
        self._latest: MetricsSnapshot | None = None
        self._taken: MetricsSnapshot | None = None
        self.failures = 0
        self.last_error: TelemetryError | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                snap = self.scraper.snapshot()
            except TelemetryError as exc:
                with self._lock:
                    self.failures += 1
                    self.last_error = exc
                logger.warning("scrape failed (%d in a row): %s", self.failures, exc)
            else:
                with self._lock:
                    self._latest, self.failures = snap, 0
            next_at = max(next_at + self.interval_s, time.monotonic())
            self._stop.wait(next_at - time.monotonic())

    def take(self) -> MetricsSnapshot | None:
        """The newest snapshot not taken before (None if there is none new)."""
        with self._lock:
            if self.failures >= self.max_failures:
                raise TelemetryError(
                    f"{self.last_error}; {self.failures} scrapes in a row failed, so the probe stopped. "
                    "Is the service still running?"
                )
            if self._latest is self._taken:
                return None
            self._taken = self._latest
            return self._latest

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.scraper.timeout_s + 1.0)


def _lines(proc: _LoadgenProcess, config: ProbeConfig) -> Iterator[dict[str, Any]]:
    # Silence is allowed for a few intervals plus the request timeout (drain after SIGTERM).
    patience = 5 * config.interval_s + config.request_timeout_s + 5.0
    while True:
        line = proc.next_line(patience)
        if line is None:
            return
        yield line
