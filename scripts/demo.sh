#!/usr/bin/env bash
# The main job on a fresh machine: installs what it needs, then runs `edgemesh-agent demo` (the
# whole hybrid NAT in throwaway network namespaces, removed afterwards). Extra arguments go to
# the demo (e.g. --backend nftables).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh >&2
exec node dist/src/cli.js demo "$@"
