// Declaration of the addon's proxy surface (native/sockopt.cc, native/relay_binding.cc).
// Only src/proxy/ calls these; everything user-facing is validated there first.
import type { ConnectionEvent, TcpProxyOptions } from './proxy.js';

export interface NativeSockEndpoint {
  address: string;
  port: number;
  family: 4 | 6;
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

/** The addon's final event per connection: exactly ConnectionEvent (documented in proxy.ts). */
export type NativeConnEvent = ConnectionEvent;

export interface NativeProxyStats {
  active: number;
  accepted: number;
  relayed: number;
  bytesUp: number;
  bytesDown: number;
  failovers: number;
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
