#!/usr/bin/env bash
# The whole test suite: installs what it needs, lints (npm run lint: typescript-eslint and
# clang-format), then runs the unit, network-namespace and bounded stress tests (vitest), then the
# addon under ASan/UBSan with the LeakSanitizer checks (scripts/test-asan.sh). Arguments go to
# vitest (and skip the sanitizer run: a partial run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# Whatever happens to the run, no test namespace outlives it.
trap 'bash scripts/sweep-netns.sh' EXIT
npm run --silent lint
npx --no-install vitest run "$@"
if [ $# -eq 0 ] && [ "${EDGEMESH_SKIP_ASAN:-}" != 1 ]; then
  bash scripts/test-asan.sh
fi
