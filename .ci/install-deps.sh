#!/usr/bin/env bash
# Installs what keyrelay's tests, demo and benchmarks need, from the
# project's own files: redis-server and redis-tools (Debian), shellcheck
# (Debian; make lint runs it on the scripts), promtool (Debian's prometheus
# package; make lint checks and unit-tests the alert rules with it), fauxqs
# (npm, pinned in .ci/package.json / package-lock.json). Idempotent.
set -euo pipefail
cd "$(dirname "$0")"

want_redis=1
want_fauxqs=1
want_shellcheck=1
want_promtool=1
case "${1:-all}" in
  redis) want_fauxqs=0; want_shellcheck=0; want_promtool=0 ;;
  all) ;;
  *) echo "usage: $0 [all|redis]" >&2; exit 2 ;;
esac

sudo_if_needed() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# apt_install PACKAGE...: install from Debian, refreshing the package lists
# only when the first attempt fails (a fresh machine has none).
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if ! sudo_if_needed apt-get install -y --no-install-recommends "$@" >/dev/null; then
    sudo_if_needed apt-get update >/dev/null
    sudo_if_needed apt-get install -y --no-install-recommends "$@" >/dev/null
  fi
}

if [ "$want_redis" = 1 ] && ! { command -v redis-server && command -v redis-cli && command -v redis-benchmark; } >/dev/null 2>&1; then
  echo "installing redis-server and redis-tools (Debian)" >&2
  apt_install redis-server redis-tools
  # The Debian package starts a system-wide server on 6379; tests use their own ports.
fi

if [ "$want_shellcheck" = 1 ] && ! command -v shellcheck >/dev/null 2>&1; then
  echo "installing shellcheck (Debian)" >&2
  apt_install shellcheck
fi

if [ "$want_promtool" = 1 ] && ! command -v promtool >/dev/null 2>&1; then
  echo "installing promtool (Debian: prometheus)" >&2
  apt_install prometheus
  # The package also holds a Prometheus server and enables its service; it
  # starts only under systemd (not in a container), and it listens on 9090,
  # which no test uses: tests bind free loopback ports.
fi

if [ "$want_fauxqs" = 1 ] && [ ! -x node_modules/.bin/fauxqs ]; then
  echo "installing fauxqs (npm)" >&2
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
