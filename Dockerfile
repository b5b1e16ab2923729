# keyrelay container image: a static binary on distroless (CA certificates,
# no shell, non-root user 65532), for linux/amd64 and linux/arm64. The build
# stage runs on the builder's platform and cross-compiles (pure Go), so a
# multi-platform build needs no emulation:
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION="$(git describe --tags --always)" \
#     --build-arg REVISION="$(git rev-parse HEAD)" -t keyrelay .
#
# Releases build it through deploy/release/goreleaser.yaml.
# No Docker engine runs in CI: cmd/keyrelay/deploy_test.go checks this file
# (and that its go build line is the Makefile's build target), and `make
# build` builds the binary the same way.

FROM --platform=$BUILDPLATFORM golang:1.26-bookworm AS build
ARG TARGETOS TARGETARCH
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY bridge/ bridge/
COPY cmd/ cmd/
COPY sinks/ sinks/
ARG VERSION=dev
# The same build as `make build`: static, trimmed, version stamped; for the
# platform being built (buildx sets TARGETOS and TARGETARCH).
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/keyrelay ./cmd/keyrelay
# The spool directory, owned by the non-root user (the image has no shell to
# create it later; a new volume takes this ownership).
RUN mkdir -p /out/spool

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
# No LICENSE file in the repository yet: NOASSERTION (SPDX) until there is.
LABEL org.opencontainers.image.title="keyrelay" \
      org.opencontainers.image.description="Redis/ElastiCache keyspace notifications to SQS, SNS or stdout" \
      org.opencontainers.image.url="https://github.com/keyrelay/keyrelay" \
      org.opencontainers.image.source="https://github.com/keyrelay/keyrelay" \
      org.opencontainers.image.documentation="https://github.com/keyrelay/keyrelay/blob/main/docs/deployment.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="NOASSERTION"
COPY --from=build /out/keyrelay /keyrelay
COPY --from=build --chown=65532:65532 /out/spool /var/lib/keyrelay
USER 65532:65532
# The durable spool: records are written here before any sink sees them and
# survive a crash or a container restart as long as the storage does. The
# directory is owned by the non-root user; a Docker volume, and on ECS a bind
# mount whose containerPath is this VOLUME path, start as a copy of it, owner
# included (deploy/ecs and deploy/cloudformation mount task storage here).
# Where a runtime ignores VOLUME (Kubernetes) and the root file system is
# read-only, keyrelay stops at start (exit status 2): mount storage or set KEYRELAY_SPOOL_DIR=""
# (records then wait in memory). What survives where: docs/deployment.md.
ENV KEYRELAY_SPOOL_DIR=/var/lib/keyrelay
VOLUME /var/lib/keyrelay
# /healthz, /readyz and /metrics (KEYRELAY_HTTP_ADDR, default :9180).
EXPOSE 9180
# keyrelay is PID 1 (exec form): SIGTERM stops reading and flushes within
# KEYRELAY_SHUTDOWN_TIMEOUT (25s); give the container a longer stop timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["/keyrelay", "healthcheck"]
ENTRYPOINT ["/keyrelay"]
CMD ["run"]
