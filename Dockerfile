# keyrelay container image: a static binary on distroless (CA certificates,
# no shell, non-root user 65532).
#
#   docker build --build-arg VERSION="$(git describe --tags --always)" -t keyrelay .
#
# No Docker engine runs in CI: cmd/keyrelay/deploy_test.go checks this file
# (and that its go build line is the Makefile's build target), and `make
# build` builds the binary the same way.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY bridge/ bridge/
COPY cmd/ cmd/
COPY sinks/ sinks/
ARG VERSION=dev
# The same build as `make build`: static, trimmed, version stamped.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/keyrelay ./cmd/keyrelay
# The spool directory, owned by the non-root user (the image has no shell to
# create it later; a new volume takes this ownership).
RUN mkdir -p /out/spool

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyrelay /keyrelay
COPY --from=build --chown=65532:65532 /out/spool /var/lib/keyrelay
USER 65532:65532
# The place for the durable spool, owned by the non-root user: set
# KEYRELAY_SPOOL_DIR=/var/lib/keyrelay to use it (records then survive a
# crash or a container restart as long as the volume does; on Fargate task
# storage goes with the task: see docs/delivery.md). Not set by default
# until the deploy kit mounts storage there: an unwritable spool directory
# stops keyrelay at start.
VOLUME /var/lib/keyrelay
# /healthz, /readyz and /metrics (KEYRELAY_HTTP_ADDR, default :9180).
EXPOSE 9180
# keyrelay is PID 1 (exec form): SIGTERM stops reading and flushes within
# KEYRELAY_SHUTDOWN_TIMEOUT (25s); give the container a longer stop timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["/keyrelay", "healthcheck"]
ENTRYPOINT ["/keyrelay"]
CMD ["run"]
