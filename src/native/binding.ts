// The addon's TypeScript face: every type the native binding takes and returns, in one module that
// imports only types. The loader (load.ts) combines them into NativeBinding.
import type { Family, Protocol, Rule } from '../netfilter/rules.js';
import type { TxOp } from '../netfilter/types.js';

// ---- libiptc (iptables-legacy) ----
// Declaration of the addon's libiptc surface (native/iptc/iptc_binding.cc). Only the
// iptables-legacy backend calls these; every function returns a Promise settled off the JS
// thread, throws TypeError synchronously on a wrong argument type, and rejects with an Error
// carrying code/errno/syscall (and opIndex for ETRANSACTION).

export interface NativeRuleSpec {
  src?: string;
  dst?: string;
  protocol?: Protocol;
  comment?: string;
  target: string;
  toDestination?: { address: string; port?: number };
}

export interface NativeLiveRule extends NativeRuleSpec {
  packets: number;
  bytes: number;
  /** Matches, flags and options read but not modelled ("conntrack", "in-interface", "!dst"...). */
  unknown: string[];
}

export type NativeTxOp =
  | { op: 'replaceChain'; chain: string; rules: NativeRuleSpec[] }
  | { op: 'flushChain' | 'deleteChain'; chain: string }
  | { op: 'insertRule'; chain: string; rule: NativeRuleSpec; position?: number }
  | { op: 'moveRule'; chain: string; rule: NativeRuleSpec; position: number }
  | { op: 'deleteRule'; chain: string; rule: NativeRuleSpec };

export interface NativeTableInfo {
  size: number;
  entries: number;
  /** False when the nat table does not exist in the namespace (info/read never create it). */
  present: boolean;
  /** Offsets of the built-in chains' first rules and policies (see TableInfo.builtinLayout). */
  builtinLayout: string;
  /** Digest of the built-in chains' entries without counters; '' when the table is absent. */
  headDigest?: string;
  /** CPU ms the digest took (thread time, the kernel's copy included). */
  digestCpuMs?: number;
}

export interface NativeApplyOptions {
  /** The xtables lock file; empty: $XTABLES_LOCKFILE or /run/xtables.lock. */
  lockfile?: string;
  lockWaitMs?: number;
  lockIntervalMs?: number;
  maxAttempts?: number;
  /** Network namespace file (/run/netns/NAME); empty: the process's own. */
  netnsPath?: string;
}

export interface NativeApplyResult {
  attempts: number;
  lockWaitMs: number;
  durationMs: number;
  /** info() token of the table right after our commit, read under the lock. */
  tokenAfter: string;
  builtinLayoutAfter: string;
}

export interface NativeSnapshot {
  chains: { name: string; rules: NativeLiveRule[] }[];
  info: NativeTableInfo;
}

export interface NativeIptcBinding {
  /** `digest` false: IPT_SO_GET_INFO only (headDigest ''). */
  iptcInfo(family: Family, netnsPath: string, digest?: boolean): Promise<NativeTableInfo>;
  /** Starts noticing opens/closes of the xtables lock file (created when missing); returns a watch id. Synchronous. */
  iptcLockWatch?(lockfile?: string): number;
  /** Opens/closes of the lock file since the last call. Synchronous, never blocks. */
  iptcLockEvents?(watch: number): number;
  iptcLockUnwatch?(watch: number): void;
  iptcRead(family: Family, chains: string[], netnsPath: string): Promise<NativeSnapshot>;
  iptcApply(family: Family, ops: NativeTxOp[], options: NativeApplyOptions): Promise<NativeApplyResult>;
  /** Takes the xtables lock and reads the table once; end with iptcCommit or iptcAbort. */
  iptcBegin(family: Family, chains: string[], options: NativeApplyOptions): Promise<{ session: number; snapshot: NativeSnapshot }>;
  /** Applies ops to the session's read and commits (EAGAIN: re-read and re-apply); ends the session. */
  iptcCommit(session: number, ops: NativeTxOp[]): Promise<NativeApplyResult>;
  /** Ends the session without writing. */
  iptcAbort(session: number): Promise<void>;
}

// ---- nftables netlink (iptables-nft and the native table) ----
// Declaration of the addon's nf_tables surface (native/nft/nft_binding.cc over native/nft/nft_core.cc).
// Only the nft backends and detection call it; every call takes the path of a network
// namespace to work in ('' or undefined: the caller's own), entered on the worker thread.

/** 'xt': rules in the shape iptables-nft writes (ip/ip6 nat); 'nft': native nftables expressions. */
export type NftDialect = 'xt' | 'nft';
export type NftHook = 'prerouting' | 'input' | 'output' | 'postrouting';

/** A rule as read; `dstSet` (a set lookup) only in the 'nft' dialect. */
export interface NftLiveRule extends Rule {
  packets: number;
  bytes: number;
  /** The kernel's rule handle (stable for the rule's life). */
  handle: number;
  unknown?: string[];
}

export interface NftChain {
  name: string;
  handle: number;
  base: boolean;
  hook?: NftHook | 'forward' | 'unknown';
  priority?: number;
  type?: string;
  policy?: 'accept' | 'drop' | 'other';
  /** References to the chain (jumps and, for some kernels, rules). */
  use: number;
  rules: NftLiveRule[];
}

/** An element of an address set: key is a host CIDR ("10.0.0.3/32"), as a rule's dst. */
export interface NftSetElement {
  key: string;
  comment?: string;
}

export interface NftLiveSetElement extends NftSetElement {
  packets: number;
  bytes: number;
  /** Parts the backend does not model (flags, timeouts); such an element is rewritten. */
  unknown?: true;
}

export interface NftSet {
  name: string;
  handle: number;
  /** nft datatype id of the key: 7 ipv4_addr, 8 ipv6_addr. */
  keyType: number;
  keyLen: number;
  flags: number;
  /** Every element carries a counter (the set's expression). */
  counter: boolean;
  /** The shape the backend writes: an address set of the family, no flags, with counters. */
  ours: boolean;
  elements: NftLiveSetElement[];
}

/** "This set holds exactly these elements" (created when missing, with a counter per element). */
export interface NftSetSpec {
  name: string;
  elements: readonly NftSetElement[];
}

export interface NftReadRequest {
  netns?: string;
  family: Family;
  table: string;
  dialect: NftDialect;
  /** The chains to read; omitted: every chain of the table (only for small tables). */
  chains?: readonly string[];
  /** False: chain headers only. Default true. */
  withRules?: boolean;
  /** Sets to read with their elements (missing ones are absent from the result). */
  sets?: readonly string[];
}

export interface NftReadResult {
  /** Generation id the read is consistent with. */
  genid: number;
  tableExists: boolean;
  /** The chains that exist, in the order asked (or the kernel's order). */
  chains: NftChain[];
  /** The sets asked for that exist. */
  sets: NftSet[];
}

export interface NftBaseChain {
  name: string;
  hook: NftHook;
  priority: number;
}

export interface NftApplyRequest {
  netns?: string;
  family: Family;
  table: string;
  dialect: NftDialect;
  /**
   * 'nft' dialect: make these base chains (type nat, policy accept) exist with exactly this hook
   * and priority (a chain with another hook/priority is deleted and created again), creating the
   * table if needed. 'xt' dialect: not used; iptables-nft's nat base chains are created on demand.
   */
  baseChains?: readonly NftBaseChain[];
  /**
   * 'nft' dialect: sets written in the same batch, before the rules that look them up. Elements
   * are added and removed by key, so the counters of those that stay are kept. A live set of
   * another shape is deleted and created anew in the same batch, with the rules that look it up.
   */
  sets?: readonly NftSetSpec[];
  ops: readonly TxOp[];
  /**
   * The generation id of the read the ops were planned on (NftReadResult.genid). Given: a
   * ruleset changed since then fails with code EGENERATION and nothing written (read and plan
   * again). Absent: the ops are re-applied to a fresh read, up to maxAttempts times.
   */
  genid?: number;
  /** Without genid: batches refused because the ruleset changed since it was read are retried; default 5. */
  maxAttempts?: number;
}

export interface NftApplyResult {
  attempts: number;
  /** Netlink messages in the committed batch; 0 when nothing needed writing (no batch sent). */
  messages: number;
  /** The generation id our commit made (the one the read was planned on + 1); nothing written: the one checked against. */
  genid: number;
}

export interface NftRawRule {
  handle: number;
  /** Each expression of NFTA_RULE_EXPRESSIONS as hex in brackets; counters as "[counter]". */
  exprs: string;
  compat: string;
  userdata: string;
}

export interface NativeNftBinding {
  nftGenId(netns?: string): Promise<number>;
  nftRead(req: NftReadRequest): Promise<NftReadResult>;
  nftApply(req: NftApplyRequest): Promise<NftApplyResult>;
  /** Deletes a whole table in one batch; false when it did not exist. */
  nftDeleteTable(netns: string | undefined, family: Family, table: string): Promise<boolean>;
  nftListTables(netns?: string): Promise<{ family: 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev' | 'unknown'; name: string }[]>;
  /** Raw rule attributes of a chain (diagnostics; byte-for-byte comparison with iptables-nft). */
  nftRawRules(netns: string | undefined, family: Family, table: string, chain: string): Promise<NftRawRule[]>;
  /** Contents of /proc/net/<name> as seen from inside the namespace; null when absent. */
  readProcNet(netns: string | undefined, name: string): Promise<string | null>;
}

// ---- the proxy, the tunnel and relays ----
// Declaration of the addon's proxy surface (native/relay/sockopt.cc, native/relay/relay_binding.cc).
// Only src/proxy/ calls these; everything user-facing is validated there first. The addon takes
// TcpProxyOptions and emits ConnectionEvent as they are, so those two public types are declared
// here and re-exported by proxy.ts: this file imports nothing, and the addon loader (src/native/load.ts)
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

// ---- the process (re-exec, malloc statistics and trim, memory release) ----
// The addon's process part: re-executing the agent with V8 flags, glibc's heap figures and trim,
// V8's low-memory collection, and the release of the node executable's start-up pages.

export interface MallocStats {
  /** Bytes the arenas (every thread's) obtained from the kernel. */
  arenaBytes: number;
  /** Bytes in chunks mmapped on their own. */
  mmapBytes: number;
  /** Bytes handed out and not freed. */
  inUseBytes: number;
  /** Bytes free inside the arenas: at most what malloc_trim could return. */
  freeBytes: number;
}

export interface ExecutableRelease {
  /** Mappings unmapped. */
  mappings: number;
  /** MADV_PAGEOUT was applied (false: not asked, or a kernel before 5.4). */
  pageout: boolean;
  rssBefore: number;
  rssAfter: number;
}

export interface NativeProcessBinding {
  /** execve(2): replaces the process; returns only by throwing (code, errno, syscall "execve"). */
  reexec(path: string, argv: string[], env: string[]): never;
  mallocStats(): MallocStats;
  /** malloc_trim(0): returns glibc's free memory to the kernel; true when some was released. */
  mallocTrim(): boolean;
  /** V8's low-memory collection (repeated full collections, weak caches cleared, compacting). */
  lowMemoryNotification(): void;
  /**
   * Releases the node executable's resident read-only pages (code, constant data): with `pageout`
   * first MADV_PAGEOUT (reclaims the pages only this process maps), then MADV_DONTNEED (unmaps the
   * rest; they stay in the page cache). Pages fault back in when touched. rssBefore/rssAfter: the
   * resident bytes of those mappings. Throws (code, errno, syscall) when madvise fails.
   */
  releaseExecutablePages(pageout: boolean): ExecutableRelease;
}

// ---- certificates (OpenSSL) ----
// Declaration of the addon's certificate surface (native/certs/certs_binding.cc over certs_core.h).
// Only src/tunnel/ calls these; names, paths and options are validated there first.
// All three are synchronous: a node certificate takes about a millisecond.
// A wrong JS type throws a TypeError naming the field ("spec.caKeyPem must be a string"); a core
// failure throws an Error whose `code` is one of NativeCertErrorCode.

export interface NativeCaSpec {
  /** Default "edgemesh cluster CA"; 1 to 64 characters. */
  commonName?: string;
  /** Seconds relative to now (default -3600: back-dated for clocks that lag a little). */
  notBeforeOffsetSeconds?: number;
  /** Seconds relative to now (default 10 years). */
  notAfterOffsetSeconds?: number;
}

export interface NativeIssueSpec {
  caCertPem: string;
  caKeyPem: string;
  /** CN and DNS subjectAltName; [a-z0-9.-], at most 253 characters (no CN beyond X.509's 64). */
  name: string;
  /** Seconds relative to now (default -3600). */
  notBeforeOffsetSeconds?: number;
  /** Seconds relative to now (default 1 year); may be negative, for an expired certificate. */
  notAfterOffsetSeconds?: number;
}

export interface NativeKeyPair {
  certPem: string;
  /** PKCS#8, unencrypted. */
  keyPem: string;
}

export interface NativeCertInfo {
  /** '' when the subject has no CN. */
  subjectCN: string;
  dnsNames: string[];
  /** Uppercase hex in whole bytes, exactly as `openssl x509 -noout -serial` prints it. */
  serialHex: string;
  /** ISO-8601 UTC, second precision: "2026-01-31T12:00:00Z". */
  notBefore: string;
  notAfter: string;
  issuerCN: string;
  /** basicConstraints CA:TRUE. */
  isCa: boolean;
}

export type NativeCertErrorCode = 'EBADCERT' | 'EBADKEY' | 'EKEYMISMATCH' | 'ENOTCA' | 'EINVAL' | 'ECERT';

export interface NativeCertsBinding {
  generateCa(spec?: NativeCaSpec): NativeKeyPair;
  issueCert(spec: NativeIssueSpec): NativeKeyPair;
  /** The first certificate of the PEM text. */
  certInfo(pem: string): NativeCertInfo;
}
