"""The test-bed harness: every process, cgroup and knob change rlctl makes on this host.

One place for what the local chaos backend, ``rlctl probe``, ``rlctl calibrate``, the
boundary validation and the online end-to-end run and test-bed all do to run ``gosvc``:

- :mod:`rlctl.harness.process`: the one lookup of the gosvc binary (:func:`find_gosvc`),
  journaled process start (:func:`spawn`, :func:`run`) and stop (SIGTERM, then SIGKILL);
- :mod:`rlctl.harness.cgroup`: journaled CPU cgroups on top of :mod:`rlctl.cgroups` (v1 or v2);
- :mod:`rlctl.harness.isolation`: the harness's own CPUs (:class:`HarnessIsolation`: this process
  and its children in a cpuset, or pinned by ``sched_setaffinity``), apart from the replicas';
- :mod:`rlctl.harness.admin`: the one client of gosvc's ``/admin/knobs``;
- :mod:`rlctl.harness.journal`: the on-disk journal every change is written to *before* it
  is made, and :func:`cleanup`, which reverts what a killed command left behind
  (``rlctl chaos cleanup --backend local``).

A live-measurement part (layer 3 of docs/architecture.md): it imports only the floor and
:mod:`rlctl.cgroups`.
"""

from rlctl.harness.journal import Journal, cleanup, session, using
from rlctl.harness.process import Managed, find_gosvc, run, spawn

__all__ = ["Journal", "Managed", "cleanup", "find_gosvc", "run", "session", "spawn", "using"]
