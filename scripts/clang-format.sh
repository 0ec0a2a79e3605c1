#!/usr/bin/env bash
# native/ in the style of .clang-format. --check (npm run lint): report and fail, change nothing;
# without it: reformat in place.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format.sh: clang-format missing (bash scripts/install.sh installs it)" >&2; exit 1; }
files=(native/*/*.cc native/*/*.h)
if [ "${1:-}" = --check ]; then
  clang-format --style=file --dry-run --Werror "${files[@]}"
else
  clang-format --style=file -i "${files[@]}"
fi
