"""The README is a front door and the docs stay true: the CLI reference is generated, links resolve."""

from __future__ import annotations

import difflib
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CLI_DOC = REPO / "docs" / "cli.md"
CLI_TITLE = "rlctl command reference (generated from rlctl/cli.py; see tests/test_docs.py)"
REGENERATE = f"python -m typer rlctl.cli utils docs --name rlctl --title '{CLI_TITLE}' --output docs/cli.md"

#: The README opens with exactly these lines, after its title: the two set-up commands.
SETUP = (
    "```bash\n"
    "make demo   # installs everything (.venv, torch CPU, the project, redis/stress-ng/ipmitool, the Go test-bed)"
    " and runs the main job\n"
    "make test   # installs the same, then runs ruff, mypy and pytest\n"
    "```\n"
)
MAX_README_LINES = 200

#: ``[text](target)`` and ``![alt](target "title")``; the target up to whitespace or ``)``.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _docs() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


def _tracked() -> set[Path] | None:
    """Files git tracks (and their folders), or None outside a git checkout."""
    proc = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return None
    files = {REPO / line for line in proc.stdout.splitlines()}
    return files | {parent for path in files for parent in path.parents}


def test_the_cli_reference_is_generated_from_the_typer_app(tmp_path: Path) -> None:
    out = tmp_path / "cli.md"
    command = [sys.executable, "-m", "typer", "rlctl.cli", "utils", "docs", "--name", "rlctl"]
    proc = subprocess.run(
        [*command, "--title", CLI_TITLE, "--output", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    expected = out.read_text()
    committed = CLI_DOC.read_text() if CLI_DOC.exists() else ""
    diff = "".join(
        difflib.unified_diff(committed.splitlines(True), expected.splitlines(True), "docs/cli.md", "generated")
    )
    stale = f"docs/cli.md is stale; regenerate it from the repository root with\n  {REGENERATE}\n{diff}"
    assert committed == expected, stale


def test_the_readme_is_short() -> None:
    lines = README.read_text().splitlines()
    too_long = f"README.md has {len(lines)} lines (at most {MAX_README_LINES}); move detail to docs/"
    assert len(lines) <= MAX_README_LINES, too_long


def test_the_readme_starts_with_the_two_setup_commands() -> None:
    lines = README.read_text().splitlines(keepends=True)
    assert lines[0].startswith("# "), "README.md starts with its title"
    body = "".join(lines[1:]).lstrip("\n")
    assert body.startswith(SETUP), "after its title README.md opens with exactly `make demo` and `make test`"


def _anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in markdown.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


@pytest.mark.parametrize("doc", _docs(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_into_the_repository(doc: Path) -> None:
    tracked = _tracked()
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # a URL (https:, mailto:)
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        inside = path == REPO or REPO in path.parents
        if not inside or not path.exists() or (tracked is not None and path not in tracked):
            broken.append(f"{target} (not a file in the repository)")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target} (no such heading)")
    assert broken == [], (
        f"{doc.relative_to(REPO)}: links that a fresh clone cannot follow (missing, outside the repository "
        f"such as a sibling folder, or not tracked by git): {broken}"
    )
