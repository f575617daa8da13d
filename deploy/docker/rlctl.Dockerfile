# syntax=docker/dockerfile:1.7
# rlctl: the controller (`rlctl control`), the policy server (Ray Serve, in KubeRay's
# RayService: the Ray head and workers run this image) and the trainer (`rlctl train`).
# Build from the repository root:
#   docker build -f deploy/docker/rlctl.Dockerfile -t rlctl:0.1.0 .
# The default policy (policies/artifacts/*) lands in /artifacts, where the RayService's Serve
# config (deploy/k8s/base/rayservice.yaml) loads it.

# The Python of the tested environment (the project's .venv).
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Pinned to what `make install` tests with; RAY_VERSION is also the RayService's rayVersion
# (rlctl/deploy.py RAY_VERSION; tests/test_deploy_docker.py keeps them equal).
ARG TORCH_VERSION=2.13.0
ARG RAY_VERSION=2.60.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index: the one on PyPI pulls the CUDA build (gigabytes of GPU
# libraries this image never uses); the project's own pin (torch<=2.13.0) keeps it.
RUN pip install "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu
RUN pip install "ray[serve,tune]==${RAY_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY rlctl ./rlctl
COPY envs ./envs
COPY policies ./policies
COPY chaos ./chaos
# The extras this image runs: `serve` (the policy server, the controller) and `train` (the
# trainer); not `testbed` (the Go toolchain) or `dev`.
RUN pip install ".[serve,train]" \
    && python -c "import rlctl.cli, envs, policies, chaos, rlctl.online.serve, policies.distributed" \
    && mkdir -p /artifacts \
    && if [ -d policies/artifacts ]; then cp -r policies/artifacts/. /artifacts/; fi

FROM ${PYTHON_IMAGE} AS runtime
# bash and wget: KubeRay starts Ray with `bash -lc` and probes the raylet with wget. A login
# shell runs Debian's /etc/profile, which resets PATH: profile.d puts the venv back in front.
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget \
    && rm -rf /var/lib/apt/lists/* \
    && echo 'export PATH=/opt/venv/bin:$PATH' > /etc/profile.d/rlctl-venv.sh \
    && groupadd --gid 10001 rlctl \
    && useradd --uid 10001 --gid 10001 --create-home --shell /bin/bash rlctl
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=10001:10001 /artifacts /artifacts
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# Numeric, so the kubelet can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/rlctl
ENTRYPOINT ["rlctl"]
CMD ["--help"]
