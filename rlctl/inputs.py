"""Reading what users hand rlctl: one place for the limits on input files.

Every file the product reads from a user — scenario and boundary YAML, service profiles,
training configs, load traces, policy manifests — comes through here, so every command that
reads the same kind of file refuses the same things with the same words:

- :func:`read_bytes` / :func:`read_text`: a size limit checked before reading, and bytes
  decoded as UTF-8 with an error that names the offset of the first bad byte;
- :func:`load_yaml`: PyYAML's *safe* loader (no Python objects), with alias expansion bounded
  (a "billion laughs" document of nested aliases is refused, not expanded), errors as
  ``file:line: problem``, and a bound on the number of values in the result;
- :func:`check_finite`: numbers that reach numpy must be finite.

Errors are :class:`~rlctl.errors.ConfigError` (exit 2) naming the file, the value and the fix.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rlctl.errors import ConfigError

#: Largest configuration file read (scenario, boundary, profile, training config, manifest).
MAX_CONFIG_BYTES = 1 << 20
#: Largest trace file read (compressed or not) and largest decompressed trace.
MAX_TRACE_BYTES = 64 << 20
#: Alias uses one YAML document may make; anchors are for reuse, not for multiplying a document.
MAX_YAML_ALIASES = 100
#: Values (scalars, list items, mapping entries, counted with aliases expanded) in one document.
MAX_YAML_VALUES = 20_000


def read_bytes(path: str | Path, *, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> bytes:
    """The bytes of ``path``; :class:`ConfigError` if it cannot be read or is larger than ``max_bytes``."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise ConfigError(
                f"{p}: {what} is {size:,} bytes, over the limit of {max_bytes:,}; "
                "is this the right file? Split or shorten it"
            )
        with p.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read {what} ({exc.strerror or exc}); check the path") from None
    if len(data) > max_bytes:  # grew while being read, or a special file whose size stat does not tell
        raise ConfigError(f"{p}: {what} is over the limit of {max_bytes:,} bytes; is this the right file?")
    return data


def decode_utf8(data: bytes, *, source: str, what: str) -> str:
    """``data`` as text; a clear error naming the offset of the first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{source}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None


def read_text(path: str | Path, *, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The UTF-8 text of ``path`` within ``max_bytes``; :class:`ConfigError` otherwise."""
    return decode_utf8(read_bytes(path, what=what, max_bytes=max_bytes), source=str(path), what=what)


def _count_values(data: Any, limit: int) -> int:
    """Values in ``data`` with shared references counted each time (what a validator walks); stops past ``limit``."""
    count, stack = 0, [data]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return count


def load_yaml(text: str, *, source: str, what: str = "file") -> Any:
    """Parse YAML ``text`` safely; errors name ``source`` and the line.

    Aliases are allowed (anchors are a legitimate way to reuse a fault) but bounded in number,
    and the parsed document in size, so no document expands into more than
    :data:`MAX_YAML_VALUES` values for the validators that walk it. The events are counted in a
    first pass with libyaml's parser before anything is built: the pure-Python loader takes
    tens of seconds on a megabyte of YAML, which a hostile file would otherwise cost.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        aliases = 0
        for events, event in enumerate(yaml.parse(text, Loader=loader), start=1):
            if isinstance(event, yaml.AliasEvent):
                aliases += 1
                if aliases > MAX_YAML_ALIASES:
                    line = event.start_mark.line + 1 if event.start_mark is not None else 1
                    raise ConfigError(
                        f"{source}:{line}: more than {MAX_YAML_ALIASES} alias uses (*name) in "
                        f"one {what}; write the values out or use fewer anchors"
                    )
            if events > 2 * MAX_YAML_VALUES:
                raise ConfigError(
                    f"{source}: {what} holds more than {MAX_YAML_VALUES:,} values; is this the right file?"
                )
        data = yaml.load(text, Loader=loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc
        raise ConfigError(f"{source}{where}: not valid YAML: {problem}; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{source}: {what} is nested too deeply to read; flatten it") from None
    if _count_values(data, MAX_YAML_VALUES) > MAX_YAML_VALUES:
        raise ConfigError(
            f"{source}: {what} holds more than {MAX_YAML_VALUES:,} values (aliases counted as expanded); "
            "is this the right file?"
        )
    return data


def load_yaml_file(path: str | Path, *, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """:func:`read_text` then :func:`load_yaml`."""
    return load_yaml(read_text(path, what=what, max_bytes=max_bytes), source=str(path), what=what)


def check_finite(value: float, *, name: str, source: str) -> float:
    """``value`` if it is a finite number; :class:`ConfigError` naming ``name`` and ``source`` otherwise."""
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{source}: {name}={value!r} is not a number; give a finite number") from None
    if not math.isfinite(x):
        raise ConfigError(f"{source}: {name}={value!r} is not finite; give a finite number")
    return x
