"""The k8s chaos backend: :mod:`.inject` creates and deletes Chaos Mesh objects on time,
:mod:`.backend` runs ``rlctl chaos run --backend k8s`` (injection next to the live loop)."""
