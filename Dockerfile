# syntax=docker/dockerfile:1
# edgemesh-agent image: build the addon and the TypeScript, then a slim runtime with the netfilter
# front ends and the shared libraries the addon links. Runs as a privileged-enough (NET_ADMIN +
# NET_RAW), hostNetwork DaemonSet: see deploy/base/daemonset.yaml.
#
#   docker build -t ghcr.io/edgemesh/edgemesh-hybrid-nat:0.1.0 .
#   docker build --target test -t edgemesh-test . && docker run --rm --privileged edgemesh-test
#
# The base is pinned by exact tag: Node 22, the current LTS, whose headers node-gyp builds against
# (npm_config_nodedir below, no header download). CI builds and runs both targets on a local base
# of the same name (scripts/container-test.sh); the host's own suite still runs on Node 20.
ARG NODE_IMAGE=node:22.23.5-bookworm-slim

# ---- build: compilers and -dev packages, npm ci, node-gyp, tsc -----------------------------
FROM ${NODE_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    npm_config_nodedir=/usr/local \
    npm_config_update_notifier=false
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential python3 pkg-config libiptc-dev libnftnl-dev libmnl-dev libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --ignore-scripts
# The addon first, from its own sources only: editing a test, a script or the TypeScript does not
# rebuild this layer. Warning-free, as install.sh demands; its inputs recorded, so that install.sh
# in the test stage and at test time does not build it again.
COPY binding.gyp ./
COPY native/ native/
COPY scripts/native-inputs.sh scripts/
RUN npx --no-install node-gyp rebuild -j 2 >/tmp/gyp.log 2>&1 || { cat /tmp/gyp.log; exit 1; }; \
    if grep -B2 -A3 'warning:' /tmp/gyp.log; then echo "the native build has warnings" >&2; exit 1; fi; \
    test -f build/Release/edgemesh_native.node \
 && bash scripts/native-inputs.sh >build/Release/.inputs \
 && rm /tmp/gyp.log
# tsc compiles src/, test/ and bench/ (tsconfig.json's include) into dist/.
COPY tsconfig.json vitest.config.ts ./
COPY src/ src/
COPY test/ test/
COPY bench/ bench/
COPY scripts/ scripts/
COPY .ci/ .ci/
RUN npx --no-install tsc -p tsconfig.json

# ---- test: the README's test command, exactly what .ci/run runs ------------------------------
# docker build --target test . && docker run --privileged <image>: the netns tests need
# CAP_SYS_ADMIN and CAP_NET_ADMIN at run time, not at build time. install.sh here adds the
# remaining run/test packages (iptables, iperf3, haproxy...) so that the run needs no network;
# test.sh runs it again at start, where it finds everything present and built. There is
# no .git here (.dockerignore): scripts/test-asan.sh copies the tree without git then.
FROM build AS test
# The whole source tree (README, deploy/, docs, the vendored kube-proxy fixtures) for the tests
# that check them; build outputs and node_modules stay those of the build stage (.dockerignore).
COPY . .
RUN bash scripts/install.sh && rm -rf /var/lib/apt/lists/*
CMD ["bash", "scripts/test.sh"]

# ---- prod-deps: runtime node_modules only ---------------------------------------------------
FROM build AS prod-deps
RUN npm prune --omit=dev --no-audit --no-fund

# ---- runtime ---------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive \
    NODE_ENV=production
# iptables/nftables/iproute2: the front ends `status`, the auto-detection and operators use;
# libip4tc2 libip6tc2 libnftnl11 libmnl0: what the addon links (`ldd`); OpenSSL is linked into it
# statically (binding.gyp) and libnftables only comes with the nft front end, which needs it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      iptables nftables iproute2 \
      libip4tc2 libip6tc2 libnftnl11 libmnl0 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=prod-deps /app/package.json /app/package-lock.json ./
COPY --from=prod-deps /app/node_modules/ node_modules/
COPY --from=build /app/binding.gyp ./
COPY --from=build /app/build/Release/edgemesh_native.node build/Release/edgemesh_native.node
COPY --from=build /app/dist/src/ dist/src/
LABEL org.opencontainers.image.title="edgemesh-hybrid-nat" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://github.com/edgemesh/edgemesh-hybrid-nat" \
      org.opencontainers.image.licenses="Apache-2.0"
# Root, deliberately: netfilter needs CAP_NET_ADMIN/CAP_NET_RAW in the effective set, which a
# non-root user only gets through file capabilities on node itself. The DaemonSet drops every
# other capability.
# The health endpoint binds to loopback (--metrics-addr, default 127.0.0.1:10251); with
# hostNetwork that is the node's loopback. EDGEMESH_HEALTHCHECK_URL overrides the URL here when
# --metrics-addr is changed. Kubernetes ignores HEALTHCHECK: the DaemonSet has its own probes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(process.env.EDGEMESH_HEALTHCHECK_URL||'http://127.0.0.1:10251/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node with the daemon's flags (src/node-flags.ts; the bin's first line has the same).
ENTRYPOINT ["node", "--max-semi-space-size=1", "--single-threaded-gc", "--expose-gc", "/app/dist/src/bin.js"]
CMD ["run"]
