#!/usr/bin/env bash
# Prints what the native addon is built from: the Node ABI it loads into, the sanitizer switch,
# and a hash of binding.gyp, native/ and package-lock.json (node-addon-api). install.sh keeps it
# next to a warning-free build (build/Release/.inputs) and skips the rebuild while it matches;
# the Dockerfile's build stage writes it after its own warning-free build.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "node $(node -p 'process.version + " abi " + process.versions.modules') sanitize=${EDGEMESH_SANITIZE:-0}"
find binding.gyp package-lock.json native -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
