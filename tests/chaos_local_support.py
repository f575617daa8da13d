"""Shared by the local chaos tests: the binaries they need, /proc inspection, scenarios."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlctl import cgroups
from rlctl.errors import ConfigError
from rlctl.harness.journal import marked_pids, proc_start_time, proc_state

REPO = Path(__file__).resolve().parents[1]
GOSVC = REPO / "deploy" / "gosvc" / "bin" / "gosvc"
RLCTL = Path(sys.executable).parent / "rlctl"
REAPER = Path(__file__).resolve().parent / "reaper.py"


def require_binaries() -> None:
    """Fail loudly, with the fix, when the test-bed or stress-ng is missing (never skip)."""
    if not (GOSVC.is_file() and os.access(GOSVC, os.X_OK)):
        pytest.fail(f"{GOSVC} is missing: build the Go test-bed with `bash deploy/gosvc/build.sh`", pytrace=False)
    if not (shutil.which("stress-ng") or Path("/usr/bin/stress-ng").exists()):
        pytest.fail("stress-ng is not installed: `apt-get install stress-ng` (or `make system`)", pytrace=False)


def require_cgroups() -> cgroups.Cgroups:
    """The writable CPU cgroup hierarchy, v1 or v2, as the product detects it; fail with the fix (never skip)."""
    try:
        return cgroups.detect(purpose="the local chaos tests")
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)


def write_scenario(path: Path, **data: Any) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


Seen = dict[tuple[str, int], int | None]
"""(role, pid) -> start time; role is the process's role, or ``stopped`` for a frozen pid."""


def journal_pids(journal_dir: Path) -> Seen:
    """Every process and stopped entry in a run's journal now."""
    out: Seen = {}
    for f in journal_dir.glob("*.json"):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if d.get("pid") and d.get("kind") in ("process", "stopped"):
            role = d.get("role", "process") if d["kind"] == "process" else "stopped"
            out[(role, int(d["pid"]))] = d.get("start_time")
    return out


def wait_for_roles(journal_dir: Path, roles: set[str], timeout_s: float) -> Seen:
    """Poll the journal until it lists entries of every role in ``roles``; returns all seen."""
    seen: Seen = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        seen.update(journal_pids(journal_dir))
        if roles <= {r for r, _ in seen}:
            return seen
        time.sleep(0.2)
    raise AssertionError(f"the journal in {journal_dir} never listed {sorted(roles)} within {timeout_s:g}s: {seen}")


def pids(seen: Seen, role: str | None = None) -> set[int]:
    return {pid for r, pid in seen if role is None or r == role}


def leftovers(run_id: str, seen: Seen, state_dir: Path) -> list[str]:
    """Everything of the run still on the host: processes (any state, zombies too), cgroups, journal."""
    found = []
    for (role, pid), start in seen.items():
        if proc_start_time(pid) is not None and proc_start_time(pid) == start:
            found.append(f"{role} process {pid} still exists (state {proc_state(pid)})")
    for pid in marked_pids(run_id):
        found.append(f"process {pid} marked with run {run_id} (state {proc_state(pid)})")
    cg = require_cgroups().root / "rlctl" / run_id
    if cg.exists():
        found.append(f"cgroup {cg} still exists")
    if (state_dir / run_id).exists():
        found.append(f"journal {state_dir / run_id} still exists: {os.listdir(state_dir / run_id)}")
    return found


def stopped_pids() -> list[int]:
    """Every process on the host in T (stopped) state."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and proc_state(int(entry.name)) == "T":
            out.append(int(entry.name))
    return out


def report_shape(report: dict[str, Any]) -> dict[str, Any]:
    """The key structure of a chaos report (values dropped), to compare backends."""
    result = next(iter(report["results"].values()))
    return {
        "top": sorted(report),
        "scenario": sorted(report["scenario"]),
        "fault": sorted(report["faults"][0]) if report["faults"] else [],
        "result": sorted(k for k in result if k not in ("controller", "extra")),
        "recovery": sorted(result["recovery"][0]) if result["recovery"] else [],
        "injection": sorted(result["injections"][0]) if result["injections"] else [],
        "series": sorted(result["series"]),
    }


def tiny_ppo_artifact(out: Path) -> Path:
    """An untrained PPO artifact (enough to exercise ``--controller ppo:PATH`` end to end)."""
    from envs.vec import GoServiceVecEnv
    from policies.artifact import save_artifact
    from policies.train import TrainConfig, make_model
    from rlctl.contract import FeatureSpec, KnobBounds

    cfg = TrainConfig(n_envs=2, n_steps=32, batch_size=64, n_epochs=1, total_timesteps=128, eval_every=0, seed=3)
    out.mkdir(parents=True, exist_ok=True)
    make_model(cfg, GoServiceVecEnv(2, seed=0)).save(out / "m.zip")
    save_artifact(
        out / "policy", out / "m.zip", name="tiny", env_version="0", config=cfg.to_dict() | {"env": {}, "profile": {}},
        seed=3, bounds=KnobBounds(), features=FeatureSpec(),
    )  # fmt: skip
    return out / "policy"
