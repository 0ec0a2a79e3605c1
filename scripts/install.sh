#!/usr/bin/env bash
# Installs everything edgemesh-hybrid-nat needs on a Debian 12 machine with Node 20, as root:
# Debian packages (netfilter libraries and tools, test and bench peers), npm dependencies, the
# native build and the TypeScript build. Safe to run twice: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # build: headers and pkg-config files the addon links against
  build-essential python3 pkg-config libiptc-dev libnftnl-dev libmnl-dev libnftables-dev libssl-dev
  # run: the kernels' front ends the agent and its tests drive
  iptables nftables iproute2 util-linux nfacct conntrack kmod procps curl
  # test and bench peers
  iperf3 haproxy socat golang-go openssl tcpdump
  # the sanitizer run (scripts/test-asan.sh): libFuzzer needs clang and its runtime
  clang libclang-rt-14-dev
  # npm run lint: native/ in the style of .clang-format
  clang-format
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$status" = 'install ok installed' ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install.sh: missing Debian packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "install.sh: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# node-gyp builds against this machine's own Node headers (no download).
if [ -z "${npm_config_nodedir:-}" ]; then
  prefix=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
  if [ -f "$prefix/include/node/node_api.h" ]; then export npm_config_nodedir="$prefix"; fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --ignore-scripts
fi
# The addon is rebuilt unless the warning-free build there was made from the same inputs for the
# same Node (scripts/native-inputs.sh): the test image runs this at build and again at run.
inputs=$(bash scripts/native-inputs.sh)
if [ -f build/Release/edgemesh_native.node ] && [ "$(cat build/Release/.inputs 2>/dev/null)" = "$inputs" ]; then
  echo "install.sh: native addon up to date"
else
  log=$(mktemp)
  if ! npx --no-install node-gyp rebuild -j 2 >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; echo "install.sh: native build failed" >&2; exit 1
  fi
  if grep -q 'warning:' "$log"; then
    grep -B2 -A3 'warning:' "$log" >&2; rm -f "$log"; echo "install.sh: the native build has warnings; we keep them at zero" >&2; exit 1
  fi
  rm -f "$log"
  [ -f build/Release/edgemesh_native.node ] || { echo "install.sh: native build produced no addon" >&2; exit 1; }
  echo "$inputs" >build/Release/.inputs
fi
npx --no-install tsc -p tsconfig.json
echo "install.sh: ready"
