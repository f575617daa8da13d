"""Simulator physics: pure, vectorised numpy functions, each with its formula and source."""

from __future__ import annotations

from typing import Any

import numpy as np


def clip(x: Any, lo: Any, hi: Any) -> Any:
    """``np.clip`` without its dispatch overhead (about 5x faster on small arrays)."""
    return np.minimum(np.maximum(x, lo), hi)
