"""The ``rlctl`` command line (Typer + Rich).

Each area registers its commands from a module in :mod:`rlctl.commands`; those modules
import their heavy dependencies inside the command functions, so ``rlctl --help`` stays
fast. Errors of rlctl's own hierarchy are caught here only: ``Type: message`` on stderr
and the error's exit code (2 bad input, 1 check failed), no traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

app = typer.Typer(
    name="rlctl",
    help="Reinforcement-learning boundary control for Go microservices.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

#: Modules under rlctl.commands that define ``register(app)``.
COMMAND_MODULES: tuple[str, ...] = (
    "core",
    "boundary",
    "policy",
    "chaos",
    "chaos_run",
    "control",
    "sim2real",
    "validate_real",
    "pareto",
    "rules",
    "fleet",
)


def _register() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"rlctl.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"rlctl.commands.{name}":
                continue
            raise
        module.register(app)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"rlctl {version('rlctl')}")
        except PackageNotFoundError:
            typer.echo("rlctl (not installed: no package metadata)")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print rlctl's version and exit."
    ),
) -> None:
    """Reinforcement-learning boundary control for Go microservices."""


_register()


def usage_line(exc: typer.TyperException) -> str:
    """A usage error as the one line the README promises: ``UsageError: rlctl eval: message; see --help``."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "rlctl"
    return f"UsageError: {where}: {message}; see '{where} --help'"


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every error is one line ``Type: message`` and an exit code."""
    from rlctl.errors import RlctlError

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="rlctl", standalone_mode=False)
    except typer.TyperException as exc:  # Typer's usage errors: bad or missing values, unknown options
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: its help (Rich prints it already)
            if exc.format_message().strip():
                typer.echo(exc.format_message(), err=True)
        else:
            typer.echo(usage_line(exc), err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        sys.exit(130)
    except RlctlError as exc:
        typer.echo(f"{type(exc).__name__}: {exc}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
