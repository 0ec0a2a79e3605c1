import { describe, expect, it } from 'vitest';
import { computeRoutes, isSpecialEndpointAddress, resolveTargetPort } from '../../src/proxy/routes.js';
import type { ClusterState, EndpointInfo, EndpointSliceInfo, ServiceInfo, ServicePortInfo } from '../../src/model.js';

const all = () => true;

function svc(name: string, p: Partial<ServiceInfo> & { ports: ServicePortInfo[] }): ServiceInfo {
  return {
    namespace: 'default',
    name,
    labels: {},
    type: 'ClusterIP',
    clusterIPs: ['10.10.0.10'],
    headless: false,
    sessionAffinity: 'None',
    affinityTimeoutSeconds: 10800,
    internalTrafficPolicy: 'Cluster',
    ...p,
  };
}

const port = (port: number, targetPort: number | string = port, name = ''): ServicePortInfo => ({ name, protocol: 'TCP', port, targetPort });

const ep = (ip: string, c: Partial<EndpointInfo> = {}): EndpointInfo => ({ addresses: [ip], ready: true, serving: true, terminating: false, ...c });

function slice(service: string, p: Partial<EndpointSliceInfo> & { endpoints: EndpointInfo[] }): EndpointSliceInfo {
  return { namespace: 'default', name: `${service}-abc`, serviceName: service, addressType: 'IPv4', ports: [], source: 'EndpointSlice', ...p };
}

function state(services: ServiceInfo[], slices: EndpointSliceInfo[]): ClusterState {
  const s = new Map(services.map((x) => [`${x.namespace}/${x.name}`, x]));
  const sl = new Map<string, EndpointSliceInfo[]>();
  for (const x of slices) {
    const k = `${x.namespace}/${x.serviceName}`;
    sl.set(k, [...(sl.get(k) ?? []), x]);
  }
  return { services: s, slices: sl, nodes: new Map() };
}

describe('computeRoutes', () => {
  it('resolves a named targetPort through the slice port named after the service port', () => {
    const st = state(
      [svc('web', { ports: [port(80, 'http', 'web')] })],
      [slice('web', { ports: [{ name: 'web', protocol: 'TCP', port: 8080 }], endpoints: [ep('10.244.1.5'), ep('10.244.1.4')] })],
    );
    const t = computeRoutes(st, all);
    expect(t.routes).toHaveLength(1);
    expect(t.routes[0]).toMatchObject({ ip: '10.10.0.10', port: 80, family: 4, service: 'default/web', portName: 'web', endpointSet: 'ready' });
    expect(t.routes[0]!.endpoints).toEqual([
      { ip: '10.244.1.4', port: 8080, path: 'direct' },
      { ip: '10.244.1.5', port: 8080, path: 'direct' },
    ]);
  });

  it('resolves a named targetPort per slice (pods with different port numbers) and skips slices without it', () => {
    const st = state(
      [svc('web', { ports: [port(80, 'http')] })],
      [
        slice('web', { name: 'a', ports: [{ name: 'http', protocol: 'TCP', port: 8080 }], endpoints: [ep('10.244.1.4')] }),
        slice('web', { name: 'b', ports: [{ name: 'http', protocol: 'TCP', port: 9090 }], endpoints: [ep('10.244.1.5')] }),
        slice('web', { name: 'c', ports: [{ name: 'other', protocol: 'TCP', port: 7070 }], endpoints: [ep('10.244.1.6')] }),
      ],
    );
    expect(computeRoutes(st, all).routes[0]!.endpoints).toEqual([
      { ip: '10.244.1.4', port: 8080, path: 'direct' },
      { ip: '10.244.1.5', port: 9090, path: 'direct' },
    ]);
  });

  it('uses a numeric targetPort when the slice lists no ports, and only the first address of an endpoint', () => {
    const st = state([svc('num', { ports: [port(80, 8081)] })], [slice('num', { endpoints: [{ ...ep('10.244.1.7'), addresses: ['10.244.1.7', '10.244.1.8'] }] })]);
    expect(computeRoutes(st, all).routes[0]!.endpoints).toEqual([{ ip: '10.244.1.7', port: 8081, path: 'direct' }]);
    expect(resolveTargetPort(port(80, 'missing'), slice('x', { ports: [{ name: 'a', protocol: 'TCP', port: 1 }], endpoints: [] }))).toBeUndefined();
  });

  it('takes only ready endpoints when there are any', () => {
    const st = state(
      [svc('web', { ports: [port(80)] })],
      [slice('web', { endpoints: [ep('10.244.1.1'), ep('10.244.1.2', { ready: false, serving: true, terminating: true }), ep('10.244.1.3', { ready: false, serving: false })] })],
    );
    const r = computeRoutes(st, all).routes[0]!;
    expect(r.endpointSet).toBe('ready');
    expect(r.endpoints.map((e) => e.ip)).toEqual(['10.244.1.1']);
  });

  it('falls back to serving+terminating endpoints when none is ready, like kube-proxy', () => {
    const st = state(
      [svc('web', { ports: [port(80)] })],
      [slice('web', { endpoints: [ep('10.244.1.2', { ready: false, serving: true, terminating: true }), ep('10.244.1.3', { ready: false, serving: false, terminating: true }), ep('10.244.1.4', { ready: false, serving: true, terminating: false })] })],
    );
    const r = computeRoutes(st, all).routes[0]!;
    expect(r.endpointSet).toBe('serving-terminating');
    expect(r.endpoints.map((e) => e.ip)).toEqual(['10.244.1.2']);
  });

  it('never routes to an endpoint address Kubernetes refuses (loopback, link-local, unspecified; mapped forms too): no pivot to node-local ports', () => {
    const st = state(
      [svc('evil', { ports: [port(80)] })],
      [slice('evil', { endpoints: [ep('127.0.0.1'), ep('169.254.96.16'), ep('0.0.0.0'), ep('10.244.1.5')] })],
    );
    expect(computeRoutes(st, all).routes[0]!.endpoints).toEqual([{ ip: '10.244.1.5', port: 80, path: 'direct' }]);
    const only = state([svc('evil', { ports: [port(80)] })], [slice('evil', { endpoints: [ep('127.0.0.53')] })]);
    expect(computeRoutes(only, all).routes[0]).toMatchObject({ endpoints: [], endpointSet: 'none' });
    for (const a of ['::1', '::', 'fe80::1', 'ff02::1', '::ffff:127.0.0.1', '224.0.0.1', '127.1.2.3']) expect(isSpecialEndpointAddress(a), a).toBe(true);
    for (const a of ['10.244.1.2', 'fd00::1', '::ffff:10.0.0.1', '192.168.0.2', '1.2.3.4']) expect(isSpecialEndpointAddress(a), a).toBe(false);
  });

  it('keeps a route with no endpoints so the proxy can reset the client (and count it)', () => {
    const st = state([svc('empty', { ports: [port(80)] })], []);
    expect(computeRoutes(st, all).routes).toEqual([expect.objectContaining({ ip: '10.10.0.10', port: 80, endpoints: [], endpointSet: 'none' })]);
  });

  it('builds IPv4 and IPv6 routes of a dual-stack service from the slices of each family', () => {
    const st = state(
      [svc('dual', { clusterIPs: ['fd00:10:96::10', '10.10.0.10'], ports: [port(80, 8080)] })],
      [
        slice('dual', { name: 'v4', ports: [{ name: '', protocol: 'TCP', port: 8080 }], endpoints: [ep('10.244.1.4')] }),
        slice('dual', { name: 'v6', addressType: 'IPv6', ports: [{ name: '', protocol: 'TCP', port: 8080 }], endpoints: [ep('fd00:244::4')] }),
      ],
    );
    const t = computeRoutes(st, all);
    expect(t.routes.map((r) => [r.family, r.ip, r.endpoints])).toEqual([
      [4, '10.10.0.10', [{ ip: '10.244.1.4', port: 8080, path: 'direct' }]],
      [6, 'fd00:10:96::10', [{ ip: 'fd00:244::4', port: 8080, path: 'direct' }]],
    ]);
  });

  it('carries ClientIP session affinity and its timeout', () => {
    const st = state(
      [svc('sticky', { sessionAffinity: 'ClientIP', affinityTimeoutSeconds: 60, ports: [port(80)] }), svc('plain', { clusterIPs: ['10.10.0.11'], ports: [port(80)] })],
      [],
    );
    const t = computeRoutes(st, all);
    expect(t.routes.find((r) => r.service === 'default/sticky')!.affinity).toEqual({ clientIP: true, timeoutSeconds: 60 });
    expect(t.routes.find((r) => r.service === 'default/plain')!.affinity).toEqual({ clientIP: false, timeoutSeconds: 10800 });
  });

  it('excludes services the predicate rejects, headless, ExternalName and non-TCP ports', () => {
    const st = state(
      [
        svc('kept', { ports: [port(80), { name: 'dns', protocol: 'UDP', port: 53, targetPort: 53 }] }),
        svc('ignored', { clusterIPs: ['10.10.0.3'], labels: { noproxy: 'edgemesh' }, ports: [port(53)] }),
        svc('headless', { clusterIPs: [], headless: true, ports: [port(80)] }),
        svc('ext', { clusterIPs: [], type: 'ExternalName', ports: [port(80)] }),
      ],
      [],
    );
    const t = computeRoutes(st, (s) => s.labels.noproxy !== 'edgemesh');
    expect(t.routes.map((r) => `${r.service} ${r.ip}:${r.port}`)).toEqual(['default/kept 10.10.0.10:80']);
  });

  it('uses Endpoints-derived slices only when the service has no EndpointSlice, and dedupes endpoints', () => {
    const fromEndpoints = slice('web', { name: 'web', source: 'Endpoints', endpoints: [ep('10.244.9.9')] });
    const st1 = state([svc('web', { ports: [port(80)] })], [fromEndpoints]);
    expect(computeRoutes(st1, all).routes[0]!.endpoints.map((e) => e.ip)).toEqual(['10.244.9.9']);
    const st2 = state(
      [svc('web', { ports: [port(80)] })],
      [fromEndpoints, slice('web', { name: 'a', endpoints: [ep('10.244.1.1')] }), slice('web', { name: 'b', endpoints: [ep('10.244.1.1')] })],
    );
    expect(computeRoutes(st2, all).routes[0]!.endpoints).toEqual([{ ip: '10.244.1.1', port: 80, path: 'direct' }]);
  });

  it('is deterministic: the same state in another insertion order gives an equal table', () => {
    const a = svc('a', { clusterIPs: ['10.10.0.2'], ports: [port(81), port(80)] });
    const b = svc('b', { clusterIPs: ['10.10.0.1'], ports: [port(80)] });
    expect(computeRoutes(state([a, b], []), all)).toEqual(computeRoutes(state([b, a], []), all));
    expect(computeRoutes(state([a, b], []), all).routes.map((r) => `${r.ip}:${r.port}`)).toEqual(['10.10.0.1:80', '10.10.0.2:80', '10.10.0.2:81']);
  });
});
