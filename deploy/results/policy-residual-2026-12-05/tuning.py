"""What the runtime knobs save: the capacity rule (+ the SLO guard) at Go's default knobs vs at static tuned knobs.

    python deploy/results/policy-residual-2026-12-05/tuning.py [TRACE OUT.json]

Without arguments: the validation suite, written to ``tuning-validation.json`` here. With a
trace file (one requests-per-minute value per line): that replay, written to ``OUT.json``.
Three evaluation seeds; totals per scenario kind of SLO-violation, replica- and core-seconds.
"""

import json
import sys
from pathlib import Path

from envs.profile import ServiceProfile
from envs.sim import EnvConfig
from policies.evaluate import evaluate
from policies.guard import GuardConfig, SLOGuard
from policies.oracle import oracle_runtimes
from policies.residual import CapacityRule, RuleConfig
from policies.suites import trace_scenarios, validation_suite

HERE = Path(__file__).parent


def main() -> None:
    cfg, prof = EnvConfig(), ServiceProfile()
    if len(sys.argv) > 1:
        scenarios = trace_scenarios(Path(sys.argv[1]), prof, cfg, 60.0, "auto", 12.0)
        out_path = Path(sys.argv[2])
    else:
        scenarios = validation_suite(prof, cfg.bounds.max_replicas, cfg.episode_s)
        out_path = HERE / "tuning-validation.json"
    tuned = oracle_runtimes(cfg)[-1]  # GOGC 800, the largest pools: the oracle's static pick
    controllers: list = ["hpa-tuned"]
    for h in (1.0, 1.1, 1.2, 1.3):
        for runtime, label in ((None, "go-defaults"), (tuned, "tuned")):
            rule = CapacityRule(RuleConfig(headroom=h), runtime=runtime)
            controllers.append(SLOGuard(rule, GuardConfig(), name=f"capacity-{h:.1f}+guard@{label}"))
    report, _ = evaluate(controllers, scenarios, [0, 1, 2], cfg, prof)
    totals = report["summary"]["totals"]
    kinds = [k for k in ("steady", "bursty", "fault") if k in totals]
    out: dict = {"tuned_runtime": tuned.to_dict(), "rows": {}}
    for name in [c if isinstance(c, str) else c.name for c in controllers]:
        row = {}
        for kind in [*kinds, "all"]:
            ks = kinds if kind == "all" else [kind]
            row[kind] = {
                "violation_s": round(sum(totals[k][name]["slo_violation_s"] for k in ks), 1),
                "replica_s": round(sum(totals[k][name]["replica_seconds"] for k in ks)),
                "core_s": round(sum(totals[k][name].get("core_seconds") or 0 for k in ks)),
            }
        out["rows"][name] = row
        print(f"{name:34s}", "  ".join(f"{k}:{row[k]['violation_s']:.0f}s/{row[k]['replica_s']}" for k in row))
    with out_path.open("w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
