"""Online commands: ``control``, ``serve``, ``collect``, ``killswitch`` and ``bench serve``."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from policies import registry
from rlctl.commands.groups import bench_app
from rlctl.errors import ConfigError
from rlctl.output import JSON_HELP, STDOUT_PATH

log = logging.getLogger(__name__)


class StaleAction(StrEnum):
    hold = "hold"
    hpa = "hpa"


class Mode(StrEnum):
    act = "act"
    advise = "advise"
    shadow = "shadow"


class Switch(StrEnum):
    on = "on"
    off = "off"
    status = "status"


def register(app: typer.Typer) -> None:

    app.command("control")(control)
    app.command("serve")(serve)
    app.command("collect")(collect)
    app.command("killswitch")(killswitch)
    app.command("shadow-report")(shadow_report)
    bench_app.command("serve")(bench_serve)
    bench_app.command("knob-fanout")(bench_knob_fanout)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _fmt(v: Any, spec: str = ".1f") -> str:
    if isinstance(v, float):
        return "-" if math.isnan(v) else format(v, spec)
    return str(v)


def _status_table(status: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"rlctl control — {status['service']}", show_header=False, expand=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    style = {"policy": "green", "hpa": "green", "fallback": "yellow", "hold": "yellow", "killswitch": "red",
             "dry-run": "cyan"}.get(status["reason"], "white")  # fmt: skip
    cause = f" ({status['cause']})" if status["cause"] else ""
    table.add_row("decision", f"[{style}]{status['reason']}{cause}[/] by {status['controller']}")
    if status.get("mode", "act") != "act":
        table.add_row("mode", f"[cyan]{status['mode']}[/]: decides, writes nothing")
    table.add_row("why", str(status["detail"])[:160])
    table.add_row("P99 / offered", f"{_fmt(status['p99_ms'], '.2f')} ms / {_fmt(status['offered_qps'])} req/s")
    table.add_row("CPU use", _fmt(status["cpu_util"], ".2f"))
    table.add_row("sample age", f"{_fmt(status['sample_age_s'])} s")
    knobs = status["knobs"]
    table.add_row("knobs", ", ".join(f"{k}={v}" for k, v in knobs.items()))
    table.add_row("saturation in 60 s", _fmt(status["saturation"], ".2f"))
    redis = "[green]up[/]" if status["redis_ok"] else "[red]down[/]"
    table.add_row(
        "redis", f"{redis} (buffered: {status['buffered_samples']} samples, {status['buffered_audit']} audit)"
    )
    if status["actuation"]:
        table.add_row("actuation", "; ".join(f"{k}: {v}" for k, v in status["actuation"].items())[:160])
    table.add_row("steps", str(status["steps"]))
    return table


#: Samples a residual policy's request carries over HTTP: its capacity rule looks back 300 s (5 s samples).
RESIDUAL_WINDOW = 60


def control(
    service: Annotated[str, typer.Option(help="Service name (Redis streams rlctl:telemetry:<service>).")],
    metrics: Annotated[
        str | None, typer.Option(help="The service's /metrics URL (omit when a collector runs).")
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(
            help="A Prometheus server's base URL to read the service's telemetry from with PromQL, instead of "
            "--metrics (rlctl/online/prometheus.py has the default queries, for gosvc)."
        ),
    ] = None,
    prometheus_config: Annotated[
        Path | None,
        typer.Option(help="YAML with the service's PromQL (selector, window, queries) for --prometheus."),
    ] = None,
    admin: Annotated[str | None, typer.Option(help="The service's /admin/knobs URL (runtime knobs).")] = None,
    admin_token_file: Annotated[
        Path | None, typer.Option(help="File with the admin bearer token (else $GOSVC_ADMIN_TOKEN).")
    ] = None,
    knob_endpoints: Annotated[
        str | None,
        typer.Option(
            help="Instead of --admin: every replica's admin URL, comma-separated or a file with one per line; "
            "the runtime knobs go to each, and again to each that missed them."
        ),
    ] = None,
    knob_endpoint_slices: Annotated[
        str | None,
        typer.Option(
            help="Instead of --admin: NAMESPACE/SERVICE whose EndpointSlices list the replicas (e.g. "
            "rlctl/gosvc-admin); the runtime knobs go to every ready one and to each that becomes ready."
        ),
    ] = None,
    knob_port: Annotated[
        str, typer.Option(help="The admin port's name (or number) in --knob-endpoint-slices.")
    ] = "admin",
    k8s_deployment: Annotated[
        str | None, typer.Option(help="NAMESPACE/NAME of the Deployment whose replicas to scale.")
    ] = None,
    kubeconfig: Annotated[Path | None, typer.Option(help="kubeconfig for --k8s-deployment.")] = None,
    context: Annotated[str | None, typer.Option(help="kubeconfig context.")] = None,
    policy_url: Annotated[str | None, typer.Option(help="Policy server base URL (rlctl serve).")] = None,
    policy: Annotated[
        str | None,
        typer.Option(
            help="What decides, in-process: a policy ('default', an artifact folder, ppo:NAME, ppo+guard:NAME) or "
            "the HPA rule (hpa, hpa-<target>, each also +guard); default: the HPA rule. Other controllers "
            "(threshold, static, hpa-tuned, the oracles) run in eval and chaos run only."
        ),
    ] = None,
    redis: Annotated[str, typer.Option(help="Redis URL; 'none' runs without Redis.")] = "redis://127.0.0.1:6379/0",
    interval: Annotated[float, typer.Option(min=0.05, max=3600.0, help="Seconds between decisions.")] = 5.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and audit; change nothing.")] = False,
    mode: Annotated[
        Mode,
        typer.Option(
            help="Who writes: act (the controller actuates; it owns the Deployment's scale), advise (it publishes "
            "rlctl_desired_replicas/rlctl_desired_knob for a KEDA ScaledObject or HPA to carry out, and writes "
            "nothing: deploy/k8s/advise-keda, advise-hpa), shadow (decide and audit only; see rlctl shadow-report)."
        ),
    ] = Mode.act,
    events: Annotated[
        bool,
        typer.Option(
            "--events/--no-events",
            help="With --k8s-deployment: each decision that changes something is a Kubernetes Event on the "
            "Deployment (kubectl describe shows them); needs create/patch on events.",
        ),
    ] = True,
    events_interval: Annotated[
        float, typer.Option(min=0.0, max=3600.0, help="At most one Event write per reason per this many seconds.")
    ] = 30.0,
    guard: Annotated[
        bool, typer.Option("--guard", help="Decide under the SLO guard (policies/guard.py), as ppo+guard in eval.")
    ] = False,
    slo_p99_ms: Annotated[
        float, typer.Option(min=0.001, max=600_000.0, help="P99 objective in ms (the guard's SLO).")
    ] = 8.0,
    capacity_qps: Annotated[
        float | None,
        typer.Option(
            min=0.001,
            max=1e7,
            help="Requests/s one replica serves within 90 % of the SLO (from rlctl probe); a residual policy "
            "(trained with residual: true) scales from it.",
        ),
    ] = None,
    stale_action: Annotated[StaleAction, typer.Option(help="On stale/missing telemetry.")] = StaleAction.hold,
    min_replicas: Annotated[int, typer.Option(min=1)] = 1,
    max_replicas: Annotated[int, typer.Option(min=1)] = 16,
    metrics_port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port for the controller's own /metrics (0: off).")
    ] = 9109,
    metrics_addr: Annotated[str, typer.Option(help="Address for the controller's /metrics.")] = "127.0.0.1",
    allow_msr_writes: Annotated[
        bool, typer.Option("--allow-msr-writes", help="Let the controller flip turbo/prefetch MSRs (whole host).")
    ] = False,
    each_replica: Annotated[
        bool,
        typer.Option(
            "--each-replica",
            help="Resolve the --metrics and --admin hosts to every address (a headless Service): scrape "
            "every replica into one sample and set the runtime knobs on every replica.",
        ),
    ] = False,
    consumer: Annotated[str, typer.Option(help="Consumer name in the group; keep it stable across restarts.")] = "",
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many decisions.")] = None,
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="Boundary rule library (rlctl rules learn): while a rule's fault is detected in the telemetry, "
            "the safety layer forbids the knob settings the rule proved break the service.",
        ),
    ] = None,
    status: Annotated[bool | None, typer.Option("--status/--no-status", help="Live view on stderr.")] = None,
    pareto_every: Annotated[
        float | None,
        typer.Option(
            min=10.0,
            max=86_400.0,
            help="Every this many seconds, compute the knobs' Pareto front for the current load in the simulator and "
            "export its knee (and cheapest, lowest-P99) as rlctl_pareto_* metrics; advisory, never actuated.",
        ),
    ] = None,
    pareto_profile: Annotated[
        Path | None, typer.Option(help="Profile YAML for --pareto-every (default: envs/profiles/testbed.yaml).")
    ] = None,
) -> None:
    """Run the online controller for one service until Ctrl-C or SIGTERM.

    Every interval: scrape -> Redis -> policy (server or in-process; the HPA rule as the
    fallback) -> safety layer -> actuators -> audit. Never exits because a dependency failed.
    On Ctrl-C or SIGTERM it finishes the step in progress, writes the audit records it still
    holds, and exits 0.
    """
    from rlctl.contract import KNOB_FIELDS, KnobBounds
    from rlctl.errors import TelemetryError
    from rlctl.online.actuators import (
        MSR_KNOBS,
        Actuators,
        AdminKnobsActuator,
        K8sScaleActuator,
        MsrActuator,
    )
    from rlctl.online.loop import ControlConfig, ControllerMetrics, ControlLoop
    from rlctl.online.safety import SafetyConfig
    from rlctl.online.store import TelemetryStore

    if policy_url and policy:
        raise ConfigError("pass either --policy-url (a policy server) or --policy (in-process), not both")
    if min_replicas > max_replicas:
        raise ConfigError(f"--min-replicas {min_replicas} is above --max-replicas {max_replicas}")
    if metrics and prometheus:
        raise ConfigError("pass either --metrics (scrape the service) or --prometheus (query Prometheus), not both")
    if prometheus_config is not None and not prometheus:
        raise ConfigError("--prometheus-config needs --prometheus URL (the Prometheus server to query)")
    if metrics is None and prometheus is None and redis == "none":
        raise ConfigError(
            "without --metrics or --prometheus the controller reads telemetry from Redis: pass --redis too"
        )
    interval_s = float(interval)
    allow = tuple(k for k in KNOB_FIELDS if allow_msr_writes or k not in MSR_KNOBS)
    bounds = KnobBounds(min_replicas=min_replicas, max_replicas=max_replicas, allow=allow)
    from rlctl.rules import load_safety_rules

    safety = SafetyConfig(
        bounds=bounds, stale_action=stale_action.value, dry_run=dry_run,  # type: ignore[arg-type]
        rules=load_safety_rules(rules) if rules is not None else (),
    )  # fmt: skip
    plan = registry.control_plan(policy, interval_s=interval_s, bounds=bounds, slo_p99_ms=slo_p99_ms, guard=guard)
    config = ControlConfig(
        service=service, interval_s=interval_s, safety=safety, slo_p99_ms=slo_p99_ms, hpa=plan.hpa, guard=plan.guard,
        mode=mode.value,
    )  # fmt: skip

    replicas = K8sScaleActuator.from_kubeconfig(k8s_deployment, kubeconfig=kubeconfig, context=context) \
        if k8s_deployment else None  # fmt: skip
    from rlctl.online.sources import ReplicaSetScraper, each_address

    knob_source = _knob_source(admin, knob_endpoints, knob_endpoint_slices, knob_port, kubeconfig, context)
    admin_urls: Any = each_address(admin) if (admin and each_replica) else admin
    knob_timeout = min(2.0, interval_s / 4)
    admin_actuator = AdminKnobsActuator(
        admin_urls if knob_source is None else None, endpoints=knob_source, token_file=admin_token_file,
        timeout_s=knob_timeout, budget_s=max(interval_s / 2, knob_timeout),
    ) if admin or knob_source is not None else None  # fmt: skip
    actuators = Actuators(
        admin=admin_actuator,
        replicas=replicas,
        msr=MsrActuator(allow_writes=True) if allow_msr_writes else None,
    )
    if mode is not Mode.act:  # reads (the scale, /admin/knobs) go through; every write is refused
        from rlctl.online.actuators import ReadOnlyActuators

        actuators = ReadOnlyActuators(actuators, mode=mode.value)
    decision_events = None
    if k8s_deployment and events:
        from rlctl.k8s_scale import kube_api_client
        from rlctl.online.events import DecisionEvents

        decision_events = DecisionEvents(
            kube_api_client(kubeconfig, context), k8s_deployment, mode=mode.value,
            slo_p99_ms=slo_p99_ms, min_interval_s=events_interval, series_s=max(600.0, events_interval),
        )  # fmt: skip
    scrape = None
    if metrics:
        from rlctl.telemetry.scrape import Scraper

        # A saturated service answers /metrics slowly, exactly when the loop must act: be patient.
        scrape_timeout = min(3.0, 0.6 * interval_s)
        scraper: Any = (
            ReplicaSetScraper(each_address(metrics), service=service, timeout_s=scrape_timeout)
            if each_replica
            else Scraper(metrics, service=service, timeout_s=scrape_timeout)
        )
        try:
            scraper.scrape()  # so the first decision already has rates
        except TelemetryError as exc:
            log.warning("first scrape failed (%s); holding until the service answers", exc)
        scrape = scraper.scrape
    elif prometheus:
        from rlctl.online.prometheus import PrometheusConfig, PrometheusSource, load_config

        prom_config = load_config(prometheus_config) if prometheus_config is not None else PrometheusConfig()
        scrape = PrometheusSource(prometheus, prom_config, service=service).scrape
    store = None
    if redis != "none":
        import socket

        store = TelemetryStore(redis, consumer=consumer or f"{socket.gethostname()}-{service}",
                               timeout_s=min(1.0, interval_s / 2))  # fmt: skip
        if not store.ping():
            log.warning("redis %s does not answer now; starting anyway and falling back until it does", redis)
    client: Any = None
    if policy_url:
        from rlctl.online.policy import HttpPolicy

        window = max(config.window, RESIDUAL_WINDOW) if capacity_qps is not None else None
        client = HttpPolicy(
            policy_url, timeout_s=config.effective_policy_timeout_s, capacity_qps=capacity_qps, window=window
        )
    elif plan.policy is not None:
        from rlctl.online.policy import InProcessPolicy

        client = InProcessPolicy(plan.policy, capacity_qps=capacity_qps)
    else:
        what = f"{plan.spec.name}:" if plan.spec is not None else "No policy given:"
        _console().print(f"[yellow]{what} the HPA rule is the controller.[/]")
    loop_metrics = ControllerMetrics()
    if metrics_port:
        loop_metrics.serve(metrics_port, metrics_addr)
    loop = ControlLoop(
        config, actuators, scrape=scrape, store=store, policy=client, metrics=loop_metrics, events=decision_events
    )
    refresher = None
    if pareto_every is not None:  # advisory: reads the loop's telemetry, publishes in its registry, never actuates
        from rlctl.online.pareto_refresh import RefreshConfig, start_for_loop

        refresh = RefreshConfig(service=service, every_s=pareto_every, slo_p99_ms=slo_p99_ms, bounds=bounds)
        refresher = start_for_loop(loop, refresh, profile=pareto_profile)
    show = sys.stderr.isatty() if status is None else status
    # SIGTERM (a pod's termination, systemd's stop) ends the loop after the step in progress, so
    # no actuation is cut in half and the buffered audit records are written before exit.
    import signal

    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: loop.stop())
    try:
        if show:
            from rich.live import Live

            with Live(_status_table(loop.status()), console=_console(), refresh_per_second=4) as live:
                loop.run(max_steps=max_steps, on_step=lambda _r: live.update(_status_table(loop.status())))
        else:
            loop.run(max_steps=max_steps)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        if refresher is not None:
            refresher.stop()
        if hasattr(knob_source, "stop"):  # the EndpointSlice watch
            knob_source.stop()
        _console().print(f"stopped after {loop.steps} decisions")


def _knob_source(
    admin: str | None,
    endpoints: str | None,
    slices: str | None,
    port: str,
    kubeconfig: Path | None,
    context: str | None,
) -> Any:
    """The replicas the runtime knobs go to: ``None`` (``--admin``), a static list or the EndpointSlices."""
    given = [name for name, v in (("--admin", admin), ("--knob-endpoints", endpoints),
                                  ("--knob-endpoint-slices", slices)) if v]  # fmt: skip
    if len(given) > 1:
        raise ConfigError(f"pass one of {', '.join(given)}: each names the replicas the runtime knobs go to")
    from rlctl.online.fanout import EndpointSliceSource, parse_endpoint_list, static_endpoints

    if endpoints:
        return static_endpoints(parse_endpoint_list(endpoints, where="--knob-endpoints"))
    if slices:
        from rlctl.k8s_scale import kube_api_client

        number = int(port) if port.isdigit() else port
        source = EndpointSliceSource.from_spec(slices, api_client=kube_api_client(kubeconfig, context), port=number)
        return source.start()
    return None


def serve(
    policy: Annotated[str, typer.Option(help="'default' or an artifact folder.")] = "default",
    host: Annotated[str, typer.Option(help="HTTP host of the Serve proxy.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="HTTP port of the Serve proxy.")] = 8000,
    num_cpus: Annotated[int, typer.Option(min=1, help="CPUs for the local Ray instance.")] = 2,
    echo: Annotated[bool, typer.Option("--echo", help="Also deploy a trivial echo app at /echo.")] = False,
    write_config: Annotated[
        Path | None, typer.Option(help="Write a Serve config YAML for `serve deploy` and exit.")
    ] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Replicas in the written config.")] = 1,
) -> None:
    """Serve the policy with Ray Serve (POST /act) on local Ray until Ctrl-C, or write its Serve config."""
    if write_config is not None:
        from rlctl.online.serve_config import write_serve_config

        # The path as the Ray workers see it; "default" resolves to the artifact shipped in the package.
        out = write_serve_config(write_config, policy, num_replicas=replicas)
        typer.echo(str(out))
        return
    from policies.artifact import load_artifact

    load_artifact(policy)  # fail fast, with the artifact's own message, before starting Ray
    from rlctl.online.serve import LocalServe

    server = LocalServe(policy, host=host, port=port, num_cpus=num_cpus, with_echo=echo)
    with _console().status(f"Starting Ray ({num_cpus} CPUs) and Serve on {host}:{port}..."):
        server.start()
    _console().print(f"serving {policy} at {server.url}/act (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def collect(
    service: Annotated[str, typer.Option(help="Service name.")],
    metrics: Annotated[str, typer.Option(help="The service's /metrics URL.")],
    redis: Annotated[str, typer.Option(help="Redis URL.")] = "redis://127.0.0.1:6379/0",
    interval: Annotated[float, typer.Option(min=0.05, max=3600.0, help="Seconds between scrapes.")] = 5.0,
    maxlen: Annotated[int, typer.Option(min=1, help="Approximate cap on the stream's length.")] = 100_000,
    max_samples: Annotated[int | None, typer.Option(help="Stop after this many scrapes.")] = None,
) -> None:
    """Scrape /metrics every interval into rlctl:telemetry:<service> (buffering while Redis is away)."""
    from rlctl.errors import TelemetryError
    from rlctl.online.store import Collector, TelemetryStore
    from rlctl.telemetry.scrape import Scraper

    scraper = Scraper(metrics, service=service, timeout_s=min(3.0, 0.6 * interval))
    with contextlib.suppress(TelemetryError):
        scraper.prime()
    store = TelemetryStore(redis, maxlen=maxlen, timeout_s=min(1.0, interval / 2))
    collector = Collector(scraper.scrape, store)
    with contextlib.suppress(KeyboardInterrupt):
        collector.run(interval, iterations=max_samples)
    _console().print(f"wrote {collector.written} samples ({len(collector.pending)} still buffered)")


def killswitch(
    state: Annotated[Switch, typer.Argument(help="on, off or status.")],
    service: Annotated[str | None, typer.Option(help="One service (default: every controller).")] = None,
    redis: Annotated[str, typer.Option(help="Redis URL.")] = "redis://127.0.0.1:6379/0",
    reason: Annotated[str, typer.Option(help="Why (stored as the switch's value).")] = "set by rlctl killswitch",
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """Stop (on) or allow (off) all actuation by rlctl controllers, through a key in Redis."""
    from rlctl.errors import TelemetryError
    from rlctl.online.store import TelemetryStore
    from rlctl.output import JsonOut

    with JsonOut(json_out, indent=None) as out:
        store = TelemetryStore(redis)
        try:
            if state is Switch.status:
                why = store.killswitch(service or "*")
                out.write({"killswitch": why is not None, "why": why})
                return
            store.set_killswitch(state is Switch.on, service=service, reason=reason)
        except TelemetryError as exc:
            raise ConfigError(str(exc)) from None
        out.write({"killswitch": state.value, "service": service})


def shadow_report(
    service: Annotated[str, typer.Option(help="The service a shadow controller ran for (its audit stream).")],
    redis: Annotated[str, typer.Option(help="Redis URL.")] = "redis://127.0.0.1:6379/0",
    last_s: Annotated[
        float | None, typer.Option(min=1.0, max=1e8, help="Only the decisions of the last this many seconds.")
    ] = None,
    slo_p99_ms: Annotated[float, typer.Option(min=0.001, max=600_000.0, help="P99 objective in ms.")] = 8.0,
    prometheus: Annotated[
        str | None,
        typer.Option(help="Take what the autoscaler ran from this Prometheus (--replicas-query) instead of the audit."),
    ] = None,
    replicas_query: Annotated[
        str, typer.Option(help="PromQL of the replicas that ran, for --prometheus.")
    ] = "count(up == 1)",
    all_modes: Annotated[
        bool, typer.Option("--all-modes", help="Compare every audit record, not only those of shadow mode.")
    ] = False,
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """What a shadow controller would have done against what the running autoscaler did, over the same window.

    Reads rlctl:audit:<service> (each decision, the knobs in effect, the knobs it would have
    set) and rlctl:telemetry:<service> (the P99 at each decision); one JSON object.
    """
    from rlctl.errors import TelemetryError
    from rlctl.online.modes import shadow_report as report
    from rlctl.online.store import TelemetryStore
    from rlctl.output import JsonOut

    with JsonOut(json_out, indent=None) as out:
        store = TelemetryStore(redis)
        try:
            records = store.audit_records(service)
            samples = [e.sample for e in store.entries(service) if e.sample is not None]
        except TelemetryError as exc:
            raise ConfigError(f"--redis {redis}: {exc}") from None
        mode = None if all_modes else "shadow"
        kept = [r for r in records if mode is None or (r.actuation or {}).get("mode") == mode]
        if not kept:
            raise ConfigError(
                f"no {'' if all_modes else 'shadow-mode '}decisions of service {service!r} in {redis} "
                f"({len(records)} audit records): run `rlctl control --service {service} --mode shadow` first"
                + ("" if all_modes else ", or pass --all-modes")
            )
        end = max(r.time_s for r in kept)
        start = end - last_s if last_s is not None else min(r.time_s for r in kept)
        observed = None
        if prometheus:
            from rlctl.online.prometheus import PrometheusConfig, PrometheusSource

            source = PrometheusSource(prometheus, PrometheusConfig(queries={"replicas": replicas_query}))
            try:
                observed = source.range("replicas", start, end + 60.0, 1.0)
            except TelemetryError as exc:
                raise ConfigError(f"--prometheus {prometheus} --replicas-query {replicas_query!r}: {exc}") from None
        out.write(report(records, telemetry=samples, observed=observed, slo_p99_ms=slo_p99_ms, start_s=start,
                         end_s=end, only_mode=mode))  # fmt: skip


def bench_serve(
    policy: Annotated[
        str | None,
        typer.Option(
            help="Artifact to serve (default: the shipped one, else an untrained placeholder of the same architecture)."
        ),
    ] = None,
    requests: Annotated[int, typer.Option(min=10, help="Sequential requests per latency measurement.")] = 300,
    services: Annotated[int, typer.Option(min=64, help="Services decided per throughput round.")] = 2048,
    group: Annotated[int, typer.Option(min=1, help="Services per multi-service request.")] = 64,
    concurrency: Annotated[int, typer.Option(min=1, help="HTTP requests in flight.")] = 128,
    redis_samples: Annotated[int, typer.Option(min=1000, help="Samples XADDed into Redis.")] = 50_000,
    num_cpus: Annotated[int, typer.Option(min=1, help="CPUs for the local Ray instance.")] = 2,
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """Policy latency vs an echo deployment, batched decisions/s, and Redis ingest; one JSON object."""
    from rlctl.online.bench import bench_serve as run
    from rlctl.output import JsonOut

    console = _console()
    # Ray's workers and redis-server inherit this process's stdout: with --json -, it is stderr until the end.
    with JsonOut(json_out, indent=None) as out:
        out.write(run(policy, requests=requests, services=services, concurrency=concurrency, group=group,
                      redis_samples=redis_samples, num_cpus=num_cpus,
                      progress=lambda msg: console.print(f"[dim]{msg}[/]")))  # fmt: skip


def bench_knob_fanout(
    replicas: Annotated[
        str, typer.Option(help="Replica counts to measure, comma-separated (real gosvc processes, 1..250).")
    ] = "3,20",
    repeats: Annotated[int, typer.Option(min=1, max=1000, help="Knob changes timed per replica count.")] = 20,
    json_out: Annotated[Path, typer.Option("--json", help=f"Write the JSON here {JSON_HELP}.")] = STDOUT_PATH,
) -> None:
    """Wall time of one runtime-knob change reaching every replica (parallel and one by one); one JSON object."""
    from rlctl.online.fanout_bench import bench_knob_fanout as run
    from rlctl.output import JsonOut

    try:
        sizes = [int(v) for v in replicas.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--replicas {replicas!r}: write replica counts as integers, e.g. 3,20") from None
    if not sizes or any(not 1 <= n <= 250 for n in sizes):
        raise ConfigError(f"--replicas {replicas!r}: each count between 1 and 250, e.g. 3,20")
    console = _console()
    with JsonOut(json_out, indent=None) as out:
        out.write(run(sizes, repeats=repeats, progress=lambda msg: console.print(f"[dim]{msg}[/]")))
