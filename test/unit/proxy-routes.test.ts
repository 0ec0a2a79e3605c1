import { describe, expect, it } from 'vitest';
import { computeLocalServe, computeRoutes, isSpecialEndpointAddress, resolveTargetPort, type PathOptions } from '../../src/intent/routes.js';
import type { ClusterState, EndpointInfo, EndpointSliceInfo, NodeInfo, ServiceInfo, ServicePortInfo } from '../../src/cluster/model.js';
import { parseCidr, parseHostPort } from '../../src/net.js';

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

function state(services: ServiceInfo[], slices: EndpointSliceInfo[], nodes: NodeInfo[] = []): ClusterState {
  const s = new Map(services.map((x) => [`${x.namespace}/${x.name}`, x]));
  const sl = new Map<string, EndpointSliceInfo[]>();
  for (const x of slices) {
    const k = `${x.namespace}/${x.serviceName}`;
    sl.set(k, [...(sl.get(k) ?? []), x]);
  }
  return { services: s, slices: sl, nodes: new Map(nodes.map((n) => [n.name, n])) };
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

// Paths: this node is "here"; "edge-a" has a tunnel address, "edge-b" (IPv6 tunnel address)
// too, "edge-c" has none; "ghost" is no Node the source knows.
const HERE = 'here';
const nodes: NodeInfo[] = [
  { name: HERE, tunnelAddress: parseHostPort('192.168.0.1:20006') },
  { name: 'edge-a', tunnelAddress: parseHostPort('192.168.0.2:20006') },
  { name: 'edge-b', tunnelAddress: parseHostPort('[fd00:1::2]:20007') },
  { name: 'edge-c' },
];
const tunnelOn: PathOptions = { nodeName: HERE, directCidrs: [parseCidr('10.244.0.0/24')], tunnel: true };
const tunnelOff: PathOptions = { nodeName: HERE, directCidrs: [parseCidr('10.244.0.0/24')], tunnel: false };
const on = (node: string | undefined, c: Partial<EndpointInfo> = {}): Partial<EndpointInfo> => ({ ...(node ? { nodeName: node } : {}), ...c });

/** One Service default/web 10.10.0.10:80 -> 8080 with these endpoints. */
const web = (eps: EndpointInfo[], over: Partial<ServiceInfo> = {}): ClusterState =>
  state([svc('web', { ports: [port(80, 8080)], ...over })], [slice('web', { endpoints: eps })], nodes);

describe('computeRoutes: endpoint paths', () => {
  it('dials an endpoint on this node locally, one in a --direct-cidr directly, others through their node\'s tunnel', () => {
    const t = computeRoutes(web([ep('10.244.1.1', on(HERE)), ep('10.244.0.5', on('edge-a')), ep('10.244.2.1', on('edge-a'))]), all, tunnelOn);
    expect(t.routes[0]!.endpoints).toEqual([
      { ip: '10.244.0.5', port: 8080, path: 'direct', node: 'edge-a' },
      { ip: '10.244.1.1', port: 8080, path: 'local', node: HERE },
      { ip: '10.244.2.1', port: 8080, path: 'tunnel', node: 'edge-a', tunnel: { address: '192.168.0.2', port: 20006 } },
    ]);
    expect(t.unreachable).toEqual([]);
  });

  it('gives the tunnel address of an IPv6 peer without brackets', () => {
    const t = computeRoutes(web([ep('10.244.2.1', on('edge-b'))]), all, tunnelOn);
    expect(t.routes[0]!.endpoints).toEqual([{ ip: '10.244.2.1', port: 8080, path: 'tunnel', node: 'edge-b', tunnel: { address: 'fd00:1::2', port: 20007 } }]);
  });

  it('a --direct-cidr takes precedence over the tunnel, and this node over a --direct-cidr', () => {
    const t = computeRoutes(web([ep('10.244.0.5', on('edge-a')), ep('10.244.0.6', on(HERE))]), all, tunnelOn);
    expect(t.routes[0]!.endpoints.map((e) => `${e.ip} ${e.path}`)).toEqual(['10.244.0.5 direct', '10.244.0.6 local']);
  });

  it('leaves out and lists an unreachable endpoint with each reason: no nodeName, unknown node, node without tunnel address', () => {
    const t = computeRoutes(web([ep('10.244.3.1'), ep('10.244.3.2', on('ghost')), ep('10.244.3.3', on('edge-c')), ep('10.244.2.1', on('edge-a'))]), all, tunnelOn);
    expect(t.routes[0]!.endpoints.map((e) => e.ip)).toEqual(['10.244.2.1']);
    expect(t.routes[0]!.endpointSet).toBe('ready');
    expect(t.unreachable).toEqual([
      { service: 'default/web', ip: '10.244.3.1', port: 8080, reason: 'no-node-name' },
      { service: 'default/web', ip: '10.244.3.2', port: 8080, node: 'ghost', reason: 'unknown-node' },
      { service: 'default/web', ip: '10.244.3.3', port: 8080, node: 'edge-c', reason: 'no-tunnel-address' },
    ]);
  });

  it('a Service whose every endpoint is unreachable keeps its route with no endpoints', () => {
    const t = computeRoutes(web([ep('10.244.3.3', on('edge-c'))]), all, tunnelOn);
    expect(t.routes[0]).toMatchObject({ endpoints: [], endpointSet: 'none' });
    expect(t.unreachable.map((u) => u.reason)).toEqual(['no-tunnel-address']);
  });

  it('lists an unreachable endpoint once per service and target port, sorted, even when two Service ports and both cluster IPs reach it', () => {
    const st = state(
      [svc('web', { ports: [port(80, 8080), port(81, 8080)] }), svc('api', { clusterIPs: ['10.10.0.11'], ports: [port(80, 8080)] })],
      [slice('web', { endpoints: [ep('10.244.3.9', on('edge-c')), ep('10.244.3.3', on('edge-c'))] }), slice('api', { endpoints: [ep('10.244.3.3', on('edge-c'))] })],
      nodes,
    );
    expect(computeRoutes(st, all, tunnelOn).unreachable.map((u) => `${u.service} ${u.ip}:${u.port}`)).toEqual([
      'default/api 10.244.3.3:8080',
      'default/web 10.244.3.3:8080',
      'default/web 10.244.3.9:8080',
    ]);
  });

  it('falls back to serving+terminating endpoints when no ready endpoint is reachable: the choice is made over usable endpoints', () => {
    const t = computeRoutes(
      web([ep('10.244.3.3', on('edge-c')), ep('10.244.2.2', on('edge-a', { ready: false, serving: true, terminating: true }))]),
      all,
      tunnelOn,
    );
    expect(t.routes[0]!.endpointSet).toBe('serving-terminating');
    expect(t.routes[0]!.endpoints.map((e) => `${e.ip} ${e.path}`)).toEqual(['10.244.2.2 tunnel']);
    expect(t.unreachable.map((u) => u.ip)).toEqual(['10.244.3.3']);
  });

  it('does not list an unreachable terminating endpoint that a reachable ready one makes irrelevant', () => {
    const t = computeRoutes(web([ep('10.244.2.1', on('edge-a')), ep('10.244.3.3', on('edge-c', { ready: false, serving: true, terminating: true }))]), all, tunnelOn);
    expect(t.routes[0]!.endpoints.map((e) => e.ip)).toEqual(['10.244.2.1']);
    expect(t.unreachable).toEqual([]);
  });

  it('without tunnel credentials dials every endpoint (local on this node, else direct) and excludes none, as before the tunnel', () => {
    const eps = [ep('10.244.1.1', on(HERE)), ep('10.244.3.1'), ep('10.244.3.2', on('ghost')), ep('10.244.3.3', on('edge-c')), ep('10.244.2.1', on('edge-a'))];
    const t = computeRoutes(web(eps), all, tunnelOff);
    expect(t.routes[0]!.endpoints.map((e) => `${e.ip} ${e.path}`)).toEqual(['10.244.1.1 local', '10.244.2.1 direct', '10.244.3.1 direct', '10.244.3.2 direct', '10.244.3.3 direct']);
    expect(t.routes[0]!.endpoints.every((e) => e.tunnel === undefined)).toBe(true);
    expect(t.unreachable).toEqual([]);
    // Without path options at all: the same endpoints, all direct (no node is known).
    const legacy = computeRoutes(web(eps), all);
    expect(legacy.routes[0]!.endpoints.map((e) => `${e.ip} ${e.path}`)).toEqual(['10.244.1.1 direct', '10.244.2.1 direct', '10.244.3.1 direct', '10.244.3.2 direct', '10.244.3.3 direct']);
    expect(legacy.unreachable).toEqual([]);
  });

  it('internalTrafficPolicy Local uses only endpoints on this node, with or without the tunnel, and lists nothing as unreachable', () => {
    const eps = [ep('10.244.1.1', on(HERE)), ep('10.244.2.1', on('edge-a')), ep('10.244.0.5', on('edge-a')), ep('10.244.3.3', on('edge-c'))];
    for (const paths of [tunnelOn, tunnelOff]) {
      const t = computeRoutes(web(eps, { internalTrafficPolicy: 'Local' }), all, paths);
      expect(t.routes[0]!.endpoints, `tunnel ${paths.tunnel}`).toEqual([{ ip: '10.244.1.1', port: 8080, path: 'local', node: HERE }]);
      expect(t.unreachable).toEqual([]);
    }
    const none = computeRoutes(web([ep('10.244.2.1', on('edge-a'))], { internalTrafficPolicy: 'Local' }), all, tunnelOff);
    expect(none.routes[0]).toMatchObject({ endpoints: [], endpointSet: 'none' });
  });

  it('internalTrafficPolicy Local falls back to this node\'s serving+terminating endpoints only', () => {
    const t = computeRoutes(
      web([ep('10.244.1.1', on(HERE, { ready: false, serving: true, terminating: true })), ep('10.244.2.1', on('edge-a'))], { internalTrafficPolicy: 'Local' }),
      all,
      tunnelOn,
    );
    expect(t.routes[0]).toMatchObject({ endpointSet: 'serving-terminating', endpoints: [{ ip: '10.244.1.1', path: 'local' }] });
  });

  it('never routes to a special address, on any path', () => {
    const t = computeRoutes(web([ep('127.0.0.1', on('edge-a')), ep('169.254.1.1', on(HERE)), ep('10.244.2.1', on('edge-a'))]), all, tunnelOn);
    expect(t.routes[0]!.endpoints.map((e) => e.ip)).toEqual(['10.244.2.1']);
    expect(t.unreachable).toEqual([]);
  });
});

describe('computeLocalServe', () => {
  it('lists, per Service port with a cluster IP (proxied or not), the endpoints on this node, sorted', () => {
    const st = state(
      [
        svc('web', { ports: [port(81, 8081), port(80, 8080), { name: 'dns', protocol: 'UDP', port: 53, targetPort: 53 }] }),
        svc('ignored', { clusterIPs: ['10.10.0.3'], labels: { noproxy: 'edgemesh' }, ports: [port(80, 9090)] }),
        svc('headless', { clusterIPs: [], headless: true, ports: [port(80)] }),
        svc('remote-only', { clusterIPs: ['10.10.0.12'], ports: [port(80)] }),
      ],
      [
        slice('web', { endpoints: [ep('10.244.1.2', on(HERE)), ep('10.244.1.1', on(HERE)), ep('10.244.2.1', on('edge-a')), ep('10.244.3.1')] }),
        slice('ignored', { endpoints: [ep('10.244.1.3', on(HERE))] }),
        slice('headless', { endpoints: [ep('10.244.1.4', on(HERE))] }),
        slice('remote-only', { endpoints: [ep('10.244.2.2', on('edge-a'))] }),
      ],
      nodes,
    );
    expect(computeLocalServe(st, HERE)).toEqual([
      { service: 'default/ignored', port: 80, endpoints: [{ ip: '10.244.1.3', port: 9090 }] },
      {
        service: 'default/web',
        port: 80,
        endpoints: [
          { ip: '10.244.1.1', port: 8080 },
          { ip: '10.244.1.2', port: 8080 },
        ],
      },
      {
        service: 'default/web',
        port: 81,
        endpoints: [
          { ip: '10.244.1.1', port: 8081 },
          { ip: '10.244.1.2', port: 8081 },
        ],
      },
    ]);
  });

  it('takes this node\'s ready endpoints, else its serving+terminating ones, per family, and merges a dual-stack Service\'s families', () => {
    const st = state(
      [svc('dual', { clusterIPs: ['10.10.0.10', 'fd00:10:96::10'], ports: [port(80, 8080)] })],
      [
        slice('dual', { name: 'v4', endpoints: [ep('10.244.1.1', on(HERE, { ready: false, serving: true, terminating: true })), ep('10.244.1.2', on(HERE, { ready: false, serving: false }))] }),
        slice('dual', { name: 'v6', addressType: 'IPv6', endpoints: [ep('fd00:244::1', on(HERE)), ep('fd00:244::2', on(HERE, { ready: false, serving: true, terminating: true }))] }),
      ],
      nodes,
    );
    expect(computeLocalServe(st, HERE)).toEqual([
      {
        service: 'default/dual',
        port: 80,
        endpoints: [
          { ip: '10.244.1.1', port: 8080 },
          { ip: 'fd00:244::1', port: 8080 },
        ],
      },
    ]);
  });

  it('is deterministic and empty for a node with no endpoints', () => {
    const st = web([ep('10.244.1.1', on(HERE))]);
    expect(computeLocalServe(st, HERE)).toEqual(computeLocalServe(st, HERE));
    expect(computeLocalServe(st, 'edge-a')).toEqual([]);
  });
});
