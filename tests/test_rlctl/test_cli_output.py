"""The CLI as a tool: ``--json PATH`` ('-' = stdout and nothing else), ``--version``, completion, progress bars.

Stdout purity is checked on the real stdout of a subprocess: what a pipe into a JSON parser sees.
The rest runs in-process through ``rlctl.cli.main`` (``invoke_rlctl``).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, invoke_rlctl, run_rlctl

from rlctl.progress import progress_bar


def test_version_prints_the_package_version() -> None:
    from importlib.metadata import version

    r = invoke_rlctl("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"rlctl {version('rlctl')}\n"


def test_show_completion_prints_a_bash_script() -> None:
    r = invoke_rlctl("--show-completion", "bash")
    assert r.returncode == 0, r.stderr
    assert "complete" in r.stdout and "_RLCTL_COMPLETE" in r.stdout


def test_json_dash_keeps_children_prints_and_tables_off_stdout() -> None:
    """The mechanism: inside ``JsonOut('-')`` a child process, print() and a Rich table all land on stderr."""
    code = textwrap.dedent(
        """
        import subprocess, sys
        from rich.console import Console
        from rlctl.output import JsonOut

        with JsonOut("-") as out:
            subprocess.run([sys.executable, "-c", "print('child on fd 1')"], check=True)
            print("a print")
            Console().print("a rich line")
            out.write({"ok": True})
        print("after", file=sys.stderr)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"ok": True}
    assert r.stdout == '{\n  "ok": true\n}\n'
    for line in ("child on fd 1", "a print", "a rich line", "after"):
        assert line in r.stderr


def test_json_dash_writes_nothing_to_stdout_on_an_error() -> None:
    code = textwrap.dedent(
        """
        from rlctl.output import JsonOut

        try:
            with JsonOut("-") as out:
                out.write({"half": True})
                print("noise")
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "noise" in r.stderr


@pytest.mark.real  # the console script: its real stdout is what a pipe sees
def test_eval_json_dash_puts_only_the_report_on_stdout() -> None:
    """``rlctl eval`` prints a wide table; with ``--json -`` the table goes to stderr and stdout parses."""
    r = run_rlctl("eval", "--baseline", "static", "--suite", "smoke", "--seeds", "1", "--json", "-", timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert "scenarios" in report and report["seeds"] == [0]
    assert "static" in r.stderr  # the table, on stderr
    assert "\x1b[" not in r.stderr  # stderr is no terminal: no progress bar drawn


def test_json_path_writes_the_file_and_keeps_stdout_empty(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "topology.json"
    r = invoke_rlctl("topology", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert json.loads(out.read_text())["logical_cpus"] >= 1
    r = invoke_rlctl("topology", "--json", "-")
    assert r.returncode == 0 and json.loads(r.stdout)["logical_cpus"] >= 1


def test_every_json_option_takes_a_path() -> None:
    """No command keeps the old boolean ``--json``: each one's help shows a value for it."""
    import typer.main

    from rlctl.cli import app

    group = typer.main.get_command(app)
    seen = 0

    def walk(cmd: object, path: str) -> None:
        nonlocal seen
        for param in getattr(cmd, "params", []):
            if "--json" in getattr(param, "opts", []):
                seen += 1
                assert not param.is_flag, f"{path}: --json is a flag"
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(group, "rlctl")
    assert seen >= 14


@pytest.mark.real  # Ray, redis-server
@pytest.mark.slow
def test_bench_serve_json_dash_is_parseable_despite_ray() -> None:
    """Ray's workers, redis-server and the bench's own progress lines stay off stdout."""
    r = run_rlctl(
        "bench", "serve", "--requests", "20", "--services", "128", "--group", "16", "--concurrency", "16",
        "--redis-samples", "1000", "--json", "-", timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout)
    assert result["batched_decisions_per_s"] > 0 and result["redis_samples"] == 1000
    assert "ray serve: starting" in r.stderr


# --------------------------------------------------------------------------- the progress helper


def test_progress_bar_is_silent_off_a_terminal() -> None:
    from rich.console import Console

    buf = io.StringIO()
    with progress_bar("working", total=4, console=Console(file=buf)) as bar:
        for _ in range(4):
            bar.advance()
        bar.update(description="still working")
        bar.follow_clock(0, 10)
    assert buf.getvalue() == ""


def test_progress_bar_renders_on_a_terminal() -> None:
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    with progress_bar("working", total=4, console=console, transient=False) as bar:
        bar.log("a note above the bar")
        for _ in range(4):
            bar.advance()
    text = buf.getvalue()
    assert "working" in text and "4/4" in text and "a note above the bar" in text


def test_progress_bar_log_prints_plain_lines_off_a_terminal() -> None:
    from rich.console import Console

    buf = io.StringIO()
    with progress_bar("measuring", console=Console(file=buf)) as bar:
        bar.log("scout 1,50,1024: capacity ~900 qps")
    assert buf.getvalue() == "scout 1,50,1024: capacity ~900 qps\n"


def test_progress_bar_by_default_watches_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar("quiet", total=2) as bar:
        bar.advance(2)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
