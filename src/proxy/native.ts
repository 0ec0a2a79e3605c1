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

export interface NativeRoute {
  ip: string;
  port: number;
  service: string;
  endpoints: { ip: string; port: number }[];
  clientIPAffinity: boolean;
  affinityTimeoutSeconds: number;
}

export type NativeEndReason = 'eof' | 'reset' | 'idle-timeout' | 'cancelled' | 'error' | 'connect-failed' | 'refused';
export type NativeRefusal = 'over-limit' | 'no-original-dst' | 'loop' | 'no-route' | 'no-endpoints';

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
}

export interface NativeProxyBinding {
  originalDst(fd: number): NativeSockEndpoint;
  raiseNofileLimit(): { soft: number; hard: number };
  Proxy: new (config: NativeProxyConfig, onEvents: (events: NativeConnEvent[]) => void) => NativeProxy;
}
