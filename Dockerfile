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

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/keyrelay /keyrelay
USER 65532:65532
# /healthz, /readyz and /metrics (KEYRELAY_HTTP_ADDR, default :9180).
EXPOSE 9180
# keyrelay is PID 1 (exec form): SIGTERM stops reading and flushes within
# KEYRELAY_SHUTDOWN_TIMEOUT (25s); give the container a longer stop timeout.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 CMD ["/keyrelay", "healthcheck"]
ENTRYPOINT ["/keyrelay"]
CMD ["run"]
