// The agent: sources -> store -> one derivation per generation (pure: the intent and the proxy's
// routes) -> reconciler -> backends, and -> the proxies.
// Library users start one from an AgentConfig (config.ts loadConfig) without the CLI.
import type { AgentConfig } from './config.js';
import type { FamilyIntent } from './intent/desired.js';
import { Deriver, type Derivation, type DeriveConfig } from './intent/derive.js';
import { createBackend, resolveBackend, type BackendOptions } from './netfilter/factory.js';
import type { BackendName, CleanupOutcome, NatBackend } from './netfilter/types.js';
import { silentLogger, type Logger } from './log.js';
import { Reconciler, type SyncReport } from './netfilter/reconciler.js';
import type { Family } from './netfilter/rules.js';
import { ClusterStore } from './cluster/store.js';
import { StaticSource } from './cluster/static.js';
import { EdgeMeshError } from './errors.js';
import { AgentMetrics, MetricsServer, secondsSinceAnswer, type ProxyCounters, type SourceState, type TunnelState } from './metrics.js';
import type { UnreachableEndpoint } from './intent/routes.js';
import { TcpProxy, type ConnectionEvent, type TunnelStats } from './proxy/proxy.js';
import { lookup } from 'node:dns/promises';
import { isIP, type AddressInfo } from 'node:net';
import { checkTunnelPem, CredentialWatcher, readTunnelPem, type CredentialInfo, type TunnelPem } from './tunnel/credentials.js';
import { formatHostPortText } from './net.js';
import { ConfigError } from './errors.js';
import { DEFAULT_PROXY_INTERFACE, ensureProxyInterface, removeProxyInterface } from './proxy/iface.js';
import { packageVersion } from './version.js';
import { native } from './native/load.js';
import { performance } from 'node:perf_hooks';

// Declared in metrics.ts (which reads it at scrape time); part of the agent's status.
export type { TunnelState } from './metrics.js';

export interface AgentOptions {
  log?: Logger;
  /** Run the TCP proxy (default true); false: rules only (tools, tests of the control plane). */
  proxy?: boolean;
  /** Work in this network namespace instead of our own (rules only; tests and tools). */
  netns?: string;
  /**
   * Release the node executable's start-up pages before the first table read and after the first
   * sync (`edgemesh-agent run` does; docs/operations.md, "Memory"). Default false: an embedding
   * process keeps its pages.
   */
  releaseStartupPages?: boolean;
}

interface Source {
  start(): Promise<unknown> | void;
  stop(): Promise<void> | void;
}

/**
 * V8's most thorough collection, then malloc_trim. The addon asks V8 for a low-memory collection
 * (repeated full collections, weak caches cleared, compacting, emptied pages released), as a heap
 * snapshot does: Node 20's V8 ignores the 'last-resort' flavor of gc(), whose plain major
 * collection left ~5 MiB of dead objects in the heap at 1 000 services (measured: heap used after
 * it 13.3 MiB, 8.0 MiB after the low-memory one). Without the addon (an embedding with backends of
 * its own), gc() when exposed.
 */
function releaseGarbage(): void {
  try {
    native().lowMemoryNotification();
    native().mallocTrim();
  } catch {
    const gc = (globalThis as { gc?: (o?: object) => void }).gc;
    if (typeof gc === 'function') gc({ type: 'major', execution: 'sync', flavor: 'last-resort' });
  }
}

/** Families the config manages: those with a service CIDR. */
export function managedFamilies(config: AgentConfig): Family[] {
  const fams = new Set(config.serviceCidrs.map((c) => c.family));
  return (['ipv4', 'ipv6'] as const).filter((f) => fams.has(f));
}

/** GET /status (JSON): what `edgemesh-agent status` shows of the running agent. */
export interface AgentStatus {
  node: string;
  sync: {
    ready: boolean;
    healthy: boolean;
    lastSuccessSecondsAgo: number | null;
    /** Age of the oldest queued change not yet applied. */
    pendingSeconds: number | null;
    failingSeconds: number | null;
    consecutiveFailures: number;
  };
  source: {
    kind: string;
    synced: boolean;
    errors: Record<string, number>;
    lastError: { resource: string; message: string; secondsAgo: number } | null;
    secondsSinceAnswer: number;
    answered: boolean;
  };
  tunnel: TunnelState | null;
}

export class Agent {
  readonly config: AgentConfig;
  readonly store: ClusterStore;
  readonly reconciler: Reconciler;
  readonly backends: readonly NatBackend[];
  readonly backendName: BackendName;
  readonly log: Logger;
  readonly metrics: AgentMetrics;
  private metricsServer: MetricsServer | undefined;
  private healthServer: MetricsServer | undefined;
  /** Where /metrics and /status listen once started (undefined: off). */
  metricsAddress: { address: string; port: number } | undefined;
  /** Where /healthz and /readyz listen once started (the metrics listener when they share it; undefined: off). */
  healthzAddress: { address: string; port: number } | undefined;
  private readonly startedAt = Date.now();
  private source: Source | undefined;
  private readonly withProxy: boolean;
  /** One proxy per proxy address (family). */
  readonly proxies: TcpProxy[] = [];
  /** The derivation the proxies were last given (undefined: none yet). */
  private routed: Derivation | undefined;
  private readonly deriver = new Deriver();
  /** derive()'s config; a new object when the relays are resolved anew (the memo derives again). */
  private deriveConfig: DeriveConfig;
  private unsubscribe: (() => void) | undefined;
  private started = false;
  private releasePages = false;
  /** The tunnel credentials read and checked at create(); undefined without the tunnel. */
  private readonly tunnelPem: { pem: TunnelPem; info: CredentialInfo } | undefined;
  private credWatcher: CredentialWatcher | undefined;
  private unreachable: UnreachableEndpoint[] = [];
  private unreachableKey = '';
  private readonly sourceErrors: Record<string, number> = {};
  private lastSourceError: SourceState['lastError'];
  private readonly lastAnswerAt: Record<string, number> = {};
  /** API sources: failed list and watch requests, by "resource/request". */
  private readonly apiErrors: Record<string, { resource: string; request: string; count: number }> = {};
  private readonly lastListAt: Record<string, number> = {};
  /** --tunnel-relay as resolved to addresses (host names are looked up at start and every 30 s). */
  private relayAddrs: { address: string; port: number }[] = [];
  private relayTimer: NodeJS.Timeout | undefined;

  private constructor(config: AgentConfig, backendName: BackendName, backends: NatBackend[], log: Logger, withProxy: boolean, tunnelPem?: { pem: TunnelPem; info: CredentialInfo }) {
    this.config = config;
    this.tunnelPem = tunnelPem;
    // With the tunnel, routes depend on Nodes (their tunnel addresses): no routes before they are listed.
    this.store = new ClusterStore({ requireNodes: config.tunnel !== undefined });
    this.withProxy = withProxy;
    this.backendName = backendName;
    this.backends = backends;
    this.log = log;
    this.deriveConfig = this.makeDeriveConfig();
    this.reconciler = new Reconciler({
      backends,
      desired: () => this.desired(),
      minSyncPeriodMs: config.minSyncPeriodMs,
      syncPeriodMs: config.syncPeriodMs,
      orderCheckPeriodMs: config.orderCheckPeriodMs,
      generation: () => this.store.generation,
      // The node executable's pages that start-up touched (module loading, parsing, compiling:
      // ~40 MiB resident at 1 000 services, a bare node ~30) are unmapped before the first table
      // read, so that they do not stack with it (libiptc parses kube-proxy's whole table: ~17
      // MiB at 1 000 services) into the process's peak; what the sync needs faults back in.
      beforeFirstWrite: () => this.releaseStartupPages(false),
      log,
    });
    this.metrics = new AgentMetrics({
      intent: () => this.derived()?.intent,
      proxy: () => this.proxyCounters(),
      tunnel: () => this.tunnelState(),
      source: () => this.sourceState(),
      queuedSince: () => this.reconciler.stats.queuedSince,
      build: { version: packageVersion(), node: config.nodeName },
    });
    this.reconciler.on('sync', (r) => {
      this.metrics.observe(r);
      // Network programming latency: the changes this successful sync included are in the kernel.
      if (r.ok && !r.skipped && r.generation !== undefined) {
        const now = performance.now();
        for (const c of this.store.takeChangesUpTo(r.generation)) this.metrics.networkProgramming.observe((now - c.seenAt) / 1000);
      }
    });
    // After the start-up burst (the source's first list, the first full sync) most of the heap
    // is garbage, which V8 hands back only when its memory reducer notices the agent is idle:
    // tens of seconds to minutes later. One memory-reducing collection and a malloc_trim after the
    // first good sync return it at once; then the node executable's pages that start-up touched
    // are released (the daemon only), and the idle footprint is the steady one from then on.
    const settle = (r: SyncReport): void => {
      if (!r.ok || r.skipped) return;
      this.reconciler.off('sync', settle);
      setImmediate(() => {
        releaseGarbage();
        this.releaseStartupPages(true);
      });
    };
    this.reconciler.on('sync', settle);
    this.metrics.declareFamilies(backends.map((b) => b.family));
  }

  /** Resolves the backend (auto-detection included) and builds everything; starts nothing. */
  static async create(config: AgentConfig, opts: AgentOptions = {}): Promise<Agent> {
    const log = opts.log ?? silentLogger;
    const families = managedFamilies(config);
    if (families.length === 0) throw new EdgeMeshError('ECONFIG', 'no service CIDR configured: nothing to manage');
    const bopts: BackendOptions = { lockWaitMs: config.lockWaitMs, orderBefore: config.orderBefore, ...(opts.netns ? { netns: opts.netns } : {}) };
    // Credentials first: unreadable or unusable files end the start with a one-line error (exit
    // 2) before anything on the node is changed.
    let tunnelPem: { pem: TunnelPem; info: CredentialInfo } | undefined;
    if (config.tunnel) {
      const pem = readTunnelPem(config.tunnel);
      const info = checkTunnelPem(pem, config.tunnel);
      if (info.node !== config.nodeName) {
        throw new ConfigError(`--tunnel-cert "${config.tunnel.cert}" is for node "${info.node}", but this node is "${config.nodeName}" (--node-name): peers would refuse it`, 'tunnel-cert');
      }
      tunnelPem = { pem, info };
    }
    const { name } = await resolveBackend(config.backend, families, log, bopts);
    const backends = families.map((f) => createBackend(name, f, bopts));
    const agent = new Agent(config, name, backends, log, opts.proxy ?? true, tunnelPem);
    agent.releasePages = opts.releaseStartupPages ?? false;
    return agent;
  }

  /**
   * Unmaps the node executable's read-only pages (with `pageout`, first reclaims those only this
   * process maps): start-up code an idle daemon does not run again. They fault back in when
   * touched. Best effort: a failure is logged at debug level.
   */
  private releaseStartupPages(pageout: boolean): void {
    if (!this.releasePages) return;
    try {
      const r = native().releaseExecutablePages(pageout);
      const mib = (b: number) => Math.round((b / 1048576) * 10) / 10;
      this.log.debug({ ...r }, `released ${mib(r.rssBefore - r.rssAfter)} MiB of the node executable's resident pages (${pageout ? 'after the first sync' : 'before the first table read'})`);
    } catch (e) {
      this.log.debug({ err: { message: (e as Error).message } }, `node executable's pages not released: ${(e as Error).message}`);
    }
  }

  private makeDeriveConfig(): DeriveConfig {
    const c = this.config;
    const desired = { serviceCidrs: c.serviceCidrs, proxyAddrs: c.proxyAddrs, selection: c.selection };
    if (!this.withProxy) return desired;
    return { ...desired, paths: { nodeName: c.nodeName, directCidrs: c.directCidrs, tunnel: c.tunnel !== undefined, relays: this.relayAddrs } };
  }

  /** This store generation's derivation (computed once), or undefined until the sources have listed everything once. */
  derived(): Derivation | undefined {
    if (!this.store.synced) return undefined;
    return this.deriver.at(this.store.generation, () => this.store.snapshot(), this.deriveConfig);
  }

  /** The intent by family, or undefined until the sources have listed everything once. */
  desired(): Partial<Record<Family, FamilyIntent>> | undefined {
    return this.derived()?.intent.families;
  }

  /** Source errors and answers (metrics, GET /status). */
  sourceState(): SourceState {
    return {
      kind: this.config.source.kind,
      synced: this.store.synced,
      errors: { ...this.sourceErrors },
      ...(this.lastSourceError ? { lastError: this.lastSourceError } : {}),
      lastAnswerAt: { ...this.lastAnswerAt },
      apiErrors: Object.values(this.apiErrors).map((e) => ({ ...e })),
      lastListAt: { ...this.lastListAt },
      startedAt: this.startedAt,
    };
  }

  /** Liveness (kube-proxy's rule): a queued change or a repair late past two sync periods plus 30 s. */
  health(now = Date.now()): ReturnType<Reconciler['health']> {
    return this.reconciler.health(2 * this.config.syncPeriodMs + 30_000, now);
  }

  /** GET /status: the sync loop, the sources and the tunnel. */
  statusReport(now = Date.now()): AgentStatus {
    const st = this.reconciler.stats;
    const src = this.sourceState();
    const ago = (t: number | undefined) => (t === undefined ? null : Math.round((now - t) / 100) / 10);
    return {
      node: this.config.nodeName,
      sync: {
        ready: st.firstSyncDone,
        healthy: this.health(now).ok,
        lastSuccessSecondsAgo: ago(st.lastSuccessAt),
        pendingSeconds: ago(st.queuedSince),
        failingSeconds: ago(st.failingSince),
        consecutiveFailures: st.consecutiveFailures,
      },
      source: {
        kind: src.kind,
        synced: src.synced,
        errors: src.errors,
        lastError: src.lastError ? { resource: src.lastError.resource, message: src.lastError.message, secondsAgo: ago(src.lastError.at) ?? 0 } : null,
        secondsSinceAnswer: Math.round(secondsSinceAnswer(src, now) * 10) / 10,
        answered: Object.keys(src.lastAnswerAt).length > 0,
      },
      tunnel: this.tunnelState() ?? null,
    };
  }

  private sourceError(resource: string, message: string): void {
    this.sourceErrors[resource] = (this.sourceErrors[resource] ?? 0) + 1;
    this.lastSourceError = { resource, message, at: Date.now() };
  }

  // The Kubernetes source is imported only when used: a static-source agent restarts and
  // converges in well under 2 s. (The client library is loaded only for exec/auth-provider users.)
  private async makeSource(): Promise<Source> {
    const src = this.config.source;
    const log = this.log;
    if (src.kind === 'static') {
      return new StaticSource({
        dir: src.dir,
        store: this.store,
        strictStart: this.config.strictManifests,
        onFileError: (path, message) => {
          this.sourceError('manifests', `${path}: ${message}`);
          log.warn({ path }, `manifest skipped: ${path}: ${message}`);
        },
        onAnswer: () => (this.lastAnswerAt.manifests = Date.now()),
        onWarning: (path, message) => log.warn({ path }, message),
        onDebug: (message) => log.debug({}, message),
      });
    }
    if (src.kind === 'none') throw new EdgeMeshError('ECONFIG', 'no source of services configured (--services-dir, --kubeconfig or --api-server)');
    const { KubeSource, makeKubeConfig } = await import('./cluster/kube.js');
    const why = 'why' in src ? src.why : undefined;
    if (why) log.info({ source: src.kind, ...(src.kind === 'api-server' ? { url: src.url } : {}) }, `source: ${src.kind === 'api-server' ? src.url : 'in-cluster config'} (${why})`);
    return new KubeSource({
      kubeConfig: makeKubeConfig(src),
      store: this.store,
      endpointsApi: this.config.endpointsApi,
      onInfo: (message) => log.info({}, message),
      onRequestError: (resource, request) => {
        const e = (this.apiErrors[`${resource}/${request}`] ??= { resource, request, count: 0 });
        e.count++;
      },
      onListed: (resource) => (this.lastListAt[resource] = Date.now()),
      onError: (resource, message) => {
        this.sourceError(resource, message);
        log.warn({ resource }, `kubernetes ${resource}: ${message}`);
      },
      onAnswer: (resource) => (this.lastAnswerAt[resource] = Date.now()),
      onWarning: (resource, message) => log.warn({ resource }, message),
      onDebug: (message) => log.debug({}, message),
    });
  }

  /** The proxies' counters summed over families, under the addon's names (undefined without a proxy). */
  proxyCounters(): ProxyCounters | undefined {
    if (this.proxies.length === 0) return undefined;
    const pick = (s: ProxyCounters): ProxyCounters => ({
      active: s.active,
      accepted: s.accepted,
      relayed: s.relayed,
      bytesUp: s.bytesUp,
      bytesDown: s.bytesDown,
      failovers: s.failovers,
      connectFailures: s.connectFailures,
      acceptErrors: s.acceptErrors,
      refused: s.refused,
      ended: s.ended,
    });
    return this.proxies.map((p) => pick(p.stats())).reduce((a, b) => mergeCounts(a, b) as ProxyCounters);
  }

  /** Pushes the routing table to the proxies when the derivation changed (the cluster state, or the relays). */
  private pushRoutes(): void {
    if (this.proxies.length === 0) return;
    const d = this.derived();
    if (!d?.routes || d === this.routed) return;
    this.routed = d;
    const table = d.routes;
    const c = this.config;
    for (const p of this.proxies) p.updateRoutes(table);
    // What peers may ask of us: through our listener, or through relays we are registered with.
    if (d.localServe) this.proxies[0]?.setLocalServe(d.localServe);
    // A node that has no tunnel address of its own is reachable only through its relays.
    const self = this.store.snapshot().nodes.get(c.nodeName);
    const register = c.tunnel !== undefined && !self?.tunnelAddress && this.relayAddrs.length > 0;
    this.proxies[0]?.setRelays(register ? this.relayAddrs : []);
    this.unreachable = table.unreachable;
    const key = JSON.stringify(table.unreachable);
    if (key !== this.unreachableKey) {
      this.unreachableKey = key;
      if (table.unreachable.length > 0) {
        const byReason: Record<string, number> = {};
        for (const u of table.unreachable) byReason[u.reason] = (byReason[u.reason] ?? 0) + 1;
        const first = table.unreachable[0] as UnreachableEndpoint;
        this.log.warn(
          { unreachable: table.unreachable.length, byReason, example: first },
          `${table.unreachable.length} endpoints have no path from this node (${Object.entries(byReason).map(([r, n]) => `${n} ${r}`).join(', ')}), e.g. ${first.service} ${first.ip}:${first.port} on ${first.node ?? '(no node)'}`,
        );
      } else this.log.info({}, 'every endpoint has a path from this node');
    }
    this.log.debug({ routes: table.routes.length }, 'proxy routes updated');
  }

  /** The tunnel's state (undefined without the tunnel or before the proxies started). */
  tunnelState(): TunnelState | undefined {
    const t = this.config.tunnel;
    const first = this.proxies[0];
    if (!t || !first || !this.tunnelPem) return undefined;
    const stats = this.proxies.map((p) => p.stats().tunnel);
    const sum = stats.reduce((a, b) => mergeCounts(a, b) as TunnelStats);
    const ktls = first.ktls();
    const bound = first.tunnelAddress();
    return {
      node: this.config.nodeName,
      listen: bound ? formatHostPortText(bound) : '',
      tlsMode: ktls?.available ? 'ktls' : 'userspace',
      ktlsReason: ktls?.reason ?? '',
      certificate: this.credWatcher?.info ?? this.tunnelPem.info,
      rotations: this.credWatcher?.rotations ?? 0,
      rotationFailures: this.credWatcher?.failures ?? 0,
      stats: sum,
      peers: this.proxies.flatMap((p) => p.peers()).sort((a, b) => (a.node < b.node ? -1 : a.node > b.node ? 1 : a.direction < b.direction ? -1 : 1)),
      unreachable: this.unreachable,
      relays: {
        configured: t.relays.map((r) => r.text),
        resolved: this.relayAddrs.map(formatHostPortText),
        sessions: first.sessions(),
        registrations: first.registrations().sort((a, b) => (a.node < b.node ? -1 : 1)),
      },
    };
  }

  /** Resolves --tunnel-relay (IP literals as they are, host names looked up); re-pushes routes on change. */
  private async resolveRelays(): Promise<void> {
    const relays = this.config.tunnel?.relays ?? [];
    const out: { address: string; port: number }[] = [];
    for (const r of relays) {
      if (isIP(r.host)) {
        out.push({ address: r.host, port: r.port });
        continue;
      }
      try {
        for (const a of await lookup(r.host, { all: true })) out.push({ address: a.address, port: r.port });
      } catch (e) {
        this.log.warn({ relay: r.text, code: (e as NodeJS.ErrnoException).code }, `tunnel relay ${r.text}: cannot resolve ${r.host} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); retrying`);
      }
    }
    if (JSON.stringify(out) === JSON.stringify(this.relayAddrs)) return;
    this.relayAddrs = out;
    this.log.info({ relays: out.map(formatHostPortText) }, `tunnel relays: ${out.map(formatHostPortText).join(', ') || 'none'}`);
    this.deriveConfig = this.makeDeriveConfig();
    this.pushRoutes();
  }

  private onConnection(ev: ConnectionEvent): void {
    if (ev.reason === 'refused' || ev.reason === 'error' || ev.reason === 'connect-failed') {
      this.log.debug({ client: ev.client, originalDst: ev.originalDst, service: ev.service, reason: ev.reason, refusal: ev.refusal, code: ev.code, syscall: ev.syscall }, `proxy connection ${ev.reason}`);
    }
  }

  /** Creates edgemesh0 with the proxy addresses and starts one proxy per address. */
  private async startProxies(): Promise<void> {
    const c = this.config;
    const kind = await ensureProxyInterface({ name: DEFAULT_PROXY_INTERFACE, addresses: c.proxyAddrs.map((a) => a.address) });
    for (const [i, addr] of c.proxyAddrs.entries()) {
      // The first proxy also runs the tunnel listener; every proxy dials through the tunnel.
      const listen = i === 0 ? c.tunnel?.listen : undefined;
      const proxy = new TcpProxy({
        maxConnections: c.maxConnections || 1 << 30,
        connectTimeoutMs: c.connectTimeoutMs,
        idleTimeoutMs: c.idleTimeoutMs,
        mode: c.relayMode,
        events: 'failures',
        ...(listen ? { tunnelAddress: listen.address, tunnelPort: listen.port } : {}),
      });
      proxy.on('connection', (ev) => this.onConnection(ev));
      proxy.on('error', (e) => this.log.error({ err: { message: e.message } }, `proxy: ${e.message}`));
      const bound = proxy.start(addr.address, addr.port);
      this.proxies.push(proxy);
      if (this.tunnelPem) proxy.setTunnelCredentials(this.tunnelPem.pem);
      this.log.info({ address: bound.address, port: bound.port, interface: DEFAULT_PROXY_INTERFACE, kind, mode: c.relayMode }, `proxy listening on ${addr.family === 'ipv6' ? `[${bound.address}]` : bound.address}:${bound.port}`);
    }
    const t = this.tunnelState();
    if (t && this.tunnelPem && c.tunnel) {
      this.log.info(
        { node: t.node, listen: t.listen || 'none', tls: t.tlsMode, ktls: t.ktlsReason, serial: t.certificate.serial, notAfter: t.certificate.notAfter },
        `tunnel: node ${t.node}, ${t.listen ? `listening on ${t.listen}` : 'dialling only'}, TLS 1.3 in ${t.tlsMode === 'ktls' ? 'the kernel (kTLS)' : `user space (kTLS: ${t.ktlsReason})`}, certificate serial ${t.certificate.serial} (not after ${t.certificate.notAfter})`,
      );
      this.credWatcher = new CredentialWatcher({
        files: c.tunnel,
        initial: this.tunnelPem,
        log: this.log,
        apply: (pem) => {
          const info = checkTunnelPem(pem, c.tunnel!);
          if (info.node !== c.nodeName) throw new Error(`the new certificate is for node "${info.node}", not "${c.nodeName}"`);
          for (const p of this.proxies) p.setTunnelCredentials(pem);
          return info;
        },
      });
      this.credWatcher.start();
      await this.resolveRelays();
      if (c.tunnel.relays.some((r) => !isIP(r.host))) {
        this.relayTimer = setInterval(() => void this.resolveRelays(), 30_000);
        this.relayTimer.unref();
      }
    }
  }

  /** Starts the source, the proxies and the reconcile loop. A bad manifest at start throws ConfigError. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.source = await this.makeSource();
    await this.source.start();
    if (this.withProxy) await this.startProxies();
    this.pushRoutes();
    this.unsubscribe = this.store.onChange(() => {
      this.pushRoutes();
      this.reconciler.requestSync('event');
    });
    await this.startListeners();
    this.reconciler.start();
    this.log.info(
      { backend: this.backendName, families: this.backends.map((b) => b.family), source: this.config.source.kind },
      `agent started: backend ${this.backendName}, families ${this.backends.map((b) => b.family).join(',')}`,
    );
  }

  /** The metrics listener (/metrics, /status, and the probes' paths) and the health listener (/healthz, /readyz). */
  private async startListeners(): Promise<void> {
    const { metricsAddr: m, healthzAddr: h } = this.config;
    const state = { ready: () => this.reconciler.stats.firstSyncDone, status: () => this.statusReport(), health: () => this.health() };
    const url = (a: AddressInfo, path: string) => `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}${path}`;
    // The same address and port: one listener. Port 0 on both: two listeners, each on a free port.
    const shared = m !== undefined && h !== undefined && m.address === h.address && m.port === h.port && m.port !== 0;
    if (m) {
      const server = new MetricsServer(this.metrics, state, 'metrics');
      const addr = await server.listen(m.address, m.port);
      this.metricsServer = server;
      this.metricsAddress = { address: addr.address, port: addr.port };
      this.log.info({ address: addr.address, port: addr.port }, `metrics and health on ${url(addr, '/metrics')}${shared ? ' (also --healthz-addr)' : ''}`);
      if (shared) this.healthzAddress = this.metricsAddress;
    }
    if (h && !shared) {
      const server = new MetricsServer(this.metrics, state, 'health');
      const addr = await server.listen(h.address, h.port);
      this.healthServer = server;
      this.healthzAddress = { address: addr.address, port: addr.port };
      this.log.info({ address: addr.address, port: addr.port, role: 'health' }, `health probes on ${url(addr, '/healthz')} and /readyz`);
    }
  }

  /** One full sync: waits for the sources' first complete list (bounded), writes, returns the report. */
  async once(timeoutMs = 30_000): Promise<SyncReport> {
    this.source = await this.makeSource();
    await this.source.start();
    try {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.store.whenSynced(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new EdgeMeshError('ETIMEDOUT', `sources did not complete their first list within ${timeoutMs} ms`)), timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
      return await this.reconciler.syncNow('manual');
    } finally {
      await this.source.stop();
      this.source = undefined;
    }
  }

  /**
   * Stops, in the order that keeps traffic flowing: the loop and sources; then our rules go
   * (new connections to proxied services fall back to kube-proxy's DNAT at once); then the
   * proxies stop accepting and live connections get `drainGraceMs` to finish (their conntrack
   * entries still point at the proxy address, so the interface stays until then); then the
   * interface goes. With keepRules the rules and the interface stay for the next agent.
   */
  async stop(opts: { keepRules?: boolean; drainGraceMs?: number } = {}): Promise<CleanupOutcome[]> {
    const keep = opts.keepRules ?? this.config.keepRulesOnExit;
    this.unsubscribe?.();
    this.credWatcher?.stop();
    if (this.relayTimer) clearInterval(this.relayTimer);
    this.proxies[0]?.setRelays([]);
    await this.reconciler.stop();
    await this.source?.stop();
    this.source = undefined;
    const out: CleanupOutcome[] = [];
    if (!keep) for (const b of this.backends) out.push(await b.cleanup());
    for (const b of this.backends) b.close?.();
    const grace = opts.drainGraceMs ?? this.config.drainGraceMs;
    const live = this.proxyCounters()?.active ?? 0;
    if (live > 0) this.log.info({ active: live, graceMs: grace }, `draining ${live} live connections (up to ${grace} ms)`);
    await Promise.all(this.proxies.map((p) => p.close(grace)));
    this.proxies.length = 0;
    if (this.withProxy && !keep) await removeProxyInterface({ name: DEFAULT_PROXY_INTERFACE });
    await this.metricsServer?.close();
    this.metricsServer = undefined;
    await this.healthServer?.close();
    this.healthServer = undefined;
    return out;
  }
}

function mergeCounts(a: unknown, b: unknown): unknown {
  if (typeof a === 'number' && typeof b === 'number') return a + b;
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const out: Record<string, unknown> = {};
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) out[k] = mergeCounts((a as Record<string, unknown>)[k] ?? 0, (b as Record<string, unknown>)[k] ?? 0);
    return out;
  }
  return a;
}
