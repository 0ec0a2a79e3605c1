// Declaration of the addon's proxy surface (native/sockopt.cc, native/relay_binding.cc).
// Only src/proxy/ calls these; everything user-facing is validated there first. The addon takes
// TcpProxyOptions and emits ConnectionEvent as they are, so those two public types are declared
// here and re-exported by proxy.ts: this file imports nothing, and the addon loader (src/native.ts)
// can import it without a cycle through proxy.ts.

export interface NativeSockEndpoint {
  address: string;
  port: number;
  family: 4 | 6;
}

export interface TcpProxyOptions {
  /** Listen address (default 169.254.96.16, on edgemesh0). IPv6 without brackets. */
  address?: string;
  /** Listen port (default 40001; 0 picks a free one). */
  port?: number;
  /** Run in this network namespace (path such as /run/netns/NAME) instead of the process's own. */
  netns?: string;
  /** Worker threads, each with its own epoll (default min(2, CPUs)). */
  threads?: number;
  /** Concurrent connections; excess ones are reset and counted (default 16384). */
  maxConnections?: number;
  /** Per endpoint attempt (default 1000 ms). */
  connectTimeoutMs?: number;
  /** Endpoints tried per connection before the client is reset (default 3, at most the endpoint count). */
  maxConnectAttempts?: number;
  /** A relayed connection with no bytes either way for this long is ended (default 1 h; 0 = never). */
  idleTimeoutMs?: number;
  /** Endpoint choice when no session affinity applies (default round-robin). */
  selection?: 'round-robin' | 'random';
  /** splice (default) or plain read/write copy; splice falls back to copy by itself where impossible. */
  mode?: 'splice' | 'copy';
  /** Pipe size asked with F_SETPIPE_SZ (default 1 MiB; the kernel may grant less). */
  pipeSize?: number;
  /**
   * Which connections emit a 'connection' event: all (default), failures (every end but a clean
   * EOF, refusals included), none. Counters count everything either way; fewer events save the
   * JS thread work per connection on short-connection-heavy nodes.
   */
  events?: 'all' | 'failures' | 'none';
  /** A pooled (empty, reusable) pipe unused this long is closed (default 2000 ms). */
  pipeIdleMs?: number;
  /** listen(2) backlog (default 4096). */
  backlog?: number;
  /**
   * The tunnel listener (agents dial it over mutual TLS to reach this node's endpoints): address
   * without brackets and port. Off when unset. Its connections count against maxConnections.
   */
  tunnelAddress?: string;
  tunnelPort?: number;
  /** TLS handshake plus the tunnel request and answer, before the attempt is given up (default 5000 ms). */
  handshakeTimeoutMs?: number;
  /** Inbound tunnel connections not yet authenticated; more are reset at once (default 1024). */
  maxPendingHandshakes?: number;
}

/**
 * What the addon's Proxy constructor takes: TcpProxyOptions (documented in proxy.ts) with the
 * address and port resolved, plus two knobs only tests and benches set.
 */
export type NativeProxyConfig = Omit<TcpProxyOptions, 'address' | 'port'> & {
  address: string;
  port: number;
  /** Buffer of the copy path (default 64 KiB). */
  copyBufferSize?: number;
  /** Most empty pipes a worker keeps for reuse (default 512). */
  pipePoolMax?: number;
};

export interface NativeRouteEndpoint {
  ip: string;
  port: number;
  /** How it is reached (default direct). */
  path?: 'local' | 'direct' | 'tunnel' | 'relay';
  /** Its node; for path tunnel the node name its agent's certificate must carry. */
  node?: string;
  /** Path tunnel: that agent's tunnel listener. */
  tunnel?: { address: string; port: number };
  /** Path relay: the relays to ask for a join to the node, in order. */
  relays?: { address: string; port: number }[];
}

export interface NativeRoute {
  ip: string;
  port: number;
  /** "namespace/name:portName", for events. */
  service: string;
  /** "namespace/name", named in tunnel requests. */
  serviceName?: string;
  endpoints: NativeRouteEndpoint[];
  clientIPAffinity: boolean;
  affinityTimeoutSeconds: number;
}

/** What this node's tunnel listener may serve: its own endpoints of one Service port. */
export interface NativeLocalServe {
  service: string;
  port: number;
  endpoints: { ip: string; port: number }[];
}

export type NativeTlsFailure = 'no-certificate' | 'unknown-ca' | 'expired' | 'name-mismatch' | 'bad-certificate' | 'protocol' | 'timeout' | 'closed';
export type NativeTunnelRefusal = 'bad-request' | 'no-service' | 'not-local' | 'endpoint-failed' | 'over-limit' | 'not-registered' | 'timeout';

export interface NativeTunnelStats {
  dialed: number;
  dialOk: number;
  dialConnectFailed: number;
  inAccepted: number;
  inOk: number;
  resumed: number;
  ktls: number;
  pending: number;
  pendingLimit: number;
  bytesOut: number;
  bytesIn: number;
  dialHandshakeFailures: Record<NativeTlsFailure, number>;
  inHandshakeFailures: Record<NativeTlsFailure, number>;
  dialRefused: Record<NativeTunnelRefusal, number>;
  inRefused: Record<NativeTunnelRefusal, number>;
  /** As a relay: joins spliced, joins refused by reason, data connections naming no join, joins over the rate, bytes spliced, nodes registered, joins waiting. */
  relayJoinsOk: number;
  relayJoinsRefused: Record<NativeTunnelRefusal, number>;
  relayUnknownToken: number;
  relayRateLimited: number;
  relayBytes: number;
  registered: number;
  pendingJoins: number;
  /** As a dialler through relays: joins answered ok, or refused by reason. */
  dialJoinOk: number;
  dialJoinRefused: Record<NativeTunnelRefusal, number>;
  /** As a registered node: data connections opened for joins, and those that failed. */
  dataConns: number;
  dataConnsFailed: number;
}

export interface NativeRegistration {
  node: string;
  address: string;
  /** ms since the epoch */
  since: number;
}

export interface NativeSession {
  relay: string;
  state: 'connecting' | 'handshake' | 'registered' | 'backoff' | 'no-credentials';
  lastError: string;
  relayNode: string;
  since: number;
  connects: number;
  failures: number;
  notifies: number;
}

export interface NativePeer {
  node: string;
  direction: 'out' | 'in';
  address: string;
  /** "ok", a handshake failure, "refused:<reason>", or an errno name (connect). */
  lastResult: string;
  /** ms since the epoch */
  lastAt: number;
  ok: number;
  handshakeFailed: number;
  refused: number;
  connectFailed: number;
  resumed: number;
}

export type NativeEndReason = 'eof' | 'reset' | 'idle-timeout' | 'cancelled' | 'error' | 'connect-failed' | 'refused';
export type NativeRefusal = 'over-limit' | 'no-original-dst' | 'loop' | 'no-route' | 'no-endpoints' | 'tunnel-handshake' | 'tunnel-request';

/** The one final event of every connection the proxy accepted (see TcpProxyOptions.events). */
export interface ConnectionEvent {
  id: number;
  /** "ip:port" / "[ip]:port" */
  client: string;
  /** The pre-DNAT destination ("" when it could not be read). */
  originalDst: string;
  /** "namespace/name" of the Service ("" when refused). */
  service: string;
  /** The endpoint used last ("" when refused). */
  endpoint: string;
  /** Client -> endpoint. */
  bytesUp: number;
  /** Endpoint -> client. */
  bytesDown: number;
  durationMs: number;
  reason: NativeEndReason;
  /** Set when reason is "refused". */
  refusal?: NativeRefusal;
  /** errno name, number and syscall of the failure that ended it, when there was one. */
  code?: string;
  errno?: number;
  syscall?: string;
  failovers: number;
  mode: 'splice' | 'copy';
  /** How the endpoint used last was reached; "tunnel-in": a connection our tunnel listener served. */
  path?: 'local' | 'direct' | 'tunnel' | 'tunnel-in';
  /** The peer agent's node (path tunnel or tunnel-in). */
  peer?: string;
  /** The last attempt's TLS handshake failed. */
  tlsFailure?: NativeTlsFailure;
  /** The last attempt's tunnel request was refused (by the peer; by us for tunnel-in). */
  tunnelRefusal?: NativeTunnelRefusal;
  /** The TLS session was resumed (no certificate exchange). */
  resumed?: boolean;
  /** The kernel encrypted the sending side (kTLS). */
  ktls?: boolean;
}

/** The addon's final event per connection: exactly ConnectionEvent. */
export type NativeConnEvent = ConnectionEvent;

export interface NativeProxyStats {
  active: number;
  accepted: number;
  relayed: number;
  bytesUp: number;
  bytesDown: number;
  failovers: number;
  /** Every failed endpoint attempt (refused, timed out, unreachable), whether the connection then failed over or ended. */
  connectFailures: number;
  refused: Record<NativeRefusal, number>;
  ended: Record<NativeEndReason, number>;
  acceptErrors: number;
  acceptBackoffs: number;
  handoffs: number;
  pipesCreated: number;
  pipesReused: number;
  spliceFallbacks: number;
  pipeSize: number;
  tunnel: NativeTunnelStats;
}

export interface NativeConnInfo {
  id: number;
  client: string;
  originalDst: string;
  service: string;
  endpoint: string;
  state: 'connecting' | 'relaying';
  bytesUp: number;
  bytesDown: number;
  ageMs: number;
  /** Index of the worker thread relaying it. */
  worker: number;
  path?: string;
  peer?: string;
}

export interface NativeProxy {
  connections(): NativeConnInfo[];
  setRoutes(routes: NativeRoute[]): void;
  stats(): NativeProxyStats;
  cancel(id: number): void;
  stopAccepting(): void;
  close(): void;
  address(): NativeSockEndpoint;
  ref(): void;
  unref(): void;
  setTunnelCredentials(pem: { ca: string; cert: string; key: string } | null): { node: string; serial: string; notAfter: string } | undefined;
  setLocalServe(list: NativeLocalServe[]): void;
  peers(): NativePeer[];
  tunnelAddress(): NativeSockEndpoint | null;
  ktls(): { available: boolean; reason: string };
  setRelays(list: { address: string; port: number }[]): void;
  registrations(): NativeRegistration[];
  sessions(): NativeSession[];
}

export interface NativeProxyBinding {
  originalDst(fd: number): NativeSockEndpoint;
  raiseNofileLimit(): { soft: number; hard: number };
  checkTunnelCredentials(pem: { ca: string; cert: string; key: string }): { node: string; serial: string; notAfter: string };
  Proxy: new (config: NativeProxyConfig, onEvents: (events: NativeConnEvent[]) => void) => NativeProxy;
}
