"""The one controller registry (``policies.registry``): every name works in ``rlctl eval``, ``rlctl
chaos run`` and ``rlctl control`` (where it can run there) or is refused with the same message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaos.runner import ControllerContext, check_controller_names, resolve_controller
from chaos.spec import load_scenario
from envs.profile import ServiceProfile
from envs.sim import EnvConfig
from policies import registry
from policies.guard import SLOGuard
from policies.oracle import OracleController, ReactiveOracle
from rlctl.cli import main
from rlctl.commands.policy import _parse_controllers
from rlctl.contract import KnobBounds
from rlctl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SCENARIO = REPO / "chaos" / "scenarios" / "pod-churn.yaml"

#: Every form of the grammar, and whether ``rlctl control`` runs it.
NAMES = {
    "ppo:default": True,
    "ppo+guard:default": True,
    "hpa": True,
    "hpa+guard": True,
    "hpa-0.6": True,
    "hpa-0.6+guard": True,
    "hpa-tuned": False,
    "threshold": False,
    "threshold+guard": False,
    "static": False,
    "static+guard": False,
    "oracle": False,
    "oracle-reactive": False,
    "oracle-reactive-1.3+guard": False,
    "capacity": False,
    "capacity-1.2+guard": False,
}
BAD = ["magic", "hpa-2", "hpa-x", "hpa-tuned+guard", "oracle+guard", "oracle-reactive-9", "capacity-0.5", "ppo:",
       "ppo+guard:", "hpa+guard+guard", ""]  # fmt: skip


def _control(name: str) -> registry.ControlPlan:
    return registry.control_plan(name, interval_s=5.0, bounds=KnobBounds(), slo_p99_ms=8.0)


def _message(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(ConfigError) as err:
        call(*args, **kwargs)  # type: ignore[operator]
    return str(err.value)


@pytest.mark.parametrize("name", list(NAMES))
def test_each_name_is_accepted_by_every_front_door(name: str) -> None:
    spec = registry.parse(name)
    assert spec.name == name
    # rlctl eval --baseline NAME: checked here, built by policies.evaluate per scenario group
    assert _parse_controllers(None, [name]) == [name]
    # rlctl chaos run -c NAME --backend sim: the same registry builds it, named as given
    scenario = load_scenario(SCENARIO)
    assert check_controller_names([name], where="sim") == [name]
    ctrl, facts = resolve_controller(name, ControllerContext("sim", scenario))
    assert ctrl.name == name
    assert isinstance(ctrl, SLOGuard) == spec.guard and ("guard" in facts) == spec.guard
    if spec.kind in ("oracle", "oracle-reactive"):
        inner = ctrl.inner if isinstance(ctrl, SLOGuard) else ctrl
        assert isinstance(inner, ReactiveOracle if spec.kind == "oracle-reactive" else OracleController)
    if name != "hpa-tuned":  # eval sweeps hpa-tuned itself, per scenario
        built = registry.make_baseline(name, EnvConfig(slo_p99_ms=scenario.slo_p99_ms), ServiceProfile())
        assert built.name == name and type(built) is type(ctrl)
    # rlctl control --policy NAME, and chaos run on a live backend
    if NAMES[name]:
        plan = _control(name)
        assert plan.spec == spec and (plan.guard is not None) == spec.guard
        assert (plan.policy is not None) == (spec.kind == "ppo")
        assert plan.hpa is None or plan.hpa.target_cpu == spec.param
    else:
        assert "does not run in rlctl control" in _message(_control, name) or spec.sim_only
    if spec.sim_only:  # the same words from chaos run --backend local, validate-real and control
        local = _message(check_controller_names, [name], where="local")
        assert local == _message(resolve_controller, name, ControllerContext("local", scenario))
        assert local == _message(_control, name) == _message(check_controller_names, [name], where="k8s")
        assert "runs in the simulator only" in local
    else:
        check_controller_names([name], where="local")


@pytest.mark.parametrize("name", BAD)
def test_a_bad_name_is_refused_with_the_same_message_everywhere(name: str) -> None:
    want = _message(registry.parse, name)
    assert want.startswith(f"controller {name!r}: ") and want.endswith(registry.GRAMMAR)
    assert _message(_parse_controllers, None, [name]) == want  # eval --baseline
    assert _message(check_controller_names, [name]) == want  # chaos run -c, validate-real -c
    assert _message(check_controller_names, [name], where="local") == want
    assert _message(resolve_controller, name, ControllerContext("sim", load_scenario(SCENARIO))) == want
    assert _message(_control, name) == want  # control --policy
    assert _message(registry.make_baseline, name, EnvConfig(), ServiceProfile()) == want


def test_a_name_given_twice_is_refused_alike_in_eval_and_chaos_run() -> None:
    want = "controller 'hpa' is given twice; each controller runs once"
    assert _message(_parse_controllers, None, ["hpa", "hpa"]) == want
    assert _message(check_controller_names, ["hpa", "hpa"]) == want


def test_control_takes_a_bare_artifact_and_refuses_what_it_cannot_run() -> None:
    assert _control("default").policy == "default"
    assert _control("policies/artifacts/default").policy == "policies/artifacts/default"
    assert _control("hpa-0.6").hpa.target_cpu == 0.6  # type: ignore[union-attr]
    assert _control("hpa").hpa is None and _control("hpa").policy is None
    guarded = registry.control_plan("default", interval_s=5.0, bounds=KnobBounds(), slo_p99_ms=20.0, guard=True)
    assert guarded.guard is not None and guarded.guard.slo_p99_ms == 20.0
    assert "use hpa-<target>" in _message(_control, "hpa-tuned")
    assert "runs a policy" in _message(_control, "threshold")


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``rlctl ARGV`` in-process through the console script's entry point: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    out = capsys.readouterr()
    return int(done.value.code or 0), out.out, out.err


@pytest.mark.slow  # eval, chaos run and simulate of a 12-minute scenario, several times
def test_the_three_commands_take_the_same_names(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    names = ["oracle-reactive", "hpa-0.6+guard", "ppo+guard:default"]
    code, _, err = _cli(capsys, "eval", "--suite", str(SCENARIO), "--seeds", "1", "--json", str(tmp_path / "e.json"),
                        *(a for n in names for a in ("--baseline", n)))  # fmt: skip
    assert code == 0, err
    (entry,) = json.loads((tmp_path / "e.json").read_text())["scenarios"].values()
    code, _, err = _cli(capsys, "chaos", "run", str(SCENARIO), "--backend", "sim", "--json", str(tmp_path / "c.json"),
                        *(a for n in names for a in ("-c", n)))  # fmt: skip
    assert code == 0, err
    chaos = json.loads((tmp_path / "c.json").read_text())["results"]
    for n in names:  # the same controller, the same figures
        assert chaos[n]["slo_violation_s"] == entry["controllers"][n]["slo_violation_s"], n
        assert chaos[n]["replica_seconds"] == entry["controllers"][n]["replica_seconds"], n
    code, _, err = _cli(capsys, "control", "--service", "svc", "--policy", "hpa-0.6+guard", "--redis", "none",
                        "--metrics", "http://127.0.0.1:9/metrics", "--metrics-port", "0", "--interval", "0.05",
                        "--max-steps", "1", "--no-status", "--dry-run")  # fmt: skip
    assert code == 0, err
    assert "hpa-0.6+guard: the HPA rule is the controller" in err


@pytest.mark.parametrize("name", ["hpa-2", "oracle+guard", "oracle-reactive-x", "oracle", "bogus"])
def test_the_three_commands_refuse_a_name_in_the_same_words(capsys: pytest.CaptureFixture[str], name: str) -> None:
    scenario = str(SCENARIO)
    commands = [
        ["eval", "--baseline", name, "--suite", scenario, "--seeds", "1"],
        ["chaos", "run", scenario, "--backend", "local", "--dry-run", "-c", name],
        ["validate-real", "--quick", "-c", name],
        ["control", "--service", "svc", "--policy", name, "--redis", "none", "--metrics", "http://127.0.0.1:9/m"],
    ]
    if name == "oracle":  # rlctl eval runs it (test above); a live backend and control refuse it alike
        commands = commands[1:]
    lines = []
    for argv in commands:
        code, _, err = _cli(capsys, *argv)
        assert code == 2, (argv, err)
        lines.append(err.strip())
    assert lines[0].startswith(f"ConfigError: controller {name!r}")
    assert all(line == lines[0] for line in lines), lines


@pytest.mark.slow  # eval, chaos run and simulate of a 12-minute scenario, several times
def test_simulate_runs_every_name_as_eval_does(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    for name in ("oracle-reactive+guard", "hpa-tuned"):  # simulate used to fail on both
        code, out, err = _cli(capsys, "simulate", str(SCENARIO), "--controller", name, "--out", str(tmp_path))
        assert code == 0, err
        sim = json.loads(out.strip().splitlines()[-1])
        code, _, err = _cli(capsys, "eval", "--suite", str(SCENARIO), "--seeds", "1", "--baseline", name,
                            "--json", str(tmp_path / "e.json"))  # fmt: skip
        assert code == 0, err
        (entry,) = json.loads((tmp_path / "e.json").read_text())["scenarios"].values()
        assert sim["slo_violation_s"] == entry["controllers"][name]["slo_violation_s"], name
        assert sim["replica_seconds"] == entry["controllers"][name]["replica_seconds"], name
    code, _, err = _cli(capsys, "simulate", str(SCENARIO), "--controller", "hpa-2", "--out", str(tmp_path))
    assert code == 2 and err.strip() == f"ConfigError: {_message(registry.parse, 'hpa-2')}"
