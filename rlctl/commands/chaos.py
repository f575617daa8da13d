"""``rlctl chaos``: chaos-validation commands.

:data:`chaos_app` is the ``chaos`` sub-app; other modules add their commands to it with
``@chaos_app.command("run")`` and it is mounted on the root app by :func:`register`.
Here:

- ``rlctl chaos render SCENARIO.yaml [--run-id ID] [--namespace NS]``: the scenario as Chaos
  Mesh manifests (multi-document YAML, schema-checked), ready for ``kubectl apply -f -``;
- ``rlctl chaos cleanup --backend k8s (--run-id ID | --all) --namespace NS ...``: delete
  what rlctl created in those namespaces.

Heavy dependencies (pydantic models, kubernetes, jsonschema) are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from rlctl.errors import ChaosError, ConfigError
from rlctl.output import JSON_HELP

if TYPE_CHECKING:
    from rlctl.output import JsonOut

chaos_app = typer.Typer(
    name="chaos",
    help="Chaos validation: render scenarios as Chaos Mesh objects, run them, clean up.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Mount ``rlctl chaos`` on the root app."""
    app.add_typer(chaos_app, name="chaos")


@chaos_app.command("render")
def render(
    scenario: Path = typer.Argument(..., help="Scenario YAML file (see chaos/scenarios/)."),
    run_id: str | None = typer.Option(
        None, "--run-id", help="Run id in every name and label (default: a new one, time + random)."
    ),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="Namespace for faults whose selector names none."
    ),
    validate: bool = typer.Option(
        True, "--validate/--no-validate", help="Check each manifest against the Chaos Mesh CRD schema."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write the YAML here instead of stdout."),
) -> None:
    """Print SCENARIO as Chaos Mesh manifests (a Schedule per repeating fault, a Workflow per sequence)."""
    from chaos import mesh
    from chaos.spec import load_scenario

    spec = load_scenario(scenario)
    rid = mesh.check_run_id(run_id) if run_id else mesh.new_run_id()
    try:
        manifests = mesh.render_scenario(spec, run_id=rid, namespace=namespace)
        if validate:
            from chaos.schema import validate_manifest

            for manifest in manifests:
                validate_manifest(manifest)
    except ChaosError as exc:
        raise ChaosError(f"{scenario}: {exc}") from None
    text = mesh.to_yaml(manifests)
    if output is None:
        typer.echo(text, nl=False)
    else:
        from rlctl.report import write_atomic

        write_atomic(output, text)
        typer.echo(f"wrote {len(manifests)} manifest(s) for run id {rid} to {output}", err=True)


@chaos_app.command("cleanup")
def cleanup(
    backend: str = typer.Option("k8s", "--backend", help="Backend whose leftovers to remove: k8s or local."),
    run_id: str | None = typer.Option(None, "--run-id", help="Delete the objects of this run."),
    all_runs: bool = typer.Option(False, "--all", help="Delete every object rlctl created, of any run."),
    namespace: list[str] = typer.Option(
        [], "--namespace", "-n", help="Namespace to clean (repeatable); only these are touched."
    ),
    kubeconfig: Path | None = typer.Option(None, "--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG)."),
    context: str | None = typer.Option(None, "--context", help="Kubeconfig context."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be deleted; delete nothing."),
    json_out: Path | None = typer.Option(
        None, "--json", help=f"Write the deleted objects as JSON here instead of a table {JSON_HELP}."
    ),
    timeout_s: float = typer.Option(
        120.0, "--timeout", min=0.0, max=86_400.0, help="Seconds to wait for each object to disappear."
    ),
) -> None:
    """Revert what a chaos run left behind.

    k8s: delete the Chaos Mesh objects labelled app.kubernetes.io/managed-by=rlctl (of one run, or all).
    local: revert the faults recorded in the run journal (kill stress-ng, proxies and replicas, resume
    stopped processes, restore CPU quotas, remove cgroups); without --run-id or --all, only runs whose
    owner process is dead.
    """
    from rlctl.output import JsonOut

    with JsonOut(json_out) as out:
        _cleanup(out, backend, run_id, all_runs, namespace, kubeconfig, context, dry_run, timeout_s)


def _cleanup(
    out: JsonOut,
    backend: str,
    run_id: str | None,
    all_runs: bool,
    namespace: list[str],
    kubeconfig: Path | None,
    context: str | None,
    dry_run: bool,
    timeout_s: float,
) -> None:
    if backend == "local":
        from chaos.backends.local import cleanup as local_cleanup

        reverted = local_cleanup(run_id, all_runs)
        if out.dest is not None:
            out.write({"backend": "local", "reverted": reverted})
        else:
            typer.echo("\n".join(reverted) if reverted else "nothing to revert")
        return
    if backend != "k8s":
        raise ConfigError(
            f"--backend {backend}: choose k8s or local; the sim backend leaves nothing behind to clean up"
        )
    if (run_id is None) == (not all_runs):
        raise ConfigError("pass exactly one of --run-id ID (one run's objects) or --all (every run's)")
    if not namespace:
        raise ConfigError("pass --namespace NS (repeatable): cleanup touches only the namespaces you name")
    from chaos.backends.k8s.inject import ChaosMeshBackend

    chaos = ChaosMeshBackend(
        namespace, kubeconfig=kubeconfig, context=context, dry_run=dry_run, delete_timeout_s=timeout_s
    )
    removed = chaos.cleanup(run_id)
    if out.dest is not None:
        out.write({"dry_run": dry_run, "objects": removed})
        return
    _print_removed(removed, dry_run=dry_run, run_id=run_id)


def _print_removed(removed: list[str], *, dry_run: bool, run_id: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    which = f"run {run_id}" if run_id else "any run"
    if not removed:
        console.print(f"nothing to clean up ({which})")
        return
    table = Table(title=f"{'would delete' if dry_run else 'deleted'} ({which})")
    for column in ("kind", "namespace", "name"):
        table.add_column(column)
    for ident in removed:
        table.add_row(*ident.split("/", 2))
    console.print(table)
