// Declaration of the addon's proxy surface (native/sockopt.cc, native/relay_binding.cc).
// Only src/proxy/ calls these; everything user-facing is validated there first.

export interface NativeSockEndpoint {
  address: string;
  port: number;
  family: 4 | 6;
}

export interface NativeProxyConfig {
  address: string;
  port: number;
  netns?: string;
  threads?: number;
  maxConnections?: number;
  connectTimeoutMs?: number;
  maxConnectAttempts?: number;
  idleTimeoutMs?: number;
  selection?: 'round-robin' | 'random';
  mode?: 'splice' | 'copy';
  pipeSize?: number;
  backlog?: number;
  copyBufferSize?: number;
  pipePoolMax?: number;
  pipeIdleMs?: number;
  events?: 'all' | 'failures' | 'none';
}

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

export interface NativeConnEvent {
  id: number;
  client: string;
  originalDst: string;
  service: string;
  endpoint: string;
  bytesUp: number;
  bytesDown: number;
  durationMs: number;
  reason: NativeEndReason;
  refusal?: NativeRefusal;
  errno?: number;
  code?: string;
  syscall?: string;
  failovers: number;
  mode: 'splice' | 'copy';
}

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
