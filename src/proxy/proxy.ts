// The TCP service proxy: EDGE-MESH-TCP DNATs proxied Service traffic to this listener; we read
// the original destination, map it to a Service port, pick an endpoint and relay the bytes.
//
// Design choice: accept natively, route natively, relay natively.
// ------------------------------------------------------------------
// Accept happens in the addon's worker threads (epoll on the listening socket, EPOLLEXCLUSIVE,
// accept4 in batches), which also read SO_ORIGINAL_DST, look up a routing table that TypeScript
// computes (routes.ts) and pushes on change, choose the endpoint (round-robin / random / ClientIP
// affinity), connect non-blocking with a timeout and fail over, then relay with splice(2) on the
// same thread. Why not accept in Node and hand the fd over:
// - short connections are the hard target (>= HAProxy's rate at concurrency 16, p99 no worse).
//   A Node accept costs a libuv wakeup, a net.Socket/handle allocation, a JS callback, a
//   getsockopt and a native call per connection on the one JS thread, plus detaching the fd from
//   libuv (which Node has no clean API for: the handle would also close it: two owners). Native
//   accept keeps the per-connection cost at a few syscalls on a worker, and the JS thread only
//   sees one batched event per epoll round;
// - every fd then has exactly one owner from accept to close (the worker), the rule STYLE asks;
// - accept load spreads over the workers (one epoll each), not over one event loop shared with
//   the control plane (informers, rule sync), so a rule sync never delays accepts. One wakeup
//   accepts a whole burst; a worker that finds another one at least two connections lighter
//   hands the new socket over (Proxy::PickWorker), so four parallel streams use both cores.
// What stays in TypeScript: validation and defaults, the routing table as a pure function of the
// cluster model (routes.ts), which Services are proxied, counters for metrics, lifecycle.
// The cost: routing logic lives in C++ (small: a hash lookup and an index), and a table update
// is a full copy pushed across (fine: it happens on cluster change, not per connection).
import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import { isIP } from 'node:net';
import { ConfigError, fromNative } from '../errors.js';
import { native } from '../native/load.js';
import { DEFAULT_PROXY_ADDRESS, DEFAULT_PROXY_PORT } from './iface.js';
import type {
  ConnectionEvent,
  NativeConnEvent,
  NativeConnInfo,
  NativeEndReason,
  NativeLocalServe,
  NativePeer,
  NativeRegistration,
  NativeSession,
  NativeProxy,
  NativeProxyStats,
  NativeRefusal,
  NativeRoute,
  NativeTlsFailure,
  NativeTunnelRefusal,
  NativeTunnelStats,
  TcpProxyOptions,
} from '../native/binding.js';
import type { RoutingTable } from '../intent/routes.js';

// Declared with the addon's surface (./native.ts), which takes and emits them as they are.
export type { ConnectionEvent, TcpProxyOptions } from '../native/binding.js';
export type EndReason = NativeEndReason;
/** A live connection (connections()). */
export type ConnectionInfo = NativeConnInfo;
export type Refusal = NativeRefusal;

export interface ProxyStats {
  /** Connections being relayed or connecting now. */
  active: number;
  /** Every connection accepted, served or not. */
  total: number;
  /** Connections that reached an endpoint. */
  relayed: number;
  bytesUp: number;
  bytesDown: number;
  failovers: number;
  /** Every failed endpoint attempt, counted natively (a connection that failed over and then succeeded included). */
  connectFailures: number;
  refused: { overLimit: number; noOriginalDst: number; loop: number; noRoute: number; noEndpoints: number; tunnelHandshake: number; tunnelRequest: number };
  /** Connections ended, by reason. */
  ended: { eof: number; reset: number; idleTimeout: number; cancelled: number; error: number; connectFailed: number; refused: number };
  acceptErrors: number;
  acceptBackoffs: number;
  /** Connections accepted by one worker thread and handed to a less loaded one. */
  handoffs: number;
  pipes: { created: number; reused: number; size: number; spliceFallbacks: number };
  tunnel: TunnelStats;
}

export type TunnelStats = NativeTunnelStats;
export type TunnelPeer = NativePeer;
export type RelayRegistration = NativeRegistration;
export type RelaySession = NativeSession;
export type TunnelLocalServe = NativeLocalServe;
export type TlsFailure = NativeTlsFailure;
export type TunnelRefusal = NativeTunnelRefusal;

export interface ProxyAddress {
  address: string;
  port: number;
  family: 4 | 6;
}

export interface TcpProxyEvents {
  connection: [ConnectionEvent];
  error: [Error];
}

const DEFAULTS = {
  maxConnections: 16384,
  connectTimeoutMs: 1000,
  maxConnectAttempts: 3,
  idleTimeoutMs: 3_600_000,
  pipeSize: 1 << 20,
  backlog: 4096,
};

let nofileRaised: { soft: number; hard: number } | undefined;

/** Raises RLIMIT_NOFILE as far as allowed, once per process; returns the limits in force. */
export function raiseNofileLimit(): { soft: number; hard: number } {
  nofileRaised ??= native().raiseNofileLimit();
  return nofileRaised;
}

function intOption(name: string, v: number | undefined, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < min || v > max) throw new ConfigError(`${name} must be an integer in [${min}, ${max}], got ${v}`, name);
  return v;
}

function toStats(s: NativeProxyStats): ProxyStats {
  return {
    active: s.active,
    total: s.accepted,
    relayed: s.relayed,
    bytesUp: s.bytesUp,
    bytesDown: s.bytesDown,
    failovers: s.failovers,
    connectFailures: s.connectFailures ?? 0,
    refused: {
      overLimit: s.refused['over-limit'],
      noOriginalDst: s.refused['no-original-dst'],
      loop: s.refused.loop,
      noRoute: s.refused['no-route'],
      noEndpoints: s.refused['no-endpoints'],
      tunnelHandshake: s.refused['tunnel-handshake'],
      tunnelRequest: s.refused['tunnel-request'],
    },
    ended: {
      eof: s.ended.eof,
      reset: s.ended.reset,
      idleTimeout: s.ended['idle-timeout'],
      cancelled: s.ended.cancelled,
      error: s.ended.error,
      connectFailed: s.ended['connect-failed'],
      refused: s.ended.refused,
    },
    acceptErrors: s.acceptErrors,
    acceptBackoffs: s.acceptBackoffs,
    handoffs: s.handoffs,
    pipes: { created: s.pipesCreated, reused: s.pipesReused, size: s.pipeSize, spliceFallbacks: s.spliceFallbacks },
    tunnel: s.tunnel,
  };
}

/** The routing table in the addon's shape (only TCP routes exist in it). */
export function toNativeRoutes(table: RoutingTable): NativeRoute[] {
  return table.routes.map((r) => ({
    ip: r.ip,
    port: r.port,
    service: r.portName ? `${r.service}:${r.portName}` : r.service,
    serviceName: r.service,
    endpoints: r.endpoints.map((e) => ({
      ip: e.ip,
      port: e.port,
      path: e.path,
      ...(e.node ? { node: e.node } : {}),
      ...(e.tunnel ? { tunnel: { address: e.tunnel.address, port: e.tunnel.port } } : {}),
      ...(e.relays ? { relays: e.relays.map((x) => ({ address: x.address, port: x.port })) } : {}),
    })),
    clientIPAffinity: r.affinity.clientIP,
    affinityTimeoutSeconds: r.affinity.timeoutSeconds,
  }));
}

export class TcpProxy extends EventEmitter<TcpProxyEvents> {
  private readonly opts: TcpProxyOptions;
  private proxy: NativeProxy | undefined;
  private routes: RoutingTable = { routes: [] };
  private closing: Promise<void> | undefined;
  private lastStats: ProxyStats | undefined;
  private refed = true;
  private pushed = '';
  private serve: TunnelLocalServe[] = [];
  private pushedServe = '';
  private relays: { address: string; port: number }[] = [];
  private pushedRelays = '[]';

  constructor(opts: TcpProxyOptions = {}) {
    super();
    intOption('port', opts.port, 0, 65535);
    intOption('threads', opts.threads, 1, 64);
    intOption('maxConnections', opts.maxConnections, 1, 1 << 30);
    intOption('connectTimeoutMs', opts.connectTimeoutMs, 1, 3_600_000);
    intOption('maxConnectAttempts', opts.maxConnectAttempts, 1, 64);
    intOption('idleTimeoutMs', opts.idleTimeoutMs, 0, 2 ** 31);
    intOption('pipeSize', opts.pipeSize, 4096, 1 << 30);
    intOption('backlog', opts.backlog, 1, 1 << 20);
    intOption('pipeIdleMs', opts.pipeIdleMs, 0, 1 << 30);
    intOption('tunnelPort', opts.tunnelPort, 0, 65535);
    intOption('handshakeTimeoutMs', opts.handshakeTimeoutMs, 1, 3_600_000);
    intOption('maxPendingHandshakes', opts.maxPendingHandshakes, 1, 1 << 30);
    if (opts.tunnelAddress !== undefined && isIP(opts.tunnelAddress) === 0) throw new ConfigError(`tunnel address "${opts.tunnelAddress}" is not an IP address`, 'tunnelAddress');
    if (opts.address !== undefined && isIP(opts.address) === 0) throw new ConfigError(`proxy address "${opts.address}" is not an IP address`, 'address');
    if (opts.selection !== undefined && opts.selection !== 'round-robin' && opts.selection !== 'random') {
      throw new ConfigError(`selection must be round-robin or random, got ${String(opts.selection)}`, 'selection');
    }
    if (opts.events !== undefined && !['all', 'failures', 'none'].includes(opts.events)) {
      throw new ConfigError(`events must be all, failures or none, got ${String(opts.events)}`, 'events');
    }
    if (opts.mode !== undefined && opts.mode !== 'splice' && opts.mode !== 'copy') throw new ConfigError(`mode must be splice or copy, got ${String(opts.mode)}`, 'mode');
    this.opts = { ...opts };
  }

  /** Binds and starts accepting (synchronous: bind errors throw SyscallError, e.g. EADDRINUSE). */
  start(address = this.opts.address ?? DEFAULT_PROXY_ADDRESS, port = this.opts.port ?? DEFAULT_PROXY_PORT): ProxyAddress {
    if (this.proxy || this.closing) throw new Error('TcpProxy.start: already started');
    if (isIP(address) === 0) throw new ConfigError(`proxy address "${address}" is not an IP address`, 'address');
    intOption('port', port, 0, 65535);
    raiseNofileLimit();
    const o = this.opts;
    try {
      this.proxy = new (native().Proxy)(
        {
          address,
          port,
          ...(o.netns !== undefined ? { netns: o.netns } : {}),
          threads: o.threads ?? Math.max(1, Math.min(2, availableParallelism())),
          maxConnections: o.maxConnections ?? DEFAULTS.maxConnections,
          connectTimeoutMs: o.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs,
          maxConnectAttempts: o.maxConnectAttempts ?? DEFAULTS.maxConnectAttempts,
          idleTimeoutMs: o.idleTimeoutMs ?? DEFAULTS.idleTimeoutMs,
          selection: o.selection ?? 'round-robin',
          mode: o.mode ?? 'splice',
          pipeSize: o.pipeSize ?? DEFAULTS.pipeSize,
          backlog: o.backlog ?? DEFAULTS.backlog,
          pipeIdleMs: o.pipeIdleMs ?? 2000,
          events: o.events ?? 'all',
          ...(o.tunnelAddress !== undefined ? { tunnelAddress: o.tunnelAddress, tunnelPort: o.tunnelPort ?? 20006 } : {}),
          handshakeTimeoutMs: o.handshakeTimeoutMs ?? 5000,
          maxPendingHandshakes: o.maxPendingHandshakes ?? 1024,
        },
        (events) => this.onEvents(events),
      );
    } catch (e) {
      throw fromNative(e);
    }
    this.push();
    this.pushServe();
    this.pushRelays();
    if (!this.refed) this.proxy.unref();
    return this.proxy.address();
  }

  /**
   * Replaces the routing table (takes effect for the next accepted connection). An identical
   * table is not pushed again, so round-robin positions survive no-op resyncs.
   */
  updateRoutes(table: RoutingTable): void {
    this.routes = table;
    this.push();
  }

  private push(): void {
    if (!this.proxy) return;
    const routes = toNativeRoutes(this.routes);
    const key = JSON.stringify(routes);
    if (key === this.pushed) return;
    this.proxy.setRoutes(routes);
    this.pushed = key;
  }

  address(): ProxyAddress | undefined {
    return this.proxy?.address();
  }

  /** The tunnel listener's bound address (undefined: none, or not started). */
  tunnelAddress(): ProxyAddress | undefined {
    return this.proxy?.tunnelAddress() ?? undefined;
  }

  /**
   * Installs tunnel credentials (PEM text): new connections use them at once, live ones keep
   * theirs. Throws EdgeMeshError code ETLSCONFIG with a one-line reason when they do not form a
   * usable set (no certificate, a key of another certificate, a certificate our CA did not sign).
   */
  setTunnelCredentials(pem: { ca: string; cert: string; key: string } | null): { node: string; serial: string; notAfter: string } | undefined {
    if (!this.proxy) throw new Error('TcpProxy.setTunnelCredentials: not started');
    try {
      return this.proxy.setTunnelCredentials(pem) ?? undefined;
    } catch (e) {
      throw fromNative(e);
    }
  }

  /** What this node's tunnel listener may serve (replaces the previous list; identical lists are not pushed). */
  setLocalServe(list: TunnelLocalServe[]): void {
    this.serve = list;
    this.pushServe();
  }

  private pushServe(): void {
    if (!this.proxy) return;
    const key = JSON.stringify(this.serve);
    if (key === this.pushedServe) return;
    this.proxy.setLocalServe(this.serve);
    this.pushedServe = key;
  }

  /** Peer agents as last seen (dialled: out; dialled us: in). */
  peers(): TunnelPeer[] {
    return this.proxy?.peers() ?? [];
  }

  /** The relays this node keeps a session with (none: []). Replaces the previous list. */
  setRelays(list: { address: string; port: number }[]): void {
    this.relays = list;
    this.pushRelays();
  }

  private pushRelays(): void {
    if (!this.proxy) return;
    const key = JSON.stringify(this.relays);
    if (key === this.pushedRelays) return;
    this.proxy.setRelays(this.relays);
    this.pushedRelays = key;
  }

  /** Nodes registered with this agent as their relay. */
  registrations(): NativeRegistration[] {
    return this.proxy?.registrations() ?? [];
  }

  /** This node's sessions with its relays. */
  sessions(): NativeSession[] {
    return this.proxy?.sessions() ?? [];
  }

  /** Whether the kernel can take TLS records (kTLS), and why (not). */
  ktls(): { available: boolean; reason: string } | undefined {
    return this.proxy?.ktls();
  }

  /** Counters (after close: the last ones seen). */
  stats(): ProxyStats {
    if (this.proxy) this.lastStats = toStats(this.proxy.stats());
    if (!this.lastStats) return toStats(emptyNativeStats());
    return this.lastStats;
  }

  /** The live connections, from every worker (empty when not running). */
  connections(): ConnectionInfo[] {
    return this.proxy?.connections() ?? [];
  }

  /** Ends one connection now (its event says "cancelled"). */
  cancel(id: number): void {
    this.proxy?.cancel(id);
  }

  /** Lets the process exit while the proxy runs (like net.Server#unref); may be called before start(). */
  unref(): this {
    this.refed = false;
    this.proxy?.unref();
    return this;
  }

  ref(): this {
    this.refed = true;
    this.proxy?.ref();
    return this;
  }

  /**
   * Stops accepting at once (new connections are refused by the kernel), lets live connections
   * finish for up to `graceMs`, then cancels what is left, joins the workers and closes every fd.
   * Every connection's final event has been emitted when the promise resolves.
   */
  close(graceMs = 5000): Promise<void> {
    if (this.closing) return this.closing;
    const p = this.proxy;
    if (!p) return (this.closing = Promise.resolve());
    this.closing = (async () => {
      p.stopAccepting();
      const deadline = Date.now() + Math.max(0, graceMs);
      while (p.stats().active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
      p.close();
      this.lastStats = toStats(p.stats());
      this.proxy = undefined;
    })();
    return this.closing;
  }

  private onEvents(events: NativeConnEvent[]): void {
    for (const e of events) {
      try {
        this.emit('connection', e);
      } catch (err) {
        if (this.listenerCount('error') > 0) this.emit('error', err as Error);
        else queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}

function emptyNativeStats(): NativeProxyStats {
  return {
    active: 0,
    accepted: 0,
    relayed: 0,
    bytesUp: 0,
    bytesDown: 0,
    failovers: 0,
    connectFailures: 0,
    refused: { 'over-limit': 0, 'no-original-dst': 0, loop: 0, 'no-route': 0, 'no-endpoints': 0, 'tunnel-handshake': 0, 'tunnel-request': 0 },
    ended: { eof: 0, reset: 0, 'idle-timeout': 0, cancelled: 0, error: 0, 'connect-failed': 0, refused: 0 },
    acceptErrors: 0,
    acceptBackoffs: 0,
    handoffs: 0,
    pipesCreated: 0,
    pipesReused: 0,
    spliceFallbacks: 0,
    pipeSize: 0,
    tunnel: {
      dialed: 0,
      dialOk: 0,
      dialConnectFailed: 0,
      inAccepted: 0,
      inOk: 0,
      resumed: 0,
      ktls: 0,
      pending: 0,
      pendingLimit: 0,
      bytesOut: 0,
      bytesIn: 0,
      dialHandshakeFailures: zeros(TLS_FAILURES),
      inHandshakeFailures: zeros(TLS_FAILURES),
      dialRefused: zeros(TUNNEL_REFUSALS),
      inRefused: zeros(TUNNEL_REFUSALS),
      relayJoinsOk: 0,
      relayJoinsRefused: zeros(TUNNEL_REFUSALS),
      relayUnknownToken: 0,
      relayRateLimited: 0,
      relayBytes: 0,
      registered: 0,
      pendingJoins: 0,
      dialJoinOk: 0,
      dialJoinRefused: zeros(TUNNEL_REFUSALS),
      dataConns: 0,
      dataConnsFailed: 0,
    },
  };
}

export const TLS_FAILURES: readonly NativeTlsFailure[] = ['no-certificate', 'unknown-ca', 'expired', 'name-mismatch', 'bad-certificate', 'protocol', 'timeout', 'closed'];
export const TUNNEL_REFUSALS: readonly NativeTunnelRefusal[] = ['bad-request', 'no-service', 'not-local', 'endpoint-failed', 'over-limit', 'not-registered', 'timeout'];

function zeros<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}
