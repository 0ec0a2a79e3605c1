// The agent: sources -> store -> desired rule sets (pure) -> reconciler -> backends.
// Library users start one from an AgentConfig (config.ts loadConfig) without the CLI.
import type { AgentConfig } from './config.js';
import { desiredRuleSets, type SelectionCounts } from './desired.js';
import { createBackend, resolveBackend, type BackendOptions } from './backends/factory.js';
import type { BackendName, CleanupOutcome, NatBackend } from './backends/types.js';
import { silentLogger, type Logger } from './log.js';
import { Reconciler, type SyncReport } from './reconciler.js';
import type { DesiredRuleSet, Family } from './rules.js';
import { ClusterStore } from './sources/store.js';
import { StaticSource } from './sources/static.js';
import { KubeSource, makeKubeConfig } from './sources/kube.js';
import { EdgeMeshError } from './errors.js';
import { AgentMetrics, MetricsServer } from './metrics.js';

export interface AgentOptions {
  log?: Logger;
  /** Work in this network namespace instead of our own (rules only; tests and tools). */
  netns?: string;
}

interface Source {
  start(): Promise<unknown> | void;
  stop(): Promise<void> | void;
}

/** Families the config manages: those with a service CIDR. */
export function managedFamilies(config: AgentConfig): Family[] {
  const fams = new Set(config.serviceCidrs.map((c) => c.family));
  return (['ipv4', 'ipv6'] as const).filter((f) => fams.has(f));
}

export class Agent {
  readonly config: AgentConfig;
  readonly store = new ClusterStore();
  readonly reconciler: Reconciler;
  readonly backends: readonly NatBackend[];
  readonly backendName: BackendName;
  readonly log: Logger;
  /** Selection counts of the last desired state computed. */
  counts: SelectionCounts = { watched: 0, ignored: 0, proxied: 0, none: 0 };
  readonly metrics: AgentMetrics;
  private metricsServer: MetricsServer | undefined;
  /** Where /metrics, /healthz and /readyz listen once started (undefined: off). */
  metricsAddress: { address: string; port: number } | undefined;
  private readonly startedAt = Date.now();
  private source: Source | undefined;
  private cache: { generation: number; sets: Map<Family, DesiredRuleSet> } | undefined;
  private unsubscribe: (() => void) | undefined;
  private started = false;

  private constructor(config: AgentConfig, backendName: BackendName, backends: NatBackend[], log: Logger) {
    this.config = config;
    this.backendName = backendName;
    this.backends = backends;
    this.log = log;
    this.reconciler = new Reconciler({
      backends,
      desired: () => this.desired(),
      minSyncPeriodMs: config.minSyncPeriodMs,
      syncPeriodMs: config.syncPeriodMs,
      orderCheckPeriodMs: config.orderCheckPeriodMs,
      log,
    });
    this.metrics = new AgentMetrics({ counts: () => this.counts, desired: () => this.desired() });
    this.reconciler.on('sync', (r) => this.metrics.observe(r));
    this.metrics.declareFamilies(backends.map((b) => b.family));
  }

  /** Resolves the backend (auto-detection included) and builds everything; starts nothing. */
  static async create(config: AgentConfig, opts: AgentOptions = {}): Promise<Agent> {
    const log = opts.log ?? silentLogger;
    const families = managedFamilies(config);
    if (families.length === 0) throw new EdgeMeshError('ECONFIG', 'no service CIDR configured: nothing to manage');
    const bopts: BackendOptions = { lockWaitMs: config.lockWaitMs, ...(opts.netns ? { netns: opts.netns } : {}) };
    const { name } = await resolveBackend(config.backend, families, log, bopts);
    const backends = families.map((f) => createBackend(name, f, bopts));
    return new Agent(config, name, backends, log);
  }

  /** The desired rule sets, or undefined until the sources have listed everything once. */
  desired(): Map<Family, DesiredRuleSet> | undefined {
    if (!this.store.synced) return undefined;
    const generation = this.store.generation;
    if (this.cache?.generation === generation) return this.cache.sets;
    const { sets, counts } = desiredRuleSets(this.store.snapshot(), {
      serviceCidrs: this.config.serviceCidrs,
      proxyAddrs: this.config.proxyAddrs,
      selection: this.config.selection,
    });
    this.counts = counts;
    const map = new Map<Family, DesiredRuleSet>();
    for (const f of ['ipv4', 'ipv6'] as const) {
      const s = sets[f];
      if (s) map.set(f, s);
    }
    this.cache = { generation, sets: map };
    return map;
  }

  private makeSource(): Source {
    const src = this.config.source;
    const log = this.log;
    if (src.kind === 'static') {
      return new StaticSource({
        dir: src.dir,
        store: this.store,
        strictStart: true,
        onFileError: (path, message) => log.warn({ path }, `manifest skipped: ${message}`),
        onDebug: (message) => log.debug({}, message),
      });
    }
    if (src.kind === 'none') throw new EdgeMeshError('ECONFIG', 'no source of services configured (--services-dir, --kubeconfig or --api-server)');
    return new KubeSource({
      kubeConfig: makeKubeConfig(src),
      store: this.store,
      onError: (resource, message) => log.warn({ resource }, `kubernetes ${resource}: ${message}`),
      onDebug: (message) => log.debug({}, message),
    });
  }

  /** Starts the source and the reconcile loop. A bad manifest at start throws ConfigError. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.source = this.makeSource();
    await this.source.start();
    this.unsubscribe = this.store.onChange(() => this.reconciler.requestSync('event'));
    if (this.config.metricsAddr) {
      const server = new MetricsServer(this.metrics, {
        ready: () => this.reconciler.stats.firstSyncDone,
        lastSuccessAt: () => this.reconciler.stats.lastSuccessAt,
        startedAt: this.startedAt,
        // Healthy while syncs succeed: a full resync happens every sync period, so a last success
        // older than two periods plus the longest backoff means the loop is stuck or failing.
        maxSyncAgeMs: 2 * this.config.syncPeriodMs + 30_000,
      });
      const addr = await server.listen(this.config.metricsAddr.address, this.config.metricsAddr.port);
      this.metricsServer = server;
      this.metricsAddress = { address: addr.address, port: addr.port };
      this.log.info({ address: addr.address, port: addr.port }, `metrics and health on http://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}/metrics`);
    }
    this.reconciler.start();
    this.log.info(
      { backend: this.backendName, families: this.backends.map((b) => b.family), source: this.config.source.kind },
      `agent started: backend ${this.backendName}, families ${this.backends.map((b) => b.family).join(',')}`,
    );
  }

  /** One full sync: waits for the sources' first complete list (bounded), writes, returns the report. */
  async once(timeoutMs = 30_000): Promise<SyncReport> {
    this.source = this.makeSource();
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

  /** Stops the loop and the sources; removes our rules unless keepRules. */
  async stop(opts: { keepRules?: boolean } = {}): Promise<CleanupOutcome[]> {
    this.unsubscribe?.();
    await this.reconciler.stop();
    await this.metricsServer?.close();
    this.metricsServer = undefined;
    await this.source?.stop();
    this.source = undefined;
    if (opts.keepRules ?? this.config.keepRulesOnExit) return [];
    const out: CleanupOutcome[] = [];
    for (const b of this.backends) out.push(await b.cleanup());
    return out;
  }
}
