"""Helpers for the online-controller tests: real processes on free ports, always stopped.

Fixtures live in the test modules (a few lines each) and call these; redis-server missing
is an error, not a skip: the online tests are meaningless without it.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rlctl.online.procs import GoService, RedisServer, gosvc_binary

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-admin-token"


@contextlib.contextmanager
def redis_server(directory: Path | None = None, *, appendonly: bool = True) -> Iterator[RedisServer]:
    """A real redis-server on a free port (append-only, fsync always), stopped and cleaned up after."""
    server = RedisServer(appendonly=appendonly, directory=directory)
    try:
        yield server.start()
    finally:
        server.cleanup()


def token_file(tmp: Path) -> Path:
    path = tmp / "admin-token"
    path.write_text(TOKEN + "\n")
    return path


@contextlib.contextmanager
def gosvc(tmp: Path, *args: str) -> Iterator[GoService]:
    """A real ``gosvc serve`` with the admin API enabled (token in ``tmp``)."""
    gosvc_binary()  # a clear error when the binary is missing
    svc = GoService(list(args), token_file=token_file(tmp))
    try:
        yield svc.start()
    finally:
        svc.stop()


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test with a timeout otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def tiny_artifact(out: Path, seed: int = 0) -> Path:
    """A tiny (untrained, 2 x 16-step) PPO artifact built with the trainer's own model factory."""
    from envs.vec import GoServiceVecEnv
    from policies.artifact import save_artifact
    from policies.train import TrainConfig, make_model
    from rlctl.contract import FeatureSpec, KnobBounds

    vec = GoServiceVecEnv(2, seed=seed)
    model = make_model(TrainConfig(n_envs=2, n_steps=16, batch_size=32, net_arch=(16, 16), seed=seed), vec)
    model.save(out.parent / f"{out.name}-model.zip")
    save_artifact(out, out.parent / f"{out.name}-model.zip", name=out.name, env_version="0", config={}, seed=seed,
                  bounds=KnobBounds(), features=FeatureSpec())  # fmt: skip
    return out


def finite(x: float) -> bool:
    return math.isfinite(x)


class MemoryReplicas:
    """Replica count in memory (the process actuator has its own tests; here speed matters)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_replicas(self) -> int:
        return self.n

    def set_replicas(self, n: int) -> int:
        self.n = n
        return n
