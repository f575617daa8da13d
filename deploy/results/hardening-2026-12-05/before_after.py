"""Before/after table of hostile inputs: two source trees, the same venv, the same host.

    git worktree add /tmp/before 91405e1          # the tree before the hardening
    python deploy/results/hardening-2026-12-05/before_after.py /tmp/before . > table.jsonl

Each case runs ``rlctl`` from each tree (PYTHONPATH) on inputs written to a temporary folder;
the old tree read its CRDs from RLCTL_SHARED (a copy of the Chaos Mesh schemas).
"""
import json, os, subprocess, sys, tempfile, time
BEFORE, AFTER = sys.argv[1], sys.argv[2]
PY = os.path.join(AFTER, ".venv", "bin", "python")
H = tempfile.mkdtemp(prefix="hostile-")
FILES = {
    "big-duration.yaml": b"name: x\nduration_s: 1e300\n",
    "int30-duration.yaml": b"name: x\nduration_s: 100000000000000000000000000000\n",
    "inf-qps.yaml": b"name: x\nload: {kind: step, base_qps: .inf}\nfaults:\n  - {kind: pod-kill, start_s: 10, duration_s: 5, selector: {namespace: d}}\n",
    "latin1.yaml": b"name: caf\xe9\n",
    "workers.yaml": b"name: x\nfaults:\n  - {kind: cpu-stress, start_s: 0, duration_s: 10, params: {workers: 100000}, selector: {namespace: d}}\n",
    "after-end.yaml": b"name: x\nduration_s: 60\nfaults:\n  - {kind: pod-kill, start_s: 120, duration_s: 10, selector: {namespace: d}}\n",
    "many-faults.yaml": b"name: x\nduration_s: 600\nfaults:\n" + b"  - {kind: pod-kill, start_s: 1, duration_s: 1, selector: {namespace: d}}\n" * 20000,
    "bool-slo.yaml": b"name: x\nslo_p99_ms: true\nfaults:\n  - {kind: pod-kill, start_s: 10, duration_s: 5, selector: {namespace: d}}\n",
    "alias-bomb.yaml": ("name: x\nx:\n  l0: &l0 [a, a, a, a, a, a, a, a, a, a]\n" + "".join(
        f"  l{i}: &l{i} [" + ", ".join([f"*l{i-1}"] * 10) + "]\n" for i in range(1, 9))).encode(),
    "neg.txt": b"1\n2\n-5\n",
}
for name, data in FILES.items():
    with open(os.path.join(H, name), "wb") as f:
        f.write(data)
CASES = [
    ("duration_s: 1e300", ["simulate", f"{H}/big-duration.yaml", "--out", f"{H}/o"]),
    ("duration_s: a 30-digit integer", ["chaos", "render", f"{H}/int30-duration.yaml"]),
    ("base_qps: .inf (render)", ["chaos", "render", f"{H}/inf-qps.yaml"]),
    ("base_qps: .inf (simulate)", ["simulate", f"{H}/inf-qps.yaml", "--out", f"{H}/o"]),
    ("scenario not UTF-8 (render)", ["chaos", "render", f"{H}/latin1.yaml"]),
    ("scenario not UTF-8 (simulate)", ["simulate", f"{H}/latin1.yaml", "--out", f"{H}/o"]),
    ("workers: 100000 (simulate)", ["simulate", f"{H}/workers.yaml", "--out", f"{H}/o"]),
    ("workers: 100000 (local dry-run)", ["chaos", "run", f"{H}/workers.yaml", "--backend", "local", "--dry-run"]),
    ("fault starts after the end", ["simulate", f"{H}/after-end.yaml", "--out", f"{H}/o"]),
    ("20,000 faults (simulate)", ["simulate", f"{H}/many-faults.yaml", "--out", f"{H}/o"]),
    ("slo_p99_ms: true", ["simulate", f"{H}/bool-slo.yaml", "--out", f"{H}/o"]),
    ("YAML alias bomb", ["simulate", f"{H}/alias-bomb.yaml", "--out", f"{H}/o"]),
    ("trace with -5", ["eval", "--trace", f"{H}/neg.txt", "--baseline", "hpa", "--seeds", "1"]),
    ("--trace-interval -5", ["eval", "--trace", f"{H}/neg.txt", "--trace-interval", "-5", "--baseline", "hpa"]),
    ("--metrics-port -1", ["control", "--service", "s", "--metrics-port", "-1", "--max-steps", "1"]),
    ("--replica-cpu nan (dry-run)", ["chaos", "run", f"{H}/after-end.yaml", "--backend", "local", "--dry-run", "--replica-cpu", "nan"]),
    ("--load-scale inf (dry-run)", ["chaos", "run", f"{H}/workers.yaml", "--backend", "local", "--dry-run", "--load-scale", "inf"]),
    ("--seed abc", ["simulate", f"{H}/after-end.yaml", "--seed", "abc"]),
    ("--seeds 0", ["eval", "--baseline", "hpa", "--seeds", "0"]),
    ("unknown flag", ["eval", "--no-such-flag"]),
]
def run(tree, args):
    env = dict(os.environ, PYTHONPATH=tree, RLCTL_SHARED=os.environ.get("RLCTL_SHARED", "/work/shared"))
    t = time.monotonic()
    try:
        r = subprocess.run([PY, "-c", "from rlctl.cli import main; main()", *args],
                           cwd=tree, env=env, capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        return {"rc": "timeout >90 s", "lines": 0, "first": "", "s": 90}
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    tb = "Traceback" in r.stderr
    first = (lines[-1] if tb else lines[0]) if lines else (r.stdout.splitlines() or [""])[0]
    return {"rc": r.returncode, "lines": len(lines), "traceback": tb, "first": first[:150], "s": round(time.monotonic() - t, 1)}
out = []
for label, args in CASES:
    subprocess.run(["rm", "-rf", f"{H}/o"])
    b = run(BEFORE, args); subprocess.run(["rm", "-rf", f"{H}/o"])
    a = run(AFTER, args)
    out.append({"input": label, "before": b, "after": a})
    print(json.dumps(out[-1]), flush=True)
