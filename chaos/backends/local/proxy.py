"""The fault proxy of the local backend: ``gosvc proxy`` and a client for its admin API.

The proxy sits between the load generator and the replicas. It balances requests
round-robin over the replicas (the replica manager registers and removes them), probes
their ``/healthz`` and takes failing ones out of rotation (a readiness probe), and injects
the scenario's network faults per request:

==================  =================================  =================================
fault kind          admin call                         effect
==================  =================================  =================================
network-delay       ``PUT /faults/delay``              latency ± jitter (correlated)
network-loss        ``PUT /faults/loss``               ``drop``: no answer until the client
                                                       times out; ``reset``: TCP RST
network-partition   ``PUT /faults/partition``          ``blackhole`` or ``refuse`` a fraction
network-bandwidth   ``PUT /faults/bandwidth``          token bucket on response bytes
==================  =================================  =================================

The proxy applies a fault to all traffic, whatever the fault's selector says.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from rlctl.errors import ChaosError
from rlctl.harness.journal import Journal
from rlctl.harness.process import Managed, read_json_line, spawn

log = logging.getLogger(__name__)


class FaultProxy:
    """A running ``gosvc proxy``. :meth:`start` it; every admin call raises :class:`ChaosError` on failure."""

    def __init__(
        self,
        gosvc: str,
        journal: Journal,
        *,
        seed: int = 1,
        health_interval_s: float = 1.0,
        health_fails: int = 2,
        hold_s: float = 30.0,
        log_path: Path | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.gosvc = gosvc
        self.journal = journal
        self.seed = seed
        self.health_interval_s = health_interval_s
        self.health_fails = health_fails
        self.hold_s = hold_s
        self.log_path = log_path
        self.timeout_s = timeout_s
        self.proc: Managed | None = None
        self.url = ""
        self.admin_url = ""

    def start(self, upstreams: list[str] | None = None) -> FaultProxy:
        argv = [
            self.gosvc, "proxy", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
            "--upstream", ",".join(upstreams or []), "--seed", str(self.seed),
            "--health-interval", f"{self.health_interval_s:g}s", "--health-fails", str(self.health_fails),
            "--hold", f"{self.hold_s:g}s",
        ]  # fmt: skip
        stderr = self.log_path.open("a") if self.log_path else None
        import subprocess

        try:
            self.proc = spawn(
                self.journal, "proxy", argv, stdout=subprocess.PIPE,
                stderr=stderr if stderr is not None else subprocess.DEVNULL,
            )  # fmt: skip
        finally:
            if stderr is not None:
                stderr.close()
        info = read_json_line(self.proc, timeout_s=10.0, what="gosvc proxy", log_path=self.log_path)
        self.url = f"http://{info['addr']}"
        self.admin_url = f"http://{info['admin_addr']}"
        log.info("fault proxy on %s (admin %s)", self.url, self.admin_url)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(grace_s=2.0)
            self.proc = None

    # ------------------------------------------------------------------ admin API

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None, ok: tuple[int, ...] = (200,)) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.admin_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            payload = exc.read().decode(errors="replace")
            if exc.code in ok:
                return json.loads(payload or "null")
            raise ChaosError(f"fault proxy: {method} {path} answered {exc.code}: {payload.strip()}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ChaosError(
                f"fault proxy admin API at {self.admin_url} unreachable ({getattr(exc, 'reason', exc)}); "
                "did the proxy die? See its log"
            ) from None

    def set_fault(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        """Activate one of ``delay``, ``loss``, ``partition``, ``bandwidth``; returns the active set."""
        result: dict[str, Any] = self._call("PUT", f"/faults/{kind}", params)
        return result

    def clear_fault(self, kind: str | None = None) -> dict[str, Any]:
        """Turn one fault kind off, or all of them."""
        result: dict[str, Any] = self._call("DELETE", f"/faults/{kind}" if kind else "/faults")
        return result

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/faults")
        return result

    def set_upstreams(self, urls: list[str]) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("PUT", "/upstreams", {"upstreams": urls})["upstreams"]
        return result

    def add_upstream(self, url: str) -> None:
        self._call("POST", "/upstreams", {"url": url})

    def remove_upstream(self, url: str) -> None:
        self._call("DELETE", "/upstreams?" + urllib.parse.urlencode({"url": url}), ok=(200, 404))

    def upstreams(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/upstreams")["upstreams"]
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/stats")
        return result
