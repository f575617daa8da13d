"""The sim chaos runs behind the rule library: random scenarios, random starting knobs, one report each.

    .venv/bin/python deploy/results/rules-2026-12-05/sim_runs.py OUT_DIR [--runs 24] [--seed 2026]

Each run is one `rlctl chaos run --backend sim` report (chaos.runner's run_experiment, build_report
and write_report, the code behind the command), with two controllers: `hpa` (the registry's) and
`fixed`, the starting knobs kept (policies.baselines.StaticController(knobs); the registry's sim
`static` sets GOMAXPROCS to the quota, Go's default). The command line has no option for the
simulator's starting knobs, so this script calls the runner directly with SimConfig(initial_knobs).
Scenario: a constant load and two faults drawn from six kinds with random intensities, 120 s apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from chaos.backends.sim import SimBackend, SimConfig
from chaos.runner import ControllerContext, build_report, run_experiment, write_report
from chaos.spec import scenario_from_dict
from policies.baselines import StaticController
from rlctl.contract import GOGC_LADDER, Knobs

KINDS = ("cpu-stress", "network-loss", "network-partition", "memory-stress", "pod-kill", "network-delay")


def fault(kind: str, rng: np.random.Generator, start: float) -> dict:
    params = {
        "cpu-stress": lambda: {"workers": int(rng.integers(1, 3)), "load_percent": int(rng.choice([50, 80, 100]))},
        "network-loss": lambda: {"loss_percent": float(rng.choice([0.5, 1, 2, 5]))},
        "network-partition": lambda: {"fraction": float(rng.choice([0.005, 0.02, 0.1, 0.5]))},
        "memory-stress": lambda: {"workers": int(rng.integers(1, 4)), "size_mib": 256},
        "pod-kill": lambda: {"restart_delay_s": float(rng.choice([10, 30, 60])), "grace_period_s": 0},
        "network-delay": lambda: {"latency_ms": float(rng.choice([1, 2, 5, 20])), "jitter_ms": 1},
    }[kind]()
    return {"kind": kind, "start_s": start, "duration_s": 60, "params": params}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--runs", type=int, default=24)
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    for i in range(args.runs):
        kinds = rng.choice(KINDS, size=2, replace=False)
        qps = float(rng.choice([200, 400, 800]))
        scenario = scenario_from_dict({
            "name": f"rules-sim-{i:02d}", "kind": "fault", "duration_s": 300, "slo_p99_ms": 8,
            "description": f"constant {qps:g} QPS; {kinds[0]} at 60 s, {kinds[1]} at 180 s",
            "load": {"kind": "constant", "qps": qps},
            "faults": [fault(str(kinds[0]), rng, 60.0), fault(str(kinds[1]), rng, 180.0)],
        })  # fmt: skip
        knobs = Knobs(replicas=int(rng.integers(1, 5)), gomaxprocs=int(rng.choice([1, 2, 4, 8])),
                      gogc=int(rng.choice(GOGC_LADDER[1:5])))  # fmt: skip
        seed = int(rng.integers(0, 2**31))
        backend = SimBackend(SimConfig(seed=seed, initial_knobs=knobs))
        ctx = ControllerContext("sim", scenario, initial_knobs=knobs, seed=seed)
        run_id = f"rules-sim-{i:02d}"
        records, facts = run_experiment(scenario, backend, ["hpa"], run_id=run_id, context=ctx)
        fixed = backend.run(scenario, StaticController(knobs, name="fixed"), run_id=run_id)
        facts["fixed"] = {"knobs": knobs.to_dict()}
        report = build_report(scenario, [*records, fixed], backend="sim", run_id=run_id, facts=facts)
        report["scenario"]["initial_knobs"] = knobs.to_dict()
        write_report(report, None, args.out / run_id / "report.json")
        print(run_id, qps, *kinds, knobs.replicas, knobs.gomaxprocs, knobs.gogc, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
