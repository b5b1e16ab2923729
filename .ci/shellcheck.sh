#!/usr/bin/env bash
# make lint: shellcheck on every shell script under .ci/ and deploy/ (*.sh,
# and files whose first line is a sh or bash #! line), node_modules left
# out. make deps installs shellcheck.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v shellcheck >/dev/null 2>&1; then
  echo "shellcheck is not installed (make deps installs it)" >&2
  exit 1
fi

scripts=()
while IFS= read -r -d '' f; do
  first=$(head -n 1 "$f" 2>/dev/null || true)
  case "$f" in
    *.sh) scripts+=("$f"); continue ;;
  esac
  case "$first" in
    '#!/usr/bin/env bash'* | '#!/usr/bin/env sh'* | '#!/bin/sh'* | '#!/bin/bash'*) scripts+=("$f") ;;
  esac
done < <(find .ci deploy -name node_modules -prune -o -type f -print0)

if [ "${#scripts[@]}" -eq 0 ]; then
  echo "found no shell scripts under .ci/ and deploy/" >&2
  exit 1
fi
echo "shellcheck ${scripts[*]}"
shellcheck "${scripts[@]}"
