"""Finding a service's performance boundary (its critical point) from live telemetry.

- :mod:`rlctl.boundary.detector`: the online :class:`BoundaryDetector` (rolling robust
  baseline, multi-signal rule) and :func:`saturation_forecast`.
- :mod:`rlctl.boundary.knee`: the knee of P99 against load (Kneedle, cross-checked by a
  two-segment fit) and the highest load inside the SLO.
- :mod:`rlctl.boundary.probe`: ``rlctl probe``, a ramp that stops itself at the boundary.
- :mod:`rlctl.boundary.knee_gate`: ``rlctl knee-gate``, a CI check that the knee did not move down.
- :mod:`rlctl.boundary.validate`: the ground-truth sweeps behind the probe's accuracy claim.
"""

from rlctl.boundary.detector import BoundaryDetector, BoundaryEvent, DetectorConfig, Signal, saturation_forecast

__all__ = ["BoundaryDetector", "BoundaryEvent", "DetectorConfig", "Signal", "saturation_forecast"]
