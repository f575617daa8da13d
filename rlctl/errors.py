"""The one exception hierarchy of rlctl.

Every error rlctl raises on purpose derives from :class:`RlctlError`; the CLI catches
exactly these at the top, prints ``Type: message`` and exits with the error's
``exit_code`` (2 for bad input, 1 for a failed check) without a traceback::

    RlctlError
     ├── ConfigError       bad configuration, scenario or CLI input (exit 2)
     ├── ArtifactError     a policy artifact that is missing, corrupt or for another schema
     ├── TelemetryError    telemetry that cannot be read or parsed
     ├── ChaosError        a fault that cannot be injected or reverted
     ├── ActuatorError     a knob that could not be changed
     └── CheckFailed       a check ran and failed (guard, benchmark goals; exit 1)

Messages name the bad value, where it came from and the fix.
"""

from __future__ import annotations


class RlctlError(Exception):
    """Base of every error rlctl raises on purpose."""

    exit_code: int = 2


class ConfigError(RlctlError):
    """A configuration, scenario file or command-line value is invalid."""


class ArtifactError(RlctlError):
    """A policy artifact is missing, corrupt, or was trained against another contract."""


class TelemetryError(RlctlError):
    """Telemetry could not be scraped, parsed or stored."""


class ChaosError(RlctlError):
    """A fault could not be injected, held or reverted."""


class ActuatorError(RlctlError):
    """An actuator could not apply a knob change."""


class CheckFailed(RlctlError):
    """A check ran to completion and its verdict is 'fail' (exit code 1)."""

    exit_code = 1
