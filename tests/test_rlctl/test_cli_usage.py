"""Usage errors: one line ``UsageError: ...`` and exit 2; every number the CLI takes is bounded."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from conftest import invoke_rlctl
from typer.models import ArgumentInfo, OptionInfo

from rlctl.cli import app


def commands(group: typer.Typer, prefix: str = "rlctl") -> Iterator[tuple[str, Any]]:
    for info in group.registered_commands:
        assert info.callback is not None
        yield f"{prefix} {info.name or info.callback.__name__.replace('_', '-')}", info.callback
    for sub in group.registered_groups:
        assert sub.typer_instance is not None
        yield from commands(sub.typer_instance, f"{prefix} {sub.name}")


def numeric_params(callback: Any) -> Iterator[tuple[str, type, OptionInfo | ArgumentInfo]]:
    hints = typing.get_type_hints(callback, include_extras=True)
    for name, param in inspect.signature(callback).parameters.items():
        hint = hints[name]
        infos = [param.default] if isinstance(param.default, (OptionInfo, ArgumentInfo)) else []
        if typing.get_origin(hint) is typing.Annotated:
            hint, *meta = typing.get_args(hint)
            infos += [m for m in meta if isinstance(m, (OptionInfo, ArgumentInfo))]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if hint in (float, int) and infos:
            yield name, hint, infos[0]


def test_every_float_option_states_its_range() -> None:
    # A bounded float also refuses NaN (every comparison with it fails) and infinities.
    unbounded = [
        f"{where} --{name.replace('_', '-')}"
        for where, callback in commands(app)
        for name, kind, info in numeric_params(callback)
        if kind is float and (info.min is None or info.max is None)
    ]
    assert unbounded == []


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("eval", "--seeds", "abc"), "UsageError: rlctl eval: Invalid value for '--seeds'"),
        (("eval", "--seeds", "0"), "UsageError: rlctl eval: Invalid value for '--seeds'"),
        (("eval", "--no-such-flag"), "UsageError: rlctl eval: No such option: --no-such-flag"),
        (("eval", "--trace-interval", "-5"), "Invalid value for '--trace-interval'"),
        (("control", "--service", "s", "--metrics-port", "-1"), "Invalid value for '--metrics-port'"),
        (("chaos", "run", "x.yaml", "--dry-run", "--replica-cpu", "nan"), "Invalid value for '--replica-cpu'"),
        (("chaos", "run", "x.yaml", "--dry-run", "--load-scale", "inf"), "Invalid value for '--load-scale'"),
        (("simulate",), "UsageError: rlctl simulate: Missing argument"),
    ],
)
def test_a_usage_error_is_one_line_and_exit_2(args: tuple[str, ...], match: str) -> None:
    r = invoke_rlctl(*args)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and match in lines[0] and lines[0].startswith("UsageError: "), r.stderr
    assert "╭" not in r.stderr and "Traceback" not in r.stderr and r.stdout == ""
