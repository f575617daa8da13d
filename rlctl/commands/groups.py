"""Typer groups that several command modules add commands to (``rlctl bench ...``).

Here, not in one of those modules, so the command modules do not import each other for them.
"""

from __future__ import annotations

import typer

bench_app = typer.Typer(help="Benchmarks; each prints one JSON object.", no_args_is_help=True)
