"""The online controller: live telemetry in, safe knob changes out.

::

    Go service /metrics --scrape--> collector --XADD--> Redis Stream rlctl:telemetry:<service>
        --XREADGROUP--> control loop --featurize--> policy (Ray Serve, or in-process)
        --> safety layer (bounds, step limits, cooldowns, stale data, kill switch, dry run)
        --> actuators (/admin/knobs, Deployment scale, local processes, MSRs)
        --> audit stream rlctl:audit:<service> --XACK--> done

Modules, lowest first:

- :mod:`rlctl.online.store`: Redis Streams (telemetry, audit, kill switch) and the collector.
- :mod:`rlctl.online.safety`: bounds, step limits, cooldowns, stale-telemetry checks.
- :mod:`rlctl.online.actuators`: the service's admin endpoint, Kubernetes scale, local
  ``gosvc`` processes, MSR writes.
- :mod:`rlctl.online.policy`: the learned policy in-process, over HTTP, and the decision type.
- :mod:`rlctl.online.serve`: the Ray Serve deployment (imports Ray and FastAPI at import time).
- :mod:`rlctl.online.loop`: the control loop, its Prometheus metrics and fallbacks.
- :mod:`rlctl.online.procs`: local redis-server and ``gosvc`` processes for tests, benchmarks
  and the end-to-end run.

Nothing here imports the simulator (:mod:`envs`) or the trainer: production does not need them.
"""
