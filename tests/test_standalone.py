"""A clone stands alone: the data the product and its tests use ships inside the repository and the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Package data a user's installation needs, each with the licence it came under.
SHIPPED = (
    "chaos/schemas/chaos-mesh/LICENSE",
    "chaos/schemas/chaos-mesh/chaos-mesh.org_podchaos.yaml",
    "chaos/schemas/chaos-mesh/chaos-mesh.org_workflows.yaml",
    "chaos/traces/nasa-1995-requests-per-minute.txt.gz",
    "chaos/traces/README.md",
    "chaos/scenarios/real/nasa-replay.yaml",
    "rlctl/schemas/kuberay/LICENSE",
    "rlctl/schemas/kuberay/ray.io_rayservices.yaml",
    "policies/artifacts/default/model.zip",
    "envs/profiles/testbed.yaml",
)


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / line for line in out.splitlines()]


def test_no_code_reads_a_folder_beside_the_repository() -> None:
    # Users clone one repository: a path that climbs out of it, or an environment variable that
    # points at data the repository should carry, only works on the developers' machines.
    offenders = []
    for path in tracked_files():
        if path.suffix not in {".py", ".sh", ".yaml", ".yml", ".go", ".toml"} and path.name not in {"Makefile", "run"}:
            continue
        # This test and .ci/run name the folder to check that it is absent; results record past commands.
        if path in {Path(__file__).resolve(), REPO / ".ci" / "run"} or "deploy/results" in path.as_posix():
            continue
        text = path.read_text(errors="replace")
        for needle in ("../shared", "RLCTL_SHARED", "RLCTL_TRACE"):
            if needle in text:
                offenders.append(f"{path.relative_to(REPO)}: {needle}")
    assert offenders == []


@pytest.mark.parametrize("name", SHIPPED)
def test_the_data_is_in_the_repository(name: str) -> None:
    assert (REPO / name).is_file() and (REPO / name) in set(tracked_files())


def test_the_wheel_carries_the_data(tmp_path: Path) -> None:
    # `pip install .` (not only an editable checkout) must find its schemas, traces and policy.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), REPO],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("rlctl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert [n for n in SHIPPED if n not in names] == []
