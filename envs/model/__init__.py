"""Simulator physics: pure, vectorised numpy functions, each with its formula and source.

Every function takes ``xp`` (:mod:`rlctl.xp`): ``NUMPY`` (the default) evaluates it over
numpy arrays, ``SCALAR`` evaluates the same expressions on one service's Python floats
(the single environment's fast path). ``tests/test_rlctl/test_xp.py`` pins the two together.
"""
