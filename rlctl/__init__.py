"""rlctl: reinforcement-learning boundary control for Go microservices.

Importing ``rlctl`` is cheap: heavy dependencies (torch, stable-baselines3, ray,
matplotlib) are imported where they are used.
"""

from rlctl.errors import (
    ActuatorError,
    ArtifactError,
    ChaosError,
    CheckFailed,
    ConfigError,
    RlctlError,
    TelemetryError,
)

__version__ = "0.1.0"

__all__ = [
    "ActuatorError",
    "ArtifactError",
    "ChaosError",
    "CheckFailed",
    "ConfigError",
    "RlctlError",
    "TelemetryError",
    "__version__",
]
