"""Actuators: where the controller's knob changes land.

=========================  ===============================  ==========================================
knob(s)                    actuator                         mechanism
=========================  ===============================  ==========================================
gomaxprocs, gogc,          :class:`AdminKnobsActuator`      ``PUT /admin/knobs`` on the Go service
gomemlimit_mib, pools                                       (bearer token), to every ready replica (fanout)
replicas                   :class:`K8sScaleActuator`        the Deployment's ``scale`` subresource
replicas                   :class:`ProcessReplicaActuator`  local ``gosvc serve`` processes
prefetch, turbo            :class:`MsrActuator`             MSR writes, only with ``allow_writes``
=========================  ===============================  ==========================================

:class:`Actuators` puts them behind one ``apply(current, target)`` call that reports, per
actuator, what happened; a failing actuator raises nothing into the control loop, it is
reported (and counted) and its knobs keep their values.

The admin API's client, its token, and the contract-to-admin field mapping (GOMEMLIMIT in
MiB against bytes) are the test-bed harness's: :mod:`rlctl.harness.admin`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from rlctl.contract import KNOB_COL, KNOB_FIELDS
from rlctl.errors import ActuatorError, ConfigError
from rlctl.harness.admin import MIB as MIB
from rlctl.harness.admin import RUNTIME_KNOBS as RUNTIME_KNOBS
from rlctl.harness.admin import TOKEN_ENV as TOKEN_ENV
from rlctl.harness.admin import from_admin as from_admin
from rlctl.harness.admin import knobs_url, read_token, to_admin
from rlctl.k8s_scale import DeploymentScaler, kube_api_client
from rlctl.online.fanout import Endpoint, EndpointSource, KnobFanout, ReplicaResult, endpoint_name, static_endpoints
from rlctl.online.procs import GoService, gosvc_binary
from rlctl.telemetry import sensors

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

MSR_KNOBS: tuple[str, ...] = ("prefetch", "turbo")


class AdminKnobsActuator:
    """GOMAXPROCS, GOGC, GOMEMLIMIT and the pool sizes through the service's ``/admin/knobs``, on every replica.

    The knobs go to every ready replica and stay there (:class:`rlctl.online.fanout.KnobFanout`):
    :meth:`put` sends them to all at once, retrying each replica a few times, and
    :meth:`reconcile` (each control step) re-sends them to replicas that missed them or are
    new. :attr:`last_results` holds the per-replica results of the latest send, for the audit.

    :param urls: the ``/admin/knobs`` URL, a list of them (one per replica), or a callable
        returning the current list (replicas come and go); each is taken as ready.
    :param endpoints: instead of ``urls``: an endpoint source with readiness
        (:class:`rlctl.online.fanout.EndpointSliceSource`, :func:`rlctl.online.fanout.static_endpoints`).
    :param token: the bearer token (else read from ``token_file`` or ``$GOSVC_ADMIN_TOKEN``).
    :param timeout_s: per request, so a hung service cannot stall the control loop.
    :param attempts: tries per replica and send (refused connection, timeout, 5xx).
    :param backoff_s: wait before the second try, doubling after.
    :param budget_s: a send ends within about this long (default ``attempts * timeout_s``).
    """

    knobs: tuple[str, ...] = RUNTIME_KNOBS

    def __init__(
        self,
        urls: str | Sequence[str] | Callable[[], Sequence[str]] | None = None,
        *,
        endpoints: EndpointSource | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout_s: float = 2.0,
        attempts: int = 3,
        backoff_s: float = 0.1,
        budget_s: float | None = None,
    ) -> None:
        if (urls is None) == (endpoints is None):
            raise ConfigError("AdminKnobsActuator: pass the replicas' admin URLs or an endpoint source (one of them)")
        if endpoints is None:
            if isinstance(urls, str):
                endpoints = static_endpoints([urls])
            elif callable(urls):
                listed = urls
                endpoints = lambda: [Endpoint(endpoint_name(u), knobs_url(u)) for u in listed()]  # noqa: E731
            else:
                endpoints = static_endpoints(list(urls or []))
        self.token = token if token is not None else read_token(token_file)
        self.timeout_s = timeout_s
        self.fanout = KnobFanout(endpoints, token=self.token, timeout_s=timeout_s, attempts=attempts,
                                 backoff_s=backoff_s, budget_s=budget_s)  # fmt: skip
        self.last_results: dict[str, ReplicaResult] = {}

    @property
    def urls(self) -> list[str]:
        """The ready replicas' ``/admin/knobs`` URLs now."""
        return [e.url for e in self.fanout.endpoints() if e.ready]

    def get(self) -> dict[str, int]:
        """The current runtime knobs (of the first ready replica that answers), by contract name."""
        return self.fanout.get()

    def put(self, knobs: Mapping[str, Any]) -> dict[str, int]:
        """Set ``knobs`` (contract names) on every ready replica; returns what the first one reports.

        Raises :class:`ActuatorError` when a ready replica missed them (after its retries) or
        none is ready; :attr:`last_results` has every replica's result either way.
        """
        self.last_results = {}
        results = self.fanout.put(knobs)
        self.last_results = results
        missed = [r for r in results.values() if r.outcome == "missed"]
        applied = [r for r in results.values() if r.outcome == "applied"]
        if not applied and not missed:
            raise ActuatorError(f"no ready replica to set {to_admin(knobs)} on: the service has no running replica")
        if missed:
            raise ActuatorError(
                f"{len(missed)} of {len(missed) + len(applied)} ready replica(s) missed {to_admin(knobs)}: "
                + "; ".join(f"{r.endpoint}: {r.detail}" for r in missed)
            )
        return dict(applied[0].reported or {})

    def reconcile(self) -> dict[str, ReplicaResult]:
        """Re-send the knobs to each ready replica that lacks them (missed a change, new, back)."""
        self.last_results = self.fanout.reconcile()
        return self.last_results


def replica_entries(results: Mapping[str, ReplicaResult]) -> dict[str, str]:
    """Per-replica results as audit entries: ``admin@<replica>`` -> ``ok: ...`` / ``missed: ...`` / ``skipped: ...``."""
    return {f"admin@{name}": r.text() for name, r in sorted(results.items())}


@runtime_checkable
class ReplicaActuator(Protocol):
    """Anything that can read and set a service's replica count."""

    def get_replicas(self) -> int: ...

    def set_replicas(self, n: int) -> int: ...


class K8sScaleActuator:
    """Replicas of a Kubernetes Deployment through its ``scale`` subresource.

    :param api_client: a ``kubernetes.client.ApiClient`` (see :func:`rlctl.k8s_scale.kube_api_client`).
    :param deployment: ``NAMESPACE/NAME``.
    """

    def __init__(self, api_client: Any, deployment: str, *, request_timeout_s: float = 5.0) -> None:

        namespace, sep, name = deployment.partition("/")
        if not sep or not namespace or not name:
            raise ConfigError(f"--k8s-deployment {deployment!r}: expected NAMESPACE/NAME, e.g. default/gosvc")
        self.scaler = DeploymentScaler(api_client, namespace, name, request_timeout_s=request_timeout_s)

    @classmethod
    def from_kubeconfig(
        cls, deployment: str, *, kubeconfig: str | Path | None = None, context: str | None = None
    ) -> K8sScaleActuator:

        return cls(kube_api_client(kubeconfig, context), deployment)

    def __repr__(self) -> str:
        return f"K8sScaleActuator({self.scaler.namespace}/{self.scaler.name})"

    def get_replicas(self) -> int:
        return self.scaler.get()

    def set_replicas(self, n: int) -> int:
        return self.scaler.set(n)


class ProcessReplicaActuator:
    """Replicas as local ``gosvc serve`` processes on free loopback ports (no cgroups, no proxy).

    Scaling up starts processes with ``args`` (and the admin token file); scaling down stops
    the newest first with SIGTERM (gosvc drains in-flight requests). ``pre_stop`` is called
    with a replica before it is stopped, so whatever sends it load can move away first;
    ``on_change`` after every change. A replica that died on its own no longer counts.

    :param args: ``gosvc serve`` flags for every replica.
    :param token_file: the admin token file every replica is started with.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        token_file: str | Path | None = None,
        pre_stop: Callable[[Any], None] | None = None,
        on_change: Callable[[ProcessReplicaActuator], None] | None = None,
        start_timeout_s: float = 15.0,
    ) -> None:

        self.binary = gosvc_binary()  # the harness's one lookup (rlctl.harness.find_gosvc)
        self.args = list(args)
        self.token_file = token_file
        self.pre_stop = pre_stop
        self.on_change = on_change
        self.start_timeout_s = start_timeout_s
        self.replicas: list[Any] = []
        # The loop and a telemetry source read the replicas from different threads; a read
        # during a scale waits for it (a dead replica was dropped twice without this).
        self._lock = threading.RLock()

    def _alive(self) -> list[Any]:
        with self._lock:
            dead = [r for r in self.replicas if not r.alive()]
            for r in dead:
                log.warning("replica %s exited with %s; dropping it", r.info.get("addr"), r.proc.returncode)
                self.replicas.remove(r)
            return list(self.replicas)

    def get_replicas(self) -> int:
        return len(self._alive())

    def set_replicas(self, n: int) -> int:
        if n < 0:
            raise ActuatorError(f"replicas must be >= 0, not {n}")
        with self._lock:
            return self._set_replicas(n)

    def _set_replicas(self, n: int) -> int:
        self._alive()
        alive = self.replicas
        changed = False
        while len(alive) < n:
            try:
                alive.append(
                    GoService(self.args, token_file=self.token_file, binary=self.binary).start(self.start_timeout_s)
                )
            except Exception as exc:
                raise ActuatorError(f"starting replica {len(alive) + 1} of {n} failed: {exc}") from None
            changed = True
        while len(alive) > n:
            replica = alive[-1]
            if self.pre_stop is not None:
                self.pre_stop(replica)
            replica.stop()
            alive.pop()
            changed = True
        if changed and self.on_change is not None:
            self.on_change(self)
        return len(alive)

    def urls(self) -> list[str]:
        return [r.url for r in self._alive()]

    def metrics_urls(self) -> list[str]:
        return [r.metrics_url for r in self._alive()]

    def admin_urls(self) -> list[str]:
        return [r.admin_url for r in self._alive()]

    def close(self) -> None:
        with self._lock:
            for r in self.replicas:
                r.stop()
            self.replicas.clear()

    def __enter__(self) -> ProcessReplicaActuator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MsrActuator:
    """Turbo and the hardware prefetchers through model-specific registers.

    These writes change the whole host, so the actuator refuses to exist without
    ``allow_writes=True`` (the CLI's ``--allow-msr-writes``). Writes go through
    :func:`rlctl.telemetry.sensors.set_turbo` / :func:`~rlctl.telemetry.sensors.set_prefetchers`.
    """

    knobs: tuple[str, ...] = MSR_KNOBS

    def __init__(self, *, allow_writes: bool, dev_root: str | Path = "/dev/cpu", vendor: str | None = None) -> None:
        if not allow_writes:
            raise ConfigError(
                "refusing to actuate turbo/prefetch: MSR writes change hardware state for every process on the "
                "host; pass --allow-msr-writes (allow_msr_writes=True) to do it on purpose"
            )
        self.dev_root = dev_root
        self.vendor = vendor

    def get(self) -> dict[str, bool]:

        out: dict[str, bool] = {}
        for name, reading in (
            ("turbo", sensors.turbo_enabled(dev_root=self.dev_root, vendor=self.vendor)),
            ("prefetch", sensors.prefetch_enabled(dev_root=self.dev_root, vendor=self.vendor)),
        ):
            if reading.value is None:
                raise ActuatorError(f"cannot read {name}: {reading.unavailable}")
            out[name] = reading.value >= 0.5
        return out

    def set(self, name: str, on: bool) -> None:

        if name == "turbo":
            sensors.set_turbo(on, allow_writes=True, dev_root=self.dev_root, vendor=self.vendor)
        elif name == "prefetch":
            sensors.set_prefetchers(on, allow_writes=True, dev_root=self.dev_root, vendor=self.vendor)
        else:
            raise ActuatorError(f"the MSR actuator sets {list(MSR_KNOBS)}, not {name!r}")


class Actuators:
    """Every actuator of one service behind :meth:`read` and :meth:`apply`.

    Knobs without an actuator cannot move; :meth:`controllable` lists the ones that can, so
    the control loop can keep the rest out of the safety layer's ``allow``.
    """

    def __init__(
        self,
        *,
        admin: AdminKnobsActuator | None = None,
        replicas: ReplicaActuator | None = None,
        msr: MsrActuator | None = None,
    ) -> None:
        self.admin = admin
        self.replicas = replicas
        self.msr = msr

    def controllable(self) -> tuple[str, ...]:
        names: list[str] = []
        if self.replicas is not None:
            names.append("replicas")
        if self.admin is not None:
            names += RUNTIME_KNOBS
        if self.msr is not None:
            names += MSR_KNOBS
        return tuple(n for n in KNOB_FIELDS if n in names)

    def read(self, known: npt.ArrayLike) -> tuple[FloatArray, dict[str, str]]:
        """The knobs in effect now; knobs that cannot be read keep their value in ``known``.

        Returns the knob row and, per actuator that failed, why.
        """
        out = np.array(known, dtype=np.float64).reshape(len(KNOB_FIELDS))
        errors: dict[str, str] = {}
        if self.replicas is not None:
            try:
                out[KNOB_COL["replicas"]] = self.replicas.get_replicas()
            except ActuatorError as exc:
                errors["replicas"] = str(exc)
        if self.admin is not None:
            try:
                for name, value in self.admin.get().items():
                    out[KNOB_COL[name]] = value
            except ActuatorError as exc:
                errors["admin"] = str(exc)
        if self.msr is not None:
            try:
                for name, on in self.msr.get().items():
                    out[KNOB_COL[name]] = 1.0 if on else 0.0
            except (ActuatorError, ConfigError) as exc:
                errors["msr"] = str(exc)
        return out, errors

    def reconcile(self) -> dict[str, str]:
        """Runtime knobs onto every ready replica that lacks them; per replica touched, what happened.

        Call once per control step (not in a dry run, not under the kill switch): a replica that
        missed a change, or became ready since, gets the knobs the controller last set.
        """
        if self.admin is None:
            return {}
        try:
            return replica_entries(self.admin.reconcile())
        except (ActuatorError, ConfigError) as exc:
            return {"admin-reconcile": f"error: {exc}"}

    def apply(self, current: npt.ArrayLike, target: npt.ArrayLike) -> tuple[FloatArray, dict[str, str]]:
        """Move from ``current`` to ``target``; returns the knobs now in effect and each actuator's result.

        Results are ``ok: ...`` or ``error: ...`` per actuator touched (nothing to change: empty).
        """
        cur = np.asarray(current, dtype=np.float64).reshape(len(KNOB_FIELDS))
        tgt = np.asarray(target, dtype=np.float64).reshape(len(KNOB_FIELDS))
        now = cur.copy()
        results: dict[str, str] = {}
        changed = {n for n in KNOB_FIELDS if math.isfinite(tgt[KNOB_COL[n]]) and tgt[KNOB_COL[n]] != cur[KNOB_COL[n]]}
        scaled_up = False
        if "replicas" in changed:
            col = KNOB_COL["replicas"]
            if self.replicas is None:
                results["replicas"] = "error: no replica actuator configured"
            else:
                try:
                    got = self.replicas.set_replicas(int(tgt[col]))
                    results["replicas"] = f"ok: {int(cur[col])} -> {got}"
                    scaled_up = got > cur[col]
                    now[col] = got
                except (ActuatorError, ConfigError) as exc:
                    results["replicas"] = f"error: {exc}"
        runtime = [n for n in RUNTIME_KNOBS if n in changed]
        # New replicas start with their flags' knobs: give them the current settings too.
        if scaled_up and isinstance(self.replicas, ProcessReplicaActuator):
            runtime = list(RUNTIME_KNOBS)
        if runtime:
            if self.admin is None:
                results["admin"] = "error: no admin actuator configured"
            else:
                body = {n: int(tgt[KNOB_COL[n]]) if n in changed else int(cur[KNOB_COL[n]]) for n in runtime}
                try:
                    self.admin.put(body)
                    results["admin"] = "ok: " + ", ".join(f"{k}={v}" for k, v in body.items())
                    for n in runtime:
                        now[KNOB_COL[n]] = body[n]
                except (ActuatorError, ConfigError) as exc:
                    results["admin"] = f"error: {exc}"
                results.update(replica_entries(self.admin.last_results))
        for name in MSR_KNOBS:
            if name not in changed:
                continue
            if self.msr is None:
                results[name] = "error: MSR writes are not enabled (--allow-msr-writes)"
                continue
            on = bool(tgt[KNOB_COL[name]] >= 0.5)
            try:
                self.msr.set(name, on)
                results[name] = f"ok: {'on' if on else 'off'}"
                now[KNOB_COL[name]] = 1.0 if on else 0.0
            except (ActuatorError, ConfigError) as exc:
                results[name] = f"error: {exc}"
        return now, results


class ReadOnlyActuators(Actuators):
    """The actuators of a controller in ``advise`` or ``shadow`` mode: they read, and never write.

    The loop does not call :meth:`apply` outside ``act`` mode; this class makes sure that even a
    bug there cannot put a second writer on the Deployment: reads (the scale subresource's
    ``get``, ``/admin/knobs`` GET) go through, every write is refused and reported as an error.
    """

    def __init__(self, inner: Actuators, *, mode: str) -> None:
        super().__init__(admin=inner.admin, replicas=inner.replicas, msr=inner.msr)
        self.mode = mode

    def apply(self, current: npt.ArrayLike, target: npt.ArrayLike) -> tuple[FloatArray, dict[str, str]]:
        now = np.asarray(current, dtype=np.float64).reshape(len(KNOB_FIELDS)).copy()
        return now, {"all": f"error: refused: a controller in {self.mode} mode writes nothing"}

    def reconcile(self) -> dict[str, str]:
        """Re-sending the knobs to replicas that missed them is a write too: none."""
        return {}
