"""Write the generated manifests of deploy/k8s (or check them with --check).

- ``base/rayservice.yaml``: the KubeRay RayService, from :func:`rlctl.deploy.render_rayservice_yaml`
  (its ``serveConfigV2`` is the project's Serve config);
- ``chaos-examples/<scenario>.yaml``: ``rlctl chaos render chaos/scenarios/<scenario>.yaml --run-id example``.

Run from anywhere with the project installed:  python deploy/k8s/generate.py [--check]
Exit codes: 0 written / up to date, 1 a committed file is stale (--check), 2 rendering failed.
"""

from __future__ import annotations

import argparse
import difflib
import subprocess
import sys
import tempfile
from pathlib import Path

from rlctl.deploy import chaos_example_paths, chaos_render_args, render_rayservice_yaml

REPO = Path(__file__).resolve().parents[2]
RAYSERVICE = REPO / "deploy" / "k8s" / "base" / "rayservice.yaml"


def rendered() -> dict[Path, str]:
    """Every generated file -> its expected text."""
    out = {RAYSERVICE: render_rayservice_yaml()}
    rlctl = Path(sys.executable).parent / "rlctl"
    with tempfile.TemporaryDirectory() as tmp:
        for scenario, example in chaos_example_paths(REPO):
            target = Path(tmp) / example.name
            proc = subprocess.run(
                [str(rlctl), *chaos_render_args(scenario.relative_to(REPO), target)],
                capture_output=True,
                text=True,
                cwd=REPO,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"rlctl chaos render {scenario.name}: exit {proc.returncode}: {proc.stderr.strip()}")
            out[example] = target.read_text()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed files; write nothing")
    args = parser.parse_args()
    try:
        files = rendered()
    except RuntimeError as exc:
        print(f"RuntimeError: {exc}", file=sys.stderr)
        return 2
    stale = 0
    for path, text in files.items():
        current = path.read_text() if path.exists() else ""
        if current == text:
            continue
        if args.check:
            stale += 1
            rel = str(path.relative_to(REPO))
            diff = difflib.unified_diff(current.splitlines(True), text.splitlines(True), rel, f"{rel} (generated)")
            sys.stdout.writelines(diff)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print(f"{stale} generated file(s) are stale: run `python deploy/k8s/generate.py`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
