"""What the runtime knobs save: the capacity rule (+ the SLO guard) at Go's default knobs vs at static tuned knobs."""
import json, sys
from envs.sim import EnvConfig
from envs.profile import ServiceProfile
from policies.evaluate import evaluate
from policies.suites import validation_suite, trace_scenarios
from policies.oracle import oracle_runtimes
from policies.residual import CapacityRule, RuleConfig
from policies.guard import SLOGuard, GuardConfig
cfg=EnvConfig(); prof=ServiceProfile()
if len(sys.argv) > 1:
    scen=trace_scenarios(sys.argv[1], prof, cfg, 60.0, "auto", 12.0)
else:
    scen=validation_suite(prof, cfg.bounds.max_replicas, cfg.episode_s)
tuned=oracle_runtimes(cfg)[-1]
ctrls=["hpa-tuned"]
for h in (1.0,1.1,1.2,1.3):
    for rt,lab in ((None,"go-defaults"),(tuned,"tuned")):
        ctrls.append(SLOGuard(CapacityRule(RuleConfig(headroom=h), runtime=rt, name="x"), GuardConfig(), name=f"capacity-{h:.1f}+guard@{lab}"))
rep,_=evaluate(ctrls, scen, [0,1,2], cfg, prof)
tot=rep["summary"]["totals"]
out={"tuned_runtime": tuned.to_dict(), "rows": {}}
kinds=[k for k in ("steady","bursty","fault") if k in tot]
for n in [c if isinstance(c,str) else c.name for c in ctrls]:
    row={}
    for k in kinds+["all"]:
        ks=kinds if k=="all" else [k]
        v=sum(tot[x][n]["slo_violation_s"] for x in ks); r=sum(tot[x][n]["replica_seconds"] for x in ks)
        c=sum(tot[x][n].get("core_seconds") or 0 for x in ks)
        row[k]={"violation_s": round(v,1), "replica_s": round(r), "core_s": round(c)}
    out["rows"][n]=row
    print(f"{n:34s}", "  ".join(f'{k}:{row[k]["violation_s"]:.0f}s/{row[k]["replica_s"]}' for k in kinds+["all"]))
json.dump(out, open(sys.argv[2] if len(sys.argv)>2 else "/tmp/r24/tuning-validation.json","w"), indent=1)
