#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs unit and network-namespace tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec npx --no-install vitest run "$@"
