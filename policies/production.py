"""Any controller as production runs it: through the online controller's safety layer.

``rlctl control`` never actuates a decision as it comes: :class:`rlctl.online.safety.SafetyLayer`
limits each knob's step per interval, holds a knob in its cooldown, and refuses a scale-down
within ``scale_down_after_up_s`` of a scale-up. :class:`ThroughSafetyLayer` puts the same
class, with the same defaults, between a controller and the simulator (one layer per
service, simulated time), so ``rlctl eval --safety`` scores what production would actuate,
flapping included or not.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from policies.base import Controller, FloatArray
from rlctl.contract import KnobBounds
from rlctl.online.safety import SafetyConfig, SafetyLayer


class ThroughSafetyLayer(Controller):
    """``inner``'s decisions limited by the production safety layer.

    :param inner: the controller whose wishes are limited.
    :param config: the layer's limits; its ``bounds`` are replaced by the evaluation's.
        Default: ``SafetyConfig()``, what ``rlctl control`` runs with unless told otherwise.
    :param name: report name; default ``ppo+safety:NAME`` (``ppo+guard+safety:NAME`` around
        a guarded policy), ``NAME+safety`` otherwise.
    """

    def __init__(self, inner: Controller, config: SafetyConfig | None = None, name: str | None = None) -> None:
        self.inner = inner
        self.config = config or SafetyConfig()
        head, sep, tail = inner.name.partition(":")
        self.name = name or (f"{head}+safety:{tail}" if sep and head.startswith("ppo") else f"{inner.name}+safety")
        self._layers: list[SafetyLayer] = []
        self._now_s = 0.0

    def reset(self, n: int, bounds: KnobBounds, interval_s: float) -> None:
        super().reset(n, bounds, interval_s)
        self.inner.reset(n, bounds, interval_s)
        config = dataclasses.replace(self.config, bounds=bounds)
        self._layers = [SafetyLayer(config, interval_s) for _ in range(n)]
        self._now_s = 0.0

    def decide(self, windows: FloatArray, knobs: FloatArray) -> FloatArray:
        target = np.asarray(self.inner.decide(windows, knobs), dtype=np.float64)
        self._now_s += self.interval_s
        out = np.array(knobs, dtype=np.float64)
        for i, layer in enumerate(self._layers):
            out[i], _ = layer.limit(knobs[i], target[i], self._now_s)
            layer.commit(knobs[i], out[i], self._now_s)
        return out
