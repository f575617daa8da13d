"""Shared fixtures: the CLI runner and paths."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RLCTL = Path(sys.executable).parent / "rlctl"


def run_rlctl(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run the installed ``rlctl`` console script as a user would; returns the completed process."""
    return subprocess.run([str(RLCTL), *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


@pytest.fixture
def repo() -> Path:
    return REPO
