"""Reading a limits file's YAML into a validated :class:`~rlctl.dsl.schema.LimitsSpec`, every
error as ``file:line: field: fix`` (the line from the YAML node marks). Part of :mod:`rlctl.dsl`.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from pydantic import ValidationError

from rlctl.dsl.schema import (
    Actions,
    Bounds,
    Cooldowns,
    Cost,
    Kernel,
    Kubernetes,
    LimitsSpec,
    MaxStep,
    Runtime,
)
from rlctl.errors import ConfigError
from rlctl.inputs import load_yaml

# ------------------------------------------------------------------------------ loading with line numbers


def _node_line(root: Any, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML node at ``loc`` (the deepest one that exists)."""
    import yaml

    node, line = root, (root.start_mark.line + 1 if root is not None else None)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == str(part)), None)
            if match is None:
                return line
            node, line = match[1], match[0].start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


_TYPE_TAGS = {"int", "float", "str", "list", "bool", "literal", "dict"}


def _loc_from_message(loc: tuple[Any, ...], msg: str) -> tuple[Any, ...]:
    """A model-level message that names its field (``gogc is set in both ...``) points at that field."""
    m = re.match(r"(\w+) is set in both", msg)
    if m and not loc:
        return ("runtime", m.group(1))
    return loc


def _yaml_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], bool]:
    """``loc`` without the type tags pydantic adds for union members; and whether it had any."""
    kept = tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS)))
    return kept, len(kept) != len(loc)


def spec_from_text(text: str, *, source: str = "<limits>") -> LimitsSpec:
    """Validate limits YAML ``text``; :class:`ConfigError` lists every problem as ``source:line: field: fix``."""
    import yaml

    data = load_yaml(text, source=source, what="limits file")  # bounded; file:line errors
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}{where}: not valid YAML: {getattr(exc, 'problem', exc)}; fix the syntax") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: a limits file is a mapping with at least 'service' and 'slo' keys")
    try:
        return LimitsSpec.model_validate(data)
    except ValidationError as exc:
        problems: dict[str, tuple[int, str]] = {}
        for err in exc.errors():
            msg = str(err["msg"]).removeprefix("Value error, ")
            loc, union = _yaml_loc(_loc_from_message(tuple(err["loc"]), msg))
            line = _node_line(root, loc) if err["type"] != "missing" else _node_line(root, loc[:-1])
            field = ".".join(str(p) for p in loc) or "(top level)"
            fix = _UNION_FIX if union else _fix(err, msg)
            problems.setdefault(field, (line or 1, f"{source}:{line or 1}: {field}: {fix}"))
        ordered = [text for _, text in sorted(problems.values(), key=lambda p: p[0])]
        raise ConfigError("invalid limits file:\n  " + "\n  ".join(ordered)) from None


_UNION_FIX = "expected a number, a word such as 'quota' or a range [lo, hi]; e.g. gogc: [50, 400]"


def _fix(err: Any, msg: str) -> str:
    """A pydantic error as 'what is wrong; how to fix it'."""
    kind = err["type"]
    if kind == "missing":
        return "required field is missing; add it"
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        close = difflib.get_close_matches(field, _ALL_FIELDS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else "remove it (see rlctl/dsl/schema.py for the fields)"
        return f"unknown field {field!r}; {hint}"
    if kind == "greater_than_equal" and err["loc"] and err["loc"][0] == "max_step":
        return f"{err.get('input')!r} must be at least 1, or the knob could never move (deny it instead)"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal"):
        limit = next(iter((err.get("ctx") or {}).values()), "?")
        word = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<="}[kind]
        return f"{err.get('input')!r} is out of range; write a number {word} {limit}"
    if kind == "literal_error":
        return f"{err.get('input')!r} is not allowed: {msg}"
    return msg


_ALL_FIELDS = sorted(
    {
        f
        for m in (LimitsSpec, Bounds, MaxStep, Cooldowns, Actions, Cost, Runtime, Kernel, Kubernetes)
        for f in m.model_fields
    }
)
