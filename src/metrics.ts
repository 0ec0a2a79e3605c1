// Prometheus metrics (prom.ts) on --metrics-addr (loopback by default) and the health
// endpoints on --healthz-addr (every address by default, for the kubelet's probes). Counters of
// the control plane are fed from the reconciler's sync reports; the proxy's are read from its
// native counters at scrape time.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from './prom.js';
import type { HealthVerdict, SyncReport } from './netfilter/reconciler.js';
import type { SelectionCounts } from './intent/desired.js';
import type { DesiredRuleSet, Family } from './netfilter/rules.js';
import type { ProxyStats, RelayRegistration, RelaySession, TunnelPeer, TunnelStats } from './proxy/proxy.js';
import { TLS_FAILURES, TUNNEL_REFUSALS } from './proxy/proxy.js';
import type { UnreachableEndpoint } from './intent/routes.js';
import type { CredentialInfo } from './tunnel/credentials.js';
import { native } from './native/load.js';

/** What the metrics read from the proxies at scrape time: TcpProxy.stats(), summed over families. */
export type ProxyCounters = Pick<ProxyStats, 'active' | 'total' | 'relayed' | 'bytesUp' | 'bytesDown' | 'failovers' | 'connectFailures' | 'acceptErrors'> & {
  refused: Record<string, number>;
  ended: Record<string, number>;
};

export interface MetricsSources {
  /** Selection counts of the current desired state. */
  counts(): SelectionCounts;
  /** Desired rule sets (rules by chain), undefined before the first list. */
  desired(): ReadonlyMap<Family, DesiredRuleSet> | undefined;
  proxy?: () => ProxyCounters | undefined;
  /** The tunnel, when configured (undefined: no tunnel metrics). */
  tunnel?: () => TunnelState | undefined;
  /** The sources: errors and when they last answered. */
  source?: () => SourceState;
  /** ms since the epoch when the oldest change not yet applied was queued; undefined: none. */
  queuedSince?: () => number | undefined;
  /** edgemesh_build_info's labels. */
  build?: { version: string; node: string };
}

/**
 * kube-proxy's network_programming_duration_seconds buckets (0.25 s to 5 min), so that the same
 * dashboards and SLOs read ours.
 */
export const NETWORK_PROGRAMMING_BUCKETS: readonly number[] = [
  0.25, 0.5,
  ...Array.from({ length: 59 }, (_, i) => i + 1),
  ...Array.from({ length: 12 }, (_, i) => 60 + 5 * i),
  ...Array.from({ length: 7 }, (_, i) => 120 + 30 * i),
];

/** The sources as the agent sees them (metrics, GET /status, `edgemesh-agent status`). */
export interface SourceState {
  /** static, kubeconfig, api-server, in-cluster. */
  kind: string;
  /** Every resource listed once (the first full sync may follow). */
  synced: boolean;
  /** Watch/list errors (API) or unreadable directory / bad manifests (static), by resource. */
  errors: Record<string, number>;
  lastError?: { resource: string; message: string; at: number };
  /** Date.now() of the last answer (list, watch event, bookmark; a directory read), by resource. */
  lastAnswerAt: Record<string, number>;
  /** When the agent started (the age of "never answered"). */
  startedAt: number;
  /** API sources: failed list and watch requests by resource (each followed by a relist). */
  apiErrors?: { resource: string; request: string; count: number }[];
  /** API sources: Date.now() of the last complete list applied, by resource. */
  lastListAt?: Record<string, number>;
}

/** The tunnel as the agent runs it (status, metrics). */
export interface TunnelState {
  node: string;
  /** Where the tunnel listener is bound ("" when this agent only dials). */
  listen: string;
  /** "userspace" (SSL_read/SSL_write in the relay threads) or "ktls" (the kernel takes the records). */
  tlsMode: 'userspace' | 'ktls';
  ktlsReason: string;
  certificate: CredentialInfo;
  rotations: number;
  rotationFailures: number;
  stats: TunnelStats;
  peers: TunnelPeer[];
  unreachable: UnreachableEndpoint[];
  /** Relays: the --tunnel-relay list as resolved, this node's sessions with them, and the nodes registered here. */
  relays: { configured: string[]; resolved: string[]; sessions: RelaySession[]; registrations: RelayRegistration[] };
}

/** Seconds since any source last answered (since the start when none has). */
export function secondsSinceAnswer(s: SourceState, now = Date.now()): number {
  const last = Math.max(s.startedAt, ...Object.values(s.lastAnswerAt));
  return Math.max(0, (now - last) / 1000);
}

const camelToSnake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/**
 * A counter or gauge whose values are read at scrape time from `read()` (native counters, the
 * sources' state): reset, then filled by `fill`; left as it is while `read()` has nothing.
 */
function scraped<S>(kind: 'counter', r: Registry, name: string, help: string, labelNames: string[], read: () => S | undefined, fill: (m: Counter<string>, s: S) => void): Counter<string>;
function scraped<S>(kind: 'gauge', r: Registry, name: string, help: string, labelNames: string[], read: () => S | undefined, fill: (m: Gauge<string>, s: S) => void): Gauge<string>;
function scraped<S>(kind: 'counter' | 'gauge', r: Registry, name: string, help: string, labelNames: string[], read: () => S | undefined, fill: (m: never, s: S) => void): Counter<string> | Gauge<string> {
  const cfg = {
    name,
    help,
    labelNames,
    registers: [r],
    collect(this: Counter<string> | Gauge<string>) {
      const s = read();
      if (s === undefined) return;
      this.reset();
      fill(this as never, s);
    },
  };
  return kind === 'counter' ? new Counter(cfg) : new Gauge(cfg);
}

export class AgentMetrics {
  readonly registry = new Registry();
  readonly syncDuration: Histogram<'reason'>;
  readonly syncs: Counter<'result'>;
  readonly writes: Counter<'family'>;
  readonly orderRepairs: Counter<'family'>;
  readonly lastSuccess: Gauge;
  readonly networkProgramming: Histogram;
  private readonly sources: MetricsSources;

  constructor(sources: MetricsSources) {
    this.sources = sources;
    const r = this.registry;
    // The event-loop delay histogram samples on a timer: 10 ms (the default) wakes an idle agent
    // 100 times a second; 200 ms keeps the metric meaningful at a fraction of the cost.
    collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 200 });
    this.syncDuration = new Histogram({
      name: 'edgemesh_sync_duration_seconds',
      help: 'Duration of a sync: read our rules, diff, one atomic write when needed',
      labelNames: ['reason'],
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [r],
    });
    this.syncs = new Counter({ name: 'edgemesh_syncs_total', help: 'Syncs by result (ok, error)', labelNames: ['result'], registers: [r] });
    this.writes = new Counter({ name: 'edgemesh_rule_writes_total', help: 'Atomic transactions written, by family', labelNames: ['family'], registers: [r] });
    this.orderRepairs = new Counter({ name: 'edgemesh_order_repairs_total', help: 'Our jump put back to rule 1 after another writer displaced it', labelNames: ['family'], registers: [r] });
    this.lastSuccess = new Gauge({ name: 'edgemesh_last_sync_success_timestamp_seconds', help: 'Unix time of the last successful sync', registers: [r] });
    this.networkProgramming = new Histogram({
      name: 'edgemesh_network_programming_duration_seconds',
      help: 'From a change seen at the source (a Service, EndpointSlice or Node) to the successful sync that includes it, one observation per change',
      buckets: [...NETWORK_PROGRAMMING_BUCKETS],
      registers: [r],
    });
    const build = new Gauge({ name: 'edgemesh_build_info', help: 'Always 1: the agent version and this node', labelNames: ['version', 'node'], registers: [r] });
    if (sources.build) build.set(sources.build, 1);
    // collect() below runs with `this` = the metric: it reads the constructor's `sources`.
    // glibc's heap (the addon's allocations, libiptc's and libnftnl's among them): with the
    // process_* and nodejs_heap_* families, where the resident memory goes.
    new Gauge({
      name: 'edgemesh_process_malloc_bytes',
      help: 'glibc malloc: bytes in use (arenas and mmapped chunks) and free inside the arenas',
      labelNames: ['state'],
      registers: [r],
      collect() {
        const m = native().mallocStats();
        this.set({ state: 'in_use' }, m.inUseBytes);
        this.set({ state: 'free' }, m.freeBytes);
      },
    });
    new Gauge({
      name: 'edgemesh_rules',
      help: 'Rules in our chains, by family and chain (desired state)',
      labelNames: ['family', 'chain'],
      registers: [r],
      collect() {
        this.reset();
        for (const [family, set] of sources.desired() ?? []) for (const c of set.chains) this.set({ family, chain: c.name }, c.rules.length);
      },
    });
    new Gauge({
      name: 'edgemesh_services',
      help: 'Services watched, ignored (kube-proxy keeps them), proxied by us, or neither',
      labelNames: ['state'],
      registers: [r],
      collect() {
        const c = sources.counts();
        for (const state of ['watched', 'ignored', 'proxied', 'none'] as const) this.set({ state }, c[state]);
      },
    });
    const proxy = () => sources.proxy?.();
    const gauge = (name: string, help: string, read: (p: ProxyCounters) => number) =>
      new Gauge({
        name,
        help,
        registers: [r],
        collect() {
          const p = proxy();
          if (p) this.set(read(p));
        },
      });
    gauge('edgemesh_proxy_connections_active', 'Connections being relayed or connecting now', (p) => p.active);
    // Monotonic counts kept natively are exposed as counters by reading them at scrape time.
    const counter = (name: string, help: string, labelNames: string[], fill: (c: Counter<string>, p: ProxyCounters) => void) => scraped('counter', r, name, help, labelNames, proxy, fill);
    counter('edgemesh_proxy_connections_total', 'Connections accepted by the proxy, served or not', [], (c, p) => c.inc(p.total));
    counter('edgemesh_proxy_connections_relayed_total', 'Connections that reached an endpoint', [], (c, p) => c.inc(p.relayed));
    counter('edgemesh_proxy_connections_refused_total', 'Connections closed at once, by reason (over-limit, no-route, loop, ...)', ['reason'], (c, p) => {
      for (const [k, v] of Object.entries(p.refused)) c.inc({ reason: camelToSnake(k).replace(/_/g, '-') }, v);
    });
    counter('edgemesh_proxy_connections_ended_total', 'Connections ended, by reason (eof, reset, idle-timeout, error, ...)', ['reason'], (c, p) => {
      for (const [k, v] of Object.entries(p.ended)) c.inc({ reason: camelToSnake(k).replace(/_/g, '-') }, v);
    });
    counter('edgemesh_proxy_bytes_total', 'Bytes relayed, by direction (up: client to endpoint)', ['direction'], (c, p) => {
      c.inc({ direction: 'up' }, p.bytesUp);
      c.inc({ direction: 'down' }, p.bytesDown);
    });
    counter('edgemesh_proxy_failovers_total', 'Connections that moved on to another endpoint after a failed connect', [], (c, p) => c.inc(p.failovers));
    counter('edgemesh_proxy_connect_failures_total', 'Endpoint connection attempts that failed (refused, timed out, unreachable), counted natively', [], (c, p) => c.inc(p.connectFailures));
    counter('edgemesh_proxy_accept_errors_total', 'accept(2) failures (EMFILE and the like, with backoff)', [], (c, p) => c.inc(p.acceptErrors));
    this.sourceMetrics();
    this.tunnelMetrics();
  }

  private sourceMetrics(): void {
    const r = this.registry;
    const source = () => this.sources.source?.();
    scraped('counter', r, 'edgemesh_source_errors_total', 'Source errors by resource: failed lists and watches of the API (each followed by a relist), unreadable manifests or directory', ['resource'], source, (c, s) => {
      for (const [resource, n] of Object.entries(s.errors)) c.inc({ resource }, n);
    });
    scraped('gauge', r, 'edgemesh_source_last_answer_timestamp_seconds', 'Unix time of the last answer of the source (a list, a watch event or bookmark; a directory read), by resource', ['resource'], source, (g, s) => {
      for (const [resource, at] of Object.entries(s.lastAnswerAt)) g.set({ resource }, at / 1000);
    });
    scraped('counter', r, 'edgemesh_source_api_errors_total', 'Failed list and watch requests to the Kubernetes API, by resource and request (list, watch); each is followed by a relist after backoff', ['resource', 'request'], source, (c, s) => {
      for (const e of s.apiErrors ?? []) c.inc({ resource: e.resource, request: e.request }, e.count);
    });
    scraped('gauge', r, 'edgemesh_source_last_list_timestamp_seconds', 'Unix time of the last complete list of the Kubernetes API applied, by resource', ['resource'], source, (g, s) => {
      for (const [resource, at] of Object.entries(s.lastListAt ?? {})) g.set({ resource }, at / 1000);
    });
    new Gauge({
      name: 'edgemesh_source_seconds_since_answer',
      help: 'Seconds since any source last answered (since the start while none has)',
      registers: [r],
      collect() {
        const s = source();
        if (s) this.set(secondsSinceAnswer(s));
      },
    });
    new Gauge({
      name: 'edgemesh_source_synced',
      help: '1 once every resource has been listed once',
      registers: [r],
      collect() {
        const s = source();
        if (s) this.set(s.synced ? 1 : 0);
      },
    });
    const queued = () => this.sources.queuedSince?.();
    new Gauge({
      name: 'edgemesh_sync_pending_seconds',
      help: 'Age of the oldest change queued and not yet applied (0: none); /healthz fails past its bound',
      registers: [r],
      collect() {
        const q = queued();
        this.set(q === undefined ? 0 : Math.max(0, (Date.now() - q) / 1000));
      },
    });
  }

  // The tunnel's counters are kept natively (per peer, per reason) and read at scrape time.
  private tunnelMetrics(): void {
    const r = this.registry;
    const tunnel = () => this.sources.tunnel?.();
    const tcounter = (name: string, help: string, labelNames: string[], fill: (c: Counter<string>, t: TunnelState) => void) => scraped('counter', r, name, help, labelNames, tunnel, fill);
    tcounter('edgemesh_tunnel_connections_total', 'Tunnel connections by direction (out: dialled by us), peer node and result (ok, handshake-failed, refused, connect-failed)', ['direction', 'peer', 'result'], (c, t) => {
      for (const p of t.peers) {
        const l = { direction: p.direction, peer: p.node };
        c.inc({ ...l, result: 'ok' }, p.ok);
        c.inc({ ...l, result: 'handshake-failed' }, p.handshakeFailed);
        c.inc({ ...l, result: 'refused' }, p.refused);
        if (p.direction === 'out') c.inc({ ...l, result: 'connect-failed' }, p.connectFailed);
      }
      // An inbound handshake that failed has no peer: no certificate of ours named it.
      const inFailed = TLS_FAILURES.reduce((n, r) => n + t.stats.inHandshakeFailures[r], 0);
      c.inc({ direction: 'in', peer: '', result: 'handshake-failed' }, inFailed);
    });
    tcounter('edgemesh_tunnel_handshake_failures_total', 'Failed TLS handshakes by direction and reason (no-certificate, unknown-ca, expired, name-mismatch, ...)', ['direction', 'reason'], (c, t) => {
      for (const reason of TLS_FAILURES) {
        c.inc({ direction: 'out', reason }, t.stats.dialHandshakeFailures[reason]);
        c.inc({ direction: 'in', reason }, t.stats.inHandshakeFailures[reason]);
      }
    });
    tcounter('edgemesh_tunnel_refusals_total', 'Tunnel requests this node refused, by reason (not-local, no-service, bad-request, endpoint-failed, over-limit)', ['reason'], (c, t) => {
      for (const reason of TUNNEL_REFUSALS) c.inc({ reason }, t.stats.inRefused[reason]);
    });
    tcounter('edgemesh_tunnel_refused_by_peer_total', 'Our tunnel requests that a peer refused, by its reason', ['reason'], (c, t) => {
      for (const reason of TUNNEL_REFUSALS) c.inc({ reason }, t.stats.dialRefused[reason]);
    });
    tcounter('edgemesh_tunnel_bytes_total', 'Application bytes through tunnels, by direction (out: sent into a tunnel)', ['direction'], (c, t) => {
      c.inc({ direction: 'out' }, t.stats.bytesOut);
      c.inc({ direction: 'in' }, t.stats.bytesIn);
    });
    tcounter('edgemesh_tunnel_sessions_resumed_total', 'TLS handshakes that resumed a session (no certificate exchange)', [], (c, t) => c.inc(t.stats.resumed));
    tcounter('edgemesh_tunnel_pending_limit_total', 'Inbound connections reset at once because too many were still unauthenticated', [], (c, t) => c.inc(t.stats.pendingLimit));
    tcounter('edgemesh_tunnel_certificate_rotations_total', 'Certificate sets installed after a file change (result ok) or refused (error)', ['result'], (c, t) => {
      c.inc({ result: 'ok' }, t.rotations);
      c.inc({ result: 'error' }, t.rotationFailures);
    });
    const tgauge = (name: string, help: string, labelNames: string[], fill: (g: Gauge<string>, t: TunnelState) => void) => scraped('gauge', r, name, help, labelNames, tunnel, fill);
    tgauge('edgemesh_tunnel_tls_mode', 'Where TLS records are made: userspace (OpenSSL in the relay threads) or ktls (the kernel)', ['mode'], (g, t) => g.set({ mode: t.tlsMode }, 1));
    tgauge('edgemesh_tunnel_pending_handshakes', 'Inbound tunnel connections not yet authenticated', [], (g, t) => g.set(t.stats.pending));
    tgauge('edgemesh_tunnel_unreachable_endpoints', 'Endpoints with no path from this node, by reason (no-node-name, unknown-node, no-tunnel-address)', ['reason'], (g, t) => {
      const counts: Record<string, number> = { 'no-node-name': 0, 'unknown-node': 0, 'no-tunnel-address': 0 };
      for (const u of t.unreachable) counts[u.reason] = (counts[u.reason] ?? 0) + 1;
      for (const [reason, n] of Object.entries(counts)) g.set({ reason }, n);
    });
    // Relays: what this agent does as one, as a registered node, and as a dialler through them.
    tgauge('edgemesh_relay_registered_nodes', 'Nodes registered with this agent as their relay', [], (g, t) => g.set(t.stats.registered));
    tgauge('edgemesh_relay_pending_joins', 'Joins waiting here for their node to open its data connection', [], (g, t) => g.set(t.stats.pendingJoins));
    tcounter('edgemesh_relay_joins_total', 'Joins asked of this agent as a relay, by result (ok, not-registered, timeout, over-limit, bad-request, unknown-token, rate-limited)', ['result'], (c, t) => {
      c.inc({ result: 'ok' }, t.stats.relayJoinsOk);
      for (const reason of TUNNEL_REFUSALS) c.inc({ result: reason }, t.stats.relayJoinsRefused[reason]);
      c.inc({ result: 'unknown-token' }, t.stats.relayUnknownToken);
      c.inc({ result: 'rate-limited' }, t.stats.relayRateLimited);
    });
    tcounter('edgemesh_relay_bytes_total', 'Bytes this agent spliced between the two ends of relayed connections (TLS records it holds no key for)', [], (c, t) => c.inc(t.stats.relayBytes));
    tgauge('edgemesh_relay_sessions', "This node's sessions with its relays: 1 for the state each is in", ['relay', 'state'], (g, t) => {
      for (const x of t.relays.sessions) g.set({ relay: x.relay, state: x.state }, 1);
    });
    tcounter('edgemesh_relay_session_failures_total', "This node's sessions with a relay that ended or could not be set up, by relay", ['relay'], (c, t) => {
      for (const x of t.relays.sessions) c.inc({ relay: x.relay }, x.failures);
    });
    tcounter('edgemesh_relay_dial_joins_total', 'Joins this agent asked of relays, by result (ok, or the reason the relay gave)', ['result'], (c, t) => {
      c.inc({ result: 'ok' }, t.stats.dialJoinOk);
      for (const reason of TUNNEL_REFUSALS) c.inc({ result: reason }, t.stats.dialJoinRefused[reason]);
    });
    tcounter('edgemesh_relay_data_connections_total', 'Data connections this node opened to a relay for a join, by result', ['result'], (c, t) => {
      c.inc({ result: 'ok' }, t.stats.dataConns - t.stats.dataConnsFailed);
      c.inc({ result: 'failed' }, t.stats.dataConnsFailed);
    });
    tgauge('edgemesh_tunnel_certificate_expiry_timestamp_seconds', 'Unix time when the certificate in use expires', [], (g, t) => {
      const ms = Date.parse(t.certificate.notAfter);
      if (Number.isFinite(ms)) g.set(ms / 1000);
    });
  }

  /** Makes every labelled series exist at 0 from the start, so dashboards and alerts see them before the first event. */
  declareFamilies(families: readonly Family[]): void {
    for (const result of ['ok', 'error']) this.syncs.inc({ result }, 0);
    for (const family of families) {
      this.writes.inc({ family }, 0);
      this.orderRepairs.inc({ family }, 0);
    }
  }

  /** Feeds one sync report. */
  observe(r: SyncReport): void {
    if (r.skipped) return;
    this.syncs.inc({ result: r.ok ? 'ok' : 'error' });
    this.syncDuration.observe({ reason: r.reason }, r.durationMs / 1000);
    for (const o of r.outcomes) {
      if (o.changed) this.writes.inc({ family: o.family });
      if (o.orderRepairs) this.orderRepairs.inc({ family: o.family }, o.orderRepairs);
    }
    if (r.ok) this.lastSuccess.set(Date.now() / 1000);
  }
}

/** Which paths a listener serves: the metrics listener all of them, the health listener the probes'. */
export type ListenerRole = 'metrics' | 'health';

export interface HealthState {
  /** What GET /status returns as JSON (sync, sources, tunnel: for `edgemesh-agent status`). */
  status?: () => unknown;
  /** The first full sync has completed (readiness). */
  ready(): boolean;
  /** Liveness: fails only when a queued change or a repair is late (Reconciler.health). */
  health(): HealthVerdict;
}

/**
 * HTTP server. metrics: GET /metrics, /status, and /healthz, /readyz as kube-proxy's metrics
 * server also answers them (probes set up on it keep working); health: /healthz, /readyz only.
 */
export class MetricsServer {
  private server: Server | undefined;
  constructor(
    private readonly metrics: AgentMetrics,
    private readonly health: HealthState,
    private readonly role: ListenerRole = 'metrics',
  ) {}

  async listen(address: string, port: number): Promise<AddressInfo> {
    const server = createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0];
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end();
        return;
      }
      if (this.role === 'health' && url !== '/healthz' && url !== '/readyz') {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: this is the health listener (/healthz, /readyz); /metrics and /status are on --metrics-addr\n');
        return;
      }
      if (url === '/metrics') {
        this.metrics.registry
          .metrics()
          .then((text) => res.writeHead(200, { 'content-type': this.metrics.registry.contentType }).end(text))
          .catch((e: Error) => res.writeHead(500).end(`${e.message}\n`));
        return;
      }
      if (url === '/healthz') {
        const h = this.health.health();
        res.writeHead(h.ok ? 200 : 503, { 'content-type': 'text/plain' }).end(h.ok ? 'ok\n' : `${h.reason ?? 'unhealthy'}\n`);
        return;
      }
      if (url === '/status') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(`${JSON.stringify(this.health.status?.() ?? {})}\n`);
        return;
      }
      if (url === '/readyz') {
        const ok = this.health.ready();
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'first full sync not done (the sources have not listed everything yet, or the first write failed)\n');
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics, /healthz, /readyz, /status\n');
    });
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, address, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections?.();
    await new Promise<void>((r) => s.close(() => r()));
  }
}
