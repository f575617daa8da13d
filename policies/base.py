"""The controller interface shared by the learned policy and every baseline.

A controller sees what the live controller sees — a window of contract telemetry per
service and the current knobs — and answers with target knobs. It never sees the
simulator. The same objects run in evaluation (many services at once) and online
(one service at a time), so baselines and the policy are compared on equal terms.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import numpy.typing as npt

from rlctl.contract import KnobBounds

FloatArray = npt.NDArray[np.float64]


class Controller(ABC):
    """Decides target knobs for N services from their telemetry windows.

    ``decide(windows, knobs)`` takes ``windows`` of shape ``(N, W, F)`` (oldest sample
    first, contract column order) and ``knobs`` of shape ``(N, 8)`` (contract knob order)
    and returns target knobs of shape ``(N, 8)``. Controllers with memory keep one state
    per service, sized by :meth:`reset`.
    """

    #: Short name used in reports; the learned policy's starts with ``ppo``.
    name: str = "controller"

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        """Forget all state; prepare for ``n`` services decided every ``interval_s`` seconds."""
        self.n = n
        self.bounds = bounds
        self.interval_s = interval_s

    @abstractmethod
    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        """Target knobs ``(N, 8)`` for the services whose telemetry is ``windows``."""
