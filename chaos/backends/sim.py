"""The sim backend: a scenario run in the simulator, where the environment applies the faults.

The run is :func:`policies.evaluate.rollout` of one (scenario, seed) pair — the very rollout
``rlctl eval`` makes, so both score the same run with :mod:`rlctl.scoring`. The controller is
wrapped so that every telemetry sample it was shown is recorded; with the rollout's knob
changes that gives the same :class:`~chaos.record.RunRecord` the live backends produce
(boundary events are then found in that telemetry exactly as for a live run).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from chaos.record import RunRecord, fault_label
from chaos.spec import Scenario
from envs.profile import ServiceProfile
from envs.sim import EnvConfig
from policies.base import Controller, FloatArray
from policies.oracle import (
    OracleController,
    ReactiveOracle,
    capacity_user,
    measure_capacity,
    oracle_extra,
    planned_extra,
    prepare_oracle,
)
from policies.rollout import rollout
from rlctl.contract import COL, KnobBounds, Knobs, TelemetrySample
from rlctl.errors import ConfigError


@dataclass(frozen=True)
class SimConfig:
    """How the sim backend runs a scenario."""

    seed: int = 0
    dt_s: float = 5.0
    """Simulator step: one telemetry sample and one decision per step."""
    bounds: KnobBounds = field(default_factory=KnobBounds)
    profile: ServiceProfile = field(default_factory=ServiceProfile)
    initial_knobs: Knobs | None = None
    """Knobs at the start (default: the environment's)."""


class _Recorder(Controller):
    """Passes decisions through to ``inner`` and records the telemetry it saw."""

    def __init__(self, inner: Controller) -> None:
        self.inner = inner
        self.name = inner.name
        self.rows: list[np.ndarray] = []
        self.batch: Any = None

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        self.inner.reset(n, bounds, interval_s)
        self._step = 0

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        if self._step > 0:  # the window's newest row is the previous step's telemetry
            self.rows.append(windows[0, -1].copy())
        self._step += 1
        return self.inner.decide(windows, knobs)


class SimBackend:
    """Runs scenarios in :class:`envs.sim.ServiceBatch` (one row)."""

    name = "sim"

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()

    def env_config(self, scenario: Scenario) -> EnvConfig:
        cfg = EnvConfig(
            dt_s=self.config.dt_s,
            episode_s=scenario.duration_s,
            slo_p99_ms=scenario.slo_p99_ms,
            bounds=self.config.bounds,
        )
        if self.config.initial_knobs is not None:
            cfg = dataclasses.replace(cfg, initial_knobs=self.config.initial_knobs)
        return cfg

    def check(self, scenario: Scenario) -> None:
        if scenario.duration_s < self.config.dt_s:
            raise ConfigError(
                f"scenario {scenario.name!r} lasts {scenario.duration_s:g}s, less than one simulator step "
                f"({self.config.dt_s:g}s); lengthen it"
            )

    def plan(self, scenario: Scenario) -> list[str]:
        self.check(scenario)
        cfg = self.env_config(scenario)
        lines = [f"simulate {cfg.n_steps} steps of {cfg.dt_s:g}s, seed {self.config.seed}"]
        lines += [f"{w.start_s:g}s-{w.end_s:g}s {w.kind.value}: applied by the simulator" for w in scenario.windows()]
        return lines

    def run(self, scenario: Scenario, controller: Controller, *, run_id: str = "") -> RunRecord:
        """One rollout of ``scenario`` under ``controller``."""
        self.check(scenario)
        cfg = self.env_config(scenario)
        rec = _Recorder(controller)

        # The oracle, or the reactive oracle alone or under the guard, plans as in rlctl eval.
        planner = controller if isinstance(controller, OracleController) else getattr(controller, "inner", None)

        def prepare(_ctrl: Controller, batch: Any) -> None:
            rec.batch = batch
            if isinstance(planner, OracleController):
                prepare_oracle(planner, batch)
            elif capacity_user(controller) is not None:  # the capacity rule, a residual policy
                measure_capacity(controller, batch)

        plan: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
        if isinstance(controller, OracleController) and not isinstance(controller, ReactiveOracle):
            # the clairvoyant oracle's plan, with the replicas its own misses call for
            extra = oracle_extra(controller, [scenario], [self.config.seed], cfg, self.config.profile)
            plan = planned_extra(controller, extra)
        with plan:
            (result,) = rollout(rec, [scenario], [self.config.seed], cfg, self.config.profile, prepare=prepare)
        rows = [*rec.rows, np.asarray(rec.batch.last[0], dtype=np.float64)]
        telemetry = [TelemetrySample.from_array(r, service=scenario.name) for r in rows]
        s = result.series
        n = len(s["t_s"])
        p50 = np.array([r[COL["p50_ms"]] for r in rows[-n:]])
        series = {
            "t_s": s["t_s"],
            "dt_s": np.full(n, cfg.dt_s),
            "offered_qps": s["offered_qps"],
            "p50_ms": p50,
            "p99_ms": s["p99_ms"],
            "error_rate": s["error_rate"],
            "replicas": s["replicas"],
            "gomaxprocs": s["gomaxprocs"],
            "gogc": s["gogc"],
        }
        injections = [
            {
                "fault": fault_label(w, i),
                "kind": w.kind.value,
                "planned_start_s": w.start_s,
                "planned_end_s": w.end_s,
                "injected_s": w.start_s,
                "reverted_s": w.end_s,
                "targets": ["simulated service"],
                "detail": "applied by the simulator's fault model",
                "error": None,
            }
            for i, w in enumerate(scenario.windows())
        ]
        return RunRecord(
            controller=controller.name,
            backend="sim",
            series={k: np.asarray(v, dtype=np.float64) for k, v in series.items()},
            interval_s=cfg.dt_s,
            telemetry=telemetry,
            actions=result.changes,
            injections=injections,
            extra={
                "seed": self.config.seed,
                "reward": result.reward,
                "core_seconds_used": result.scores["core_seconds"],
            },
        )
