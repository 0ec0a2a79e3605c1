#!/usr/bin/env bash
# The whole test suite: installs what it needs, lints (npm run lint: typescript-eslint and
# clang-format), then runs the unit, network-namespace and bounded stress tests (vitest, with the
# coverage gate), then the addon under ASan/UBSan with the LeakSanitizer checks
# (scripts/test-asan.sh). Arguments go to vitest (and skip the coverage gate and the sanitizer run:
# a partial run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Whatever happens to the run, no test namespace outlives it.
trap 'bash scripts/sweep-netns.sh' EXIT
npm run --silent lint
# The whole suite runs with the coverage gate (vitest.config.ts); a partial run would miss it.
if [ $# -eq 0 ]; then
  npx --no-install vitest run --coverage
else
  npx --no-install vitest run "$@"
fi
if [ $# -eq 0 ] && [ "${EDGEMESH_SKIP_ASAN:-}" != 1 ]; then
  bash scripts/test-asan.sh
fi
