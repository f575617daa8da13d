"""Chaos validation: fault and scenario specs, backends (sim, local, Chaos Mesh), runner."""
