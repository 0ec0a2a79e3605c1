// The proxy's routing table as a pure function of the cluster model: one route per
// (ClusterIP, port, TCP) of every proxied Service, with the endpoints kube-proxy would use.
//
// kube-proxy semantics kept here (pkg/proxy/endpointslicecache.go, topology.go):
// - an endpoint port is matched to a Service port by the Service port's *name* (the
//   EndpointSlice controller names slice ports after Service ports, having resolved a named
//   targetPort per pod); for slices written by hand we also accept a slice port named like the
//   targetPort, and a numeric targetPort when the slice lists no ports;
// - only the first address of an endpoint is used;
// - cluster traffic goes to ready endpoints; when none is ready, to endpoints that are serving
//   and terminating; otherwise the Service has no endpoints (the proxy resets the client);
// - Endpoints-derived slices count only when the Service has no EndpointSlice;
// - an endpoint address Kubernetes' API validation refuses (ValidateEndpointIP: unspecified,
//   loopback, link-local unicast, link-local multicast; IPv4-mapped forms included) is never a
//   relay target: the proxy runs in the node's network namespace, and such an endpoint (written
//   in a services dir or served by a lax API) would let a pod reach the node's loopback-only
//   listeners, or the proxy itself, through a ClusterIP;
// - internalTrafficPolicy Local: only endpoints on this node.
//
// Paths (with PathOptions): an endpoint on this node is dialled `local`; one whose address is in
// a --direct-cidr `direct`; any other, with the tunnel on, through the `tunnel` to its node's
// agent, when that node has a tunnel address. Otherwise the endpoint is unreachable from here:
// left out of the route (so the proxy never connects to an address it cannot route to) and
// listed with the reason. The ready / serving+terminating choice is made over the endpoints that
// remain: a ready endpoint we cannot reach must not hide a terminating one we can. Without the
// tunnel nothing is unreachable: every endpoint is dialled, as before the tunnel existed.
import { isIP } from 'node:net';
import { cidrContains, parseIp, type ParsedCidr, type ParsedIp } from '../net.js';
import type { ClusterState, EndpointInfo, EndpointSliceInfo, ServiceInfo, ServiceKey, ServicePortInfo } from '../cluster/model.js';

export type EndpointPath = 'local' | 'direct' | 'tunnel' | 'relay';

export interface RouteEndpoint {
  ip: string;
  port: number;
  path: EndpointPath;
  /** the endpoint's nodeName, when the source gave one */
  node?: string;
  /** path 'tunnel': the peer agent's tunnel address (address without brackets) */
  tunnel?: { address: string; port: number };
  /** path 'relay': the relays to ask, in order, for a join to the node (addresses without brackets) */
  relays?: { address: string; port: number }[];
}

export interface ServiceRoute {
  /** ClusterIP (IPv4 or IPv6 literal) and Service port: the key the proxy matches SO_ORIGINAL_DST against. */
  ip: string;
  port: number;
  family: 4 | 6;
  protocol: 'TCP';
  service: ServiceKey;
  /** The Service port's name ("" when unnamed). */
  portName: string;
  /** Deduplicated, sorted; empty when the Service has no usable endpoint. */
  endpoints: RouteEndpoint[];
  /** Which endpoints were taken: ready ones, or kube-proxy's serving+terminating fallback. */
  endpointSet: 'ready' | 'serving-terminating' | 'none';
  affinity: { clientIP: boolean; timeoutSeconds: number };
}

/** How this node reaches endpoints. */
export interface PathOptions {
  /** This node's name, as in EndpointSlice nodeName. */
  nodeName: string;
  /** Endpoint addresses this node dials directly wherever they run. */
  directCidrs: readonly ParsedCidr[];
  /** Tunnel credentials are configured: endpoints on other nodes go through their agents. */
  tunnel: boolean;
  /**
   * Relays (--tunnel-relay, resolved): a node without a tunnel address is reached through the
   * first of them where it is registered. Empty: such nodes are unreachable.
   */
  relays?: readonly { address: string; port: number }[];
}

export type UnreachableReason = 'no-node-name' | 'unknown-node' | 'no-tunnel-address';

export interface UnreachableEndpoint {
  service: ServiceKey;
  ip: string;
  /** The endpoint (target) port. */
  port: number;
  node?: string;
  reason: UnreachableReason;
}

export interface RoutingTable {
  /** Sorted by family, ip, port: equal cluster states give equal tables. */
  routes: ServiceRoute[];
  /**
   * Endpoints left out because no path reaches them; sorted by service, ip, port, deduplicated.
   * Always set by computeRoutes; optional so that a table written by hand (an empty one) is valid.
   */
  unreachable?: UnreachableEndpoint[];
}

/** Decides which Services the proxy serves (the ignored ones stay with kube-proxy). */
export type IsProxied = (svc: ServiceInfo) => boolean;

const familyOf = (ip: string): 4 | 6 | 0 => {
  const f = isIP(ip);
  return f === 4 || f === 6 ? f : 0;
};

/** The slice port number serving `sp`, or undefined when this slice cannot serve it. */
export function resolveTargetPort(sp: ServicePortInfo, slice: EndpointSliceInfo): number | undefined {
  const byName = slice.ports.find((p) => p.protocol === sp.protocol && p.name === sp.name);
  if (byName) return byName.port;
  if (typeof sp.targetPort === 'string') {
    return slice.ports.find((p) => p.protocol === sp.protocol && p.name === sp.targetPort)?.port;
  }
  if (slice.ports.length === 0) return sp.targetPort;
  return slice.ports.find((p) => p.protocol === sp.protocol && p.port === sp.targetPort)?.port;
}

function slicesFor(state: ClusterState, key: ServiceKey, family: 4 | 6): EndpointSliceInfo[] {
  const all = state.slices.get(key) ?? [];
  const hasSlices = all.some((s) => s.source === 'EndpointSlice');
  const want = family === 4 ? 'IPv4' : 'IPv6';
  return all.filter((s) => s.addressType === want && (!hasSlices || s.source === 'EndpointSlice'));
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

function compareEndpoints(a: { ip: string; port: number }, b: { ip: string; port: number }): number {
  return cmp(a.ip, b.ip) || a.port - b.port;
}

/** The parsed address, undefined for addresses Kubernetes refuses as endpoints (see the header) and unparsable ones. */
function endpointAddress(text: string): ParsedIp | undefined {
  let ip;
  try {
    ip = parseIp(text);
  } catch {
    return undefined;
  }
  let v = ip.value;
  if (ip.family === 'ipv6') {
    if (v >> 32n === 0xffffn) v &= 0xffffffffn; // ::ffff:a.b.c.d is a.b.c.d
    else {
      return v === 0n || v === 1n || v >> 118n === 0x3fan /* fe80::/10 */ || v >> 112n === 0xff02n ? undefined : ip;
    }
  }
  const a = Number(v >> 24n);
  const ab = Number(v >> 16n);
  const abc = Number(v >> 8n);
  return v === 0n || a === 127 || ab === 0xa9fe /* 169.254/16 */ || abc === 0xe00000 /* 224.0.0/24 */ ? undefined : ip;
}

/** True for addresses Kubernetes refuses as endpoints (see the header); unparsable counts as special. */
export function isSpecialEndpointAddress(text: string): boolean {
  return endpointAddress(text) === undefined;
}

/** How one endpoint is reached from this node: a path, unreachable, or not wanted at all. */
type Reach =
  | { kind: 'path'; path: EndpointPath; tunnel?: { address: string; port: number }; relays?: readonly { address: string; port: number }[] }
  | { kind: 'unreachable'; reason: UnreachableReason }
  | { kind: 'excluded' };

/** Pure: the path to `ep` (address `ip`) for `svc`. Without `paths` no node is known: every endpoint is `direct`. */
function reach(ep: EndpointInfo, ip: ParsedIp, svc: ServiceInfo, state: ClusterState, paths: PathOptions | undefined): Reach {
  if (!paths) return { kind: 'path', path: 'direct' };
  const local = ep.nodeName !== undefined && ep.nodeName === paths.nodeName;
  if (svc.internalTrafficPolicy === 'Local' && !local) return { kind: 'excluded' };
  if (local) return { kind: 'path', path: 'local' };
  if (!paths.tunnel || paths.directCidrs.some((c) => cidrContains(c, ip))) return { kind: 'path', path: 'direct' };
  if (ep.nodeName === undefined) return { kind: 'unreachable', reason: 'no-node-name' };
  const node = state.nodes.get(ep.nodeName);
  if (!node) return { kind: 'unreachable', reason: 'unknown-node' };
  if (!node.tunnelAddress) {
    if (paths.relays && paths.relays.length > 0) return { kind: 'path', path: 'relay', relays: paths.relays };
    return { kind: 'unreachable', reason: 'no-tunnel-address' };
  }
  return { kind: 'path', path: 'tunnel', tunnel: { address: node.tunnelAddress.address, port: node.tunnelAddress.port } };
}

interface Chosen {
  endpoints: RouteEndpoint[];
  endpointSet: ServiceRoute['endpointSet'];
  unreachable: UnreachableEndpoint[];
}

function endpointsFor(svc: ServiceInfo, key: ServiceKey, sp: ServicePortInfo, slices: EndpointSliceInfo[], family: 4 | 6, state: ClusterState, paths: PathOptions | undefined): Chosen {
  const ready = new Map<string, RouteEndpoint>();
  const fallback = new Map<string, RouteEndpoint>();
  const lostReady: UnreachableEndpoint[] = [];
  const lostFallback: UnreachableEndpoint[] = [];
  for (const slice of slices) {
    const port = resolveTargetPort(sp, slice);
    if (port === undefined || port < 1 || port > 65535) continue;
    for (const ep of slice.endpoints) {
      const text = ep.addresses[0];
      if (text === undefined || familyOf(text) !== family) continue;
      const ip = endpointAddress(text);
      if (!ip) continue;
      const isReady = ep.ready;
      if (!isReady && !(ep.serving && ep.terminating)) continue;
      const r = reach(ep, ip, svc, state, paths);
      if (r.kind === 'excluded') continue;
      const node = ep.nodeName !== undefined ? { node: ep.nodeName } : {};
      if (r.kind === 'unreachable') {
        (isReady ? lostReady : lostFallback).push({ service: key, ip: text, port, ...node, reason: r.reason });
        continue;
      }
      const e: RouteEndpoint = { ip: text, port, path: r.path, ...node, ...(r.tunnel ? { tunnel: r.tunnel } : {}), ...(r.relays ? { relays: r.relays.map((x) => ({ ...x })) } : {}) };
      (isReady ? ready : fallback).set(`${text}|${port}`, e);
    }
  }
  // A serving+terminating endpoint we cannot reach matters only when the route falls back.
  if (ready.size > 0) return { endpoints: [...ready.values()].sort(compareEndpoints), endpointSet: 'ready', unreachable: lostReady };
  const unreachable = [...lostReady, ...lostFallback];
  if (fallback.size > 0) return { endpoints: [...fallback.values()].sort(compareEndpoints), endpointSet: 'serving-terminating', unreachable };
  return { endpoints: [], endpointSet: 'none', unreachable };
}

/** The TCP (cluster IP, family, Service port) triples of a Service that has cluster IPs; the first of duplicate ports wins. */
function* servicePorts(svc: ServiceInfo): Generator<{ ip: string; family: 4 | 6; sp: ServicePortInfo }> {
  if (svc.type === 'ExternalName' || svc.headless) return;
  for (const ip of svc.clusterIPs) {
    const family = familyOf(ip);
    if (family === 0) continue;
    const seen = new Set<number>();
    for (const sp of svc.ports) {
      if (sp.protocol !== 'TCP' || seen.has(sp.port)) continue; // a malformed duplicate port: first one wins
      seen.add(sp.port);
      yield { ip, family, sp };
    }
  }
}

function compareUnreachable(a: UnreachableEndpoint, b: UnreachableEndpoint): number {
  return cmp(a.service, b.service) || cmp(a.ip, b.ip) || a.port - b.port;
}

/**
 * The routing table for the proxied Services of `state`. Pure: no I/O, no clock. Without `paths`
 * (no node known): every endpoint is `direct` and internalTrafficPolicy is not applied.
 */
export function computeRoutes(state: ClusterState, isProxied: IsProxied, paths?: PathOptions): Required<RoutingTable> {
  const routes: ServiceRoute[] = [];
  const unreachable = new Map<string, UnreachableEndpoint>();
  const seen = new Set<string>();
  for (const [key, svc] of state.services) {
    if (!isProxied(svc)) continue;
    for (const { ip, family, sp } of servicePorts(svc)) {
      const k = `${ip}|${sp.port}`;
      if (seen.has(k)) continue; // two Services claiming one cluster IP: first one wins
      seen.add(k);
      const chosen = endpointsFor(svc, key, sp, slicesFor(state, key, family), family, state, paths);
      for (const u of chosen.unreachable) unreachable.set(`${u.service}|${u.ip}|${u.port}`, u);
      routes.push({
        ip,
        port: sp.port,
        family,
        protocol: 'TCP',
        service: key,
        portName: sp.name,
        endpoints: chosen.endpoints,
        endpointSet: chosen.endpointSet,
        affinity: { clientIP: svc.sessionAffinity === 'ClientIP', timeoutSeconds: svc.affinityTimeoutSeconds },
      });
    }
  }
  routes.sort((a, b) => a.family - b.family || cmp(a.ip, b.ip) || a.port - b.port);
  return { routes, unreachable: [...unreachable.values()].sort(compareUnreachable) };
}

/** What this node's tunnel listener may serve for one Service port. */
export interface LocalServe {
  service: ServiceKey;
  /** The Service port. */
  port: number;
  /** Sorted, deduplicated. */
  endpoints: { ip: string; port: number }[];
}

/**
 * What this node's tunnel listener may serve: for every Service port with a cluster IP
 * (proxied or not, TCP), the endpoints computeRoutes would pick whose nodeName is this node:
 * the ready ones among them, else the serving+terminating ones, per address family (an agent
 * sends a connection here only for an endpoint on this node, so the choice is made over them).
 * Service ports without such endpoints are left out. Sorted by service and port; deterministic.
 */
export function computeLocalServe(state: ClusterState, nodeName: string): LocalServe[] {
  const paths: PathOptions = { nodeName, directCidrs: [], tunnel: false };
  const out = new Map<string, LocalServe>();
  for (const [key, svc] of state.services) {
    // As internalTrafficPolicy Local: only this node's endpoints, the choice made over them.
    const local: ServiceInfo = { ...svc, internalTrafficPolicy: 'Local' };
    const done = new Set<string>();
    for (const { family, sp } of servicePorts(svc)) {
      const k = `${family}|${sp.port}`;
      if (done.has(k)) continue; // two cluster IPs of one family (malformed): once is enough
      done.add(k);
      const chosen = endpointsFor(local, key, sp, slicesFor(state, key, family), family, state, paths);
      if (chosen.endpoints.length === 0) continue;
      const sk = `${key}|${sp.port}`;
      const entry = out.get(sk) ?? { service: key, port: sp.port, endpoints: [] };
      for (const e of chosen.endpoints) if (!entry.endpoints.some((x) => x.ip === e.ip && x.port === e.port)) entry.endpoints.push({ ip: e.ip, port: e.port });
      out.set(sk, entry);
    }
  }
  for (const e of out.values()) e.endpoints.sort(compareEndpoints);
  return [...out.values()].sort((a, b) => cmp(a.service, b.service) || a.port - b.port);
}
