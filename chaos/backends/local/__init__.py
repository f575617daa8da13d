"""The local chaos backend: real faults on this host against the Go test-bed.

- :mod:`chaos.backends.local.backend`: :class:`LocalBackend` runs a scenario under a controller.
- :mod:`chaos.backends.local.proxy`: ``gosvc proxy``, the balancer that injects network faults.
- :mod:`chaos.backends.local.replicas`: ``gosvc serve`` replicas in CPU cgroups (v1 or v2, :mod:`rlctl.cgroups`).
- :mod:`chaos.backends.local.faults`: what each fault kind does here (stress-ng, signals, proxy).
- the journal, process start and stop, and :func:`cleanup`, which reverts a crashed run
  (``rlctl chaos cleanup --backend local``), are the test-bed harness's: :mod:`rlctl.harness`.
"""

from chaos.backends.local.backend import LocalBackend, LocalConfig
from rlctl.harness.journal import cleanup

__all__ = ["LocalBackend", "LocalConfig", "cleanup"]
