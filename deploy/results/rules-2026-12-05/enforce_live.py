"""A rule of the committed library enforced by the online loop under a real fault, on real gosvc replicas.

    .venv/bin/python deploy/results/rules-2026-12-05/enforce_live.py [--library L] [--json OUT]

Rule 8: "under cpu-stress (workers >= 2), with qps_per_replica >= 199.2, P99 leaves the SLO";
detector `cfs_throttled_fraction >= 0.1`. Two real `gosvc serve` replicas (ProcessReplicaActuator)
share one cgroup with a 0.1-core CPU quota (small, so a stress on a shared, loaded host still
throttles it); one loadgen per replica offers 250 QPS in all (rlctl.online.e2e.LoadSplitter);
the telemetry is the replicas' /metrics (ReplicaSetScraper); the loop is ControlLoop with the library
compiled by
rlctl.rules.load_safety_rules (what `rlctl control --rules` does). The policy always asks for one
replica (250 QPS on one replica: inside the rule). Phase 1: stress-ng --cpu 2 runs in the replicas'
cgroup (a real CPU stress of 2 workers): the scale-in must be refused. Phase 2: the stress stopped,
throttling gone: the same scale-in goes through. Prints and writes a JSON record of every step.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from rlctl import cgroups
from rlctl.contract import KNOB_COL
from rlctl.harness.process import find_stress_ng
from rlctl.online.actuators import Actuators, ProcessReplicaActuator
from rlctl.online.e2e import LoadSplitter
from rlctl.online.loop import ControlConfig, ControlLoop
from rlctl.online.policy import Decision
from rlctl.online.safety import SafetyConfig
from rlctl.online.sources import ReplicaSetScraper
from rlctl.rules import load_safety_rules

HERE = Path(__file__).resolve().parent


class ScaleIn:
    """Always asks for one replica."""

    name = "scale-in"
    window = None

    def act(self, service: str, window: object, knobs: object) -> Decision:
        target = np.asarray(knobs, dtype=np.float64).copy()
        target[KNOB_COL["replicas"]] = 1
        return Decision([0, 1, 1, 1, 1, 1, 0, 0], target, self.name, "x", "y")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--library", type=Path, default=HERE / "library.yaml")
    ap.add_argument("--json", type=Path, default=HERE / "enforce-live.json")
    ap.add_argument("--qps", type=float, default=250.0)
    ap.add_argument("--quota", type=float, default=0.1, help="CPU quota of the replicas' cgroup, cores")
    args = ap.parse_args()
    rules = load_safety_rules(args.library)
    hierarchy = cgroups.detect()
    group = hierarchy.create(f"rlctl-rules-demo-{os.getpid()}", quota_cores=args.quota)
    token = Path(tempfile.mkdtemp()) / "token"
    token.write_text("rules-demo-admin-token\n")

    load: LoadSplitter | None = None

    def on_change(act: ProcessReplicaActuator) -> None:
        for r in act.replicas:
            cgroups.add(group, r.proc.pid)
        if load is not None:
            load.reconcile()

    steps: list[dict] = []
    stress = None
    act = ProcessReplicaActuator(["--cpu-us", "50"], token_file=token, on_change=on_change,
                                 pre_stop=lambda r: load.drain(r) if load is not None else None)  # fmt: skip
    try:
        act.set_replicas(2)
        load = LoadSplitter(act)
        load.set_total(args.qps)
        load.reconcile()
        scraper = ReplicaSetScraper(act.metrics_urls, service="rules-demo")
        safety = SafetyConfig(rules=rules, cooldown_s={}, scale_down_after_up_s=0.0)
        loop = ControlLoop(ControlConfig("rules-demo", interval_s=2.0, safety=safety), Actuators(replicas=act),
                           scrape=scraper, policy=ScaleIn())  # fmt: skip
        time.sleep(3.0)
        loop.step()  # the scraper's first sample has no previous one to take rates from
        procs = cgroups.procs_files(group)[0]
        stress = subprocess.Popen(["sh", "-c", f'echo $$ > {procs} && exec {find_stress_ng()} --cpu 2 --cpu-load 100 '
                                   '--timeout 60s --quiet'])  # fmt: skip
        time.sleep(3.0)
        for phase, n in (("stress", 6), ("no stress", 6)):
            if phase == "no stress":
                stress.terminate()
                stress.wait(10)
                time.sleep(3.0)
            for _ in range(n):
                time.sleep(2.0)
                r = loop.step()
                steps.append({
                    "phase": phase, "reason": r.reason, "cause": r.cause,
                    "cfs_throttled_fraction": round(loop.safety.sample.get("cfs_throttled_fraction", float("nan")), 3),
                    "offered_qps": round(loop.safety.sample.get("offered_qps", float("nan")), 1),
                    "replicas_before": float(r.current[KNOB_COL["replicas"]]),
                    "replicas_target": float(r.target[KNOB_COL["replicas"]]),
                    "replicas_after": float(r.applied[KNOB_COL["replicas"]]),
                    "notes": [n for n in r.notes if n.startswith("rule ")],
                })  # fmt: skip
                print(json.dumps(steps[-1]), file=sys.stderr)
                if phase == "no stress" and steps[-1]["replicas_after"] == 1:
                    break
    finally:
        if stress is not None and stress.poll() is None:
            stress.kill()
        if load is not None:
            load.close()
        act.close()
        cgroups.remove(group)
    blocked = [s for s in steps if s["phase"] == "stress" and s["notes"] and s["replicas_after"] == 2]
    allowed = [s for s in steps if s["phase"] == "no stress" and s["replicas_after"] == 1]
    out = {"library": str(args.library), "rule_ids": [r.id for r in rules], "qps": args.qps,
           "blocked_steps": len(blocked), "scaled_in_after_stress": bool(allowed), "steps": steps}  # fmt: skip
    args.json.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "steps"}))
    return 0 if blocked and allowed else 1


if __name__ == "__main__":
    raise SystemExit(main())
