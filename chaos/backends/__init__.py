"""The backends of ``rlctl chaos run``, one module or package each, named by backend.

- :mod:`chaos.backends.sim`: the simulator applies the faults (evaluation's rollout).
- :mod:`chaos.backends.local`: real faults on this host against ``gosvc`` replicas.
- :mod:`chaos.backends.k8s`: Chaos Mesh objects in a Kubernetes cluster.
- :mod:`chaos.backends.live`: the load, telemetry and decision loop the local and k8s backends share.
- :mod:`chaos.backends.online`: ``--online``, each controller deciding through the production path
  (:mod:`rlctl.online`) inside a local run.
"""
