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
// - Endpoints-derived slices count only when the Service has no EndpointSlice.
import { isIP } from 'node:net';
import type { ClusterState, EndpointSliceInfo, ServiceInfo, ServiceKey, ServicePortInfo } from '../model.js';

export interface RouteEndpoint {
  ip: string;
  port: number;
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

export interface RoutingTable {
  /** Sorted by family, ip, port: equal cluster states give equal tables. */
  routes: ServiceRoute[];
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

function compareEndpoints(a: RouteEndpoint, b: RouteEndpoint): number {
  return a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port;
}

function endpointsFor(sp: ServicePortInfo, slices: EndpointSliceInfo[], family: 4 | 6): Pick<ServiceRoute, 'endpoints' | 'endpointSet'> {
  const ready = new Map<string, RouteEndpoint>();
  const fallback = new Map<string, RouteEndpoint>();
  for (const slice of slices) {
    const port = resolveTargetPort(sp, slice);
    if (port === undefined || port < 1 || port > 65535) continue;
    for (const ep of slice.endpoints) {
      const ip = ep.addresses[0];
      if (ip === undefined || familyOf(ip) !== family) continue;
      const e = { ip, port };
      const k = `${ip}|${port}`;
      if (ep.ready) ready.set(k, e);
      else if (ep.serving && ep.terminating) fallback.set(k, e);
    }
  }
  if (ready.size > 0) return { endpoints: [...ready.values()].sort(compareEndpoints), endpointSet: 'ready' };
  if (fallback.size > 0) return { endpoints: [...fallback.values()].sort(compareEndpoints), endpointSet: 'serving-terminating' };
  return { endpoints: [], endpointSet: 'none' };
}

/** The routing table for the proxied Services of `state`. Pure: no I/O, no clock. */
export function computeRoutes(state: ClusterState, isProxied: IsProxied): RoutingTable {
  const routes: ServiceRoute[] = [];
  const seen = new Set<string>();
  for (const [key, svc] of state.services) {
    if (svc.type === 'ExternalName' || svc.headless || !isProxied(svc)) continue;
    for (const ip of svc.clusterIPs) {
      const family = familyOf(ip);
      if (family === 0) continue;
      const slices = slicesFor(state, key, family);
      for (const sp of svc.ports) {
        if (sp.protocol !== 'TCP') continue;
        const k = `${ip}|${sp.port}`;
        if (seen.has(k)) continue; // a malformed duplicate port: first one wins
        seen.add(k);
        routes.push({
          ip,
          port: sp.port,
          family,
          protocol: 'TCP',
          service: key,
          portName: sp.name,
          ...endpointsFor(sp, slices, family),
          affinity: { clientIP: svc.sessionAffinity === 'ClientIP', timeoutSeconds: svc.affinityTimeoutSeconds },
        });
      }
    }
  }
  routes.sort((a, b) => a.family - b.family || (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : 0) || a.port - b.port);
  return { routes };
}
