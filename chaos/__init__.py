"""Chaos validation: scenarios, one runner, and the backends that run them.

Backend-neutral: :mod:`chaos.spec` (scenarios and faults, pure data; the floor of every layer),
:mod:`chaos.mesh` and :mod:`chaos.schema` (Chaos Mesh manifests and their CRDs),
:mod:`chaos.record` (one run, whatever the backend) and :mod:`chaos.runner` (one scenario, one
backend, several controllers). Each backend's code is under :mod:`chaos.backends`, named by
backend: ``sim``, ``local`` (this host), ``k8s`` (Chaos Mesh); ``live`` is the loop that local
and k8s share, ``online`` the production decision path (``--online``) inside a local run.
:mod:`chaos.local_suite` is the local-backend suite behind ``rlctl validate-real``.
"""
