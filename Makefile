# keyrelay — see README.md.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN     := bin/keyrelay

.PHONY: all build deps test unit lint demo bench docs readme clean

all: build

# The same build as the Dockerfile's build stage: static, trimmed, version stamped.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/keyrelay

deps:
	bash .ci/install-deps.sh all

# The unit tests that are lint: the Dockerfile and deploy/ files against the
# code, the generated table in docs/configuration.md (make docs).
LINT_TESTS = ^(TestDockerfile|TestDeploy.*|TestConfigTableInDocs)$$

# gofmt, go vet of the unit and the integration build, shellcheck of the
# scripts and promtool on the alert rules and their unit tests (make deps
# installs both), the deploy-file and docs checks.
lint:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard '*.go' 2>/dev/null || find . -name '*.go' -not -path './.ci/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./...
	bash .ci/shellcheck.sh
	@command -v promtool >/dev/null || { echo "promtool is not installed (make deps installs it)"; exit 1; }
	promtool check rules deploy/prometheus/keyrelay-alerts.yaml
	promtool test rules deploy/prometheus/keyrelay-alerts.test.yaml
	$(GO) test -count=1 -run '$(LINT_TESTS)' ./cmd/keyrelay

# The unit tests alone: no server, nothing installed but Go. Tests that start
# redis-server or fauxqs are built only with -tags integration.
unit:
	$(GO) test -count=1 ./...

# The one test command: installs redis-server, fauxqs and shellcheck if
# missing, lints, then runs every test (unit and integration, race detector
# on). Tests start their own servers on free loopback ports and stop them.
test: deps lint build
	$(GO) test -race -count=1 -tags integration -timeout 8m ./...

# Runs keyrelay against a local redis-server with notifications enabled and
# shows the records of a few writes, one of them a key that expires.
demo: build
	bash .ci/install-deps.sh redis
	bash .ci/demo.sh $(BIN)

# The performance harness (cmd/keyrelay-bench: redis-server, fauxqs and
# redis-cli started on free loopback ports, the real bin/keyrelay driven by
# redis-benchmark and a paced writer; BENCH_N notifications per full-speed
# run), then the Go micro-benchmarks with allocations. About 6 minutes on
# 2 cores; figures in docs/performance.md.
BENCH_N     ?= 1000000
BENCH_FLAGS ?=
bench: deps build
	$(GO) run ./cmd/keyrelay-bench -bin $(BIN) -n $(BENCH_N) $(BENCH_FLAGS)
	$(GO) test -run '^$$' -bench . -benchmem ./bridge/... ./sinks/...

# Regenerates the configuration table in docs/configuration.md from the
# config struct (TestConfigTableInDocs fails make lint, so make test, when it
# is stale).
docs:
	$(GO) test ./cmd/keyrelay -run TestConfigTableInDocs -count=1 -update-docs

# The former name of docs.
readme: docs

clean:
	rm -rf bin
