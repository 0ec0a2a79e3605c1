import { describe, expect, it } from 'vitest';
import type { V1EndpointSlice, V1Endpoints, V1Node, V1Service } from '@kubernetes/client-node';
import { ConfigError } from '../../src/errors.js';
import { convertEndpointSlice, convertEndpoints, convertNode, convertService, TUNNEL_ADDRESS_ANNOTATION } from '../../src/cluster/convert.js';

const service = (spec: Record<string, unknown>, meta: Record<string, unknown> = { name: 'web', namespace: 'shop' }): V1Service =>
  ({ apiVersion: 'v1', kind: 'Service', metadata: meta, spec });

describe('convertService', () => {
  it('applies the API server defaults: namespace, type, protocol, targetPort, affinity timeout, internal traffic policy', () => {
    const s = convertService(service({ clusterIP: '10.10.0.5', ports: [{ port: 80 }], sessionAffinity: 'ClientIP' }, { name: 'web' }));
    expect(s).toEqual({
      namespace: 'default',
      name: 'web',
      labels: {},
      type: 'ClusterIP',
      clusterIPs: ['10.10.0.5'],
      headless: false,
      ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 80 }],
      sessionAffinity: 'ClientIP',
      affinityTimeoutSeconds: 10800,
      internalTrafficPolicy: 'Cluster',
    });
  });

  it('takes internalTrafficPolicy Local', () => {
    expect(convertService(service({ clusterIP: '10.10.0.5', internalTrafficPolicy: 'Local' })).internalTrafficPolicy).toBe('Local');
  });

  it('takes spec.clusterIPs (dual-stack) in canonical form, named target ports, an explicit timeout', () => {
    const s = convertService(
      service({
        clusterIP: '10.10.0.5',
        clusterIPs: ['10.10.0.5', 'FD00::0:5'],
        ports: [{ name: 'h', port: 80, targetPort: 'http', protocol: 'UDP' }],
        sessionAffinity: 'ClientIP',
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
      }),
    );
    expect(s.clusterIPs).toEqual(['10.10.0.5', 'fd00::5']);
    expect(s.ports[0]).toEqual({ name: 'h', protocol: 'UDP', port: 80, targetPort: 'http' });
    expect(s.affinityTimeoutSeconds).toBe(60);
  });

  it('marks clusterIP None as headless and ExternalName without addresses', () => {
    expect(convertService(service({ clusterIP: 'None' }))).toMatchObject({ headless: true, clusterIPs: [] });
    expect(convertService(service({ type: 'ExternalName', externalName: 'db.example' }))).toMatchObject({ headless: false, clusterIPs: [], type: 'ExternalName' });
  });

  it.each([
    [{ clusterIP: '10.10.0.300' }, 'Service shop/web: spec.clusterIP: "10.10.0.300": octet 300 out of range 0-255'],
    [{ clusterIP: '10.10.0.1', clusterIPs: ['10.10.0.2'] }, 'spec.clusterIPs[0]: "10.10.0.2" must equal spec.clusterIP "10.10.0.1"'],
    [{ clusterIPs: ['10.10.0.1', '10.10.0.2'] }, 'spec.clusterIPs: two ipv4 addresses'],
    [{ clusterIP: '10.10.0.1', ports: [{ port: 70000 }] }, 'spec.ports[0].port: 70000 out of range 1-65535'],
    [{ clusterIP: '10.10.0.1', ports: [{ port: '80' }] }, 'spec.ports[0].port: must be a port number, got "80"'],
    [{ clusterIP: '10.10.0.1', ports: [{ port: 80, protocol: 'ICMP' }] }, 'spec.ports[0].protocol: "ICMP" is not one of TCP, UDP, SCTP'],
    [{ clusterIP: '10.10.0.1', ports: [{ port: 80, targetPort: 'Not_A_Name' }] }, 'spec.ports[0].targetPort: "Not_A_Name" is neither'],
    [{ clusterIP: '10.10.0.1', ports: [{ port: 80, targetPort: 0 }] }, 'spec.ports[0].targetPort: 0 out of range'],
    [{ type: 'Cluster' }, 'spec.type: "Cluster" is not one of'],
    [{ internalTrafficPolicy: 'Node' }, 'Service shop/web: spec.internalTrafficPolicy: "Node" is not one of Cluster, Local'],
    [{ sessionAffinity: 'ClientIP', sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } } }, 'timeoutSeconds: must be an integer 1-86400'],
  ])('rejects %j naming the object and field', (spec, message) => {
    expect(() => convertService(service(spec))).toThrow(ConfigError);
    expect(() => convertService(service(spec))).toThrow(message);
  });

  it('rejects a missing name and non-string labels', () => {
    expect(() => convertService(service({}, { namespace: 'x' }))).toThrow('Service: metadata.name: required');
    expect(() => convertService(service({}, { name: 'a', labels: { n: 1 } }))).toThrow('Service default/a: metadata.labels.n: label value must be a string, got 1');
  });
});

describe('convertEndpointSlice', () => {
  const slice = (over: Record<string, unknown> = {}): V1EndpointSlice =>
    ({
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: { name: 'web-abc', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } },
      addressType: 'IPv4',
      ports: [{ port: 8080 }, { name: 'all' }],
      endpoints: [{ addresses: ['10.244.0.5'] }, { addresses: ['10.244.0.6'], conditions: { ready: false, terminating: true } }],
      ...over,
    });

  it('defaults ready (nil = true), serving (nil = ready), terminating, protocol; drops port-less entries', () => {
    expect(convertEndpointSlice(slice())).toEqual({
      namespace: 'shop',
      name: 'web-abc',
      serviceName: 'web',
      addressType: 'IPv4',
      ports: [{ name: '', protocol: 'TCP', port: 8080 }],
      endpoints: [
        { addresses: ['10.244.0.5'], ready: true, serving: true, terminating: false },
        { addresses: ['10.244.0.6'], ready: false, serving: false, terminating: true },
      ],
      source: 'EndpointSlice',
    });
  });

  it.each([
    [{ metadata: { name: 'x', namespace: 'shop' } }, 'EndpointSlice shop/x: metadata.labels.kubernetes.io/service-name: required'],
    [{ addressType: 'IPX' }, 'addressType: "IPX" is not one of IPv4, IPv6, FQDN'],
    [{ endpoints: [{ addresses: ['fd00::1'] }] }, 'endpoints[0].addresses[0]: "fd00::1" is not an IPv4 address'],
    [{ endpoints: [{ addresses: [] }] }, 'endpoints[0].addresses: at least one address is required'],
    [{ endpoints: [{ addresses: ['10.0.0.1'], conditions: { ready: 'yes' } }] }, 'endpoints[0].conditions.ready: must be true or false'],
    [{ ports: [{ port: 0 }] }, 'ports[0].port: 0 out of range 1-65535'],
  ])('rejects %j', (over, message) => {
    expect(() => convertEndpointSlice(slice(over))).toThrow(message);
  });
});

describe('convertEndpoints', () => {
  it('splits subsets by family; notReadyAddresses are not ready; nodeName is carried', () => {
    const ep = {
      metadata: { name: 'db', namespace: 'shop' },
      subsets: [{ addresses: [{ ip: '10.244.0.7', nodeName: 'n1' }, { ip: 'fd00::7' }], notReadyAddresses: [{ ip: '10.244.0.8' }], ports: [{ port: 5432, name: 'pg' }] }],
    } as V1Endpoints;
    const out = convertEndpoints(ep);
    expect(out.map((s) => [s.addressType, s.endpoints.map((e) => `${e.addresses[0]}:${e.ready}`)])).toEqual([
      ['IPv4', ['10.244.0.7:true', '10.244.0.8:false']],
      ['IPv6', ['fd00::7:true']],
    ]);
    expect(out[0]).toMatchObject({ serviceName: 'db', source: 'Endpoints', ports: [{ name: 'pg', protocol: 'TCP', port: 5432 }] });
    expect(out[0]!.endpoints[0]!.nodeName).toBe('n1');
    expect(out[0]!.endpoints[1]!.nodeName).toBeUndefined();
  });

  it('rejects a bad address naming the subset', () => {
    expect(() => convertEndpoints({ metadata: { name: 'db' }, subsets: [{ addresses: [{ ip: 'x' }] }] })).toThrow('Endpoints default/db: subsets[0].addresses[0].ip: "x"');
  });
});

describe('convertNode', () => {
  const node = (annotations?: Record<string, unknown>, name: unknown = 'edge-1'): V1Node =>
    ({ apiVersion: 'v1', kind: 'Node', metadata: { name, ...(annotations ? { annotations } : {}) }, status: { conditions: [] } }) as V1Node;
  const convert = (n: V1Node): { info: ReturnType<typeof convertNode>; warnings: string[] } => {
    const warnings: string[] = [];
    return { info: convertNode(n, (m) => warnings.push(m)), warnings };
  };

  it('takes the tunnel address from the annotation, IPv4 and bracketed IPv6 (canonical form)', () => {
    expect(convert(node({ [TUNNEL_ADDRESS_ANNOTATION]: '192.168.1.10:20006' }))).toEqual({
      info: { name: 'edge-1', tunnelAddress: { family: 'ipv4', address: '192.168.1.10', port: 20006 } },
      warnings: [],
    });
    expect(convert(node({ [TUNNEL_ADDRESS_ANNOTATION]: '[FD00:0::10]:443' })).info.tunnelAddress).toEqual({ family: 'ipv6', address: 'fd00::10', port: 443 });
  });

  it('a node without the annotation has no tunnel address and no warning', () => {
    expect(convert(node())).toEqual({ info: { name: 'edge-1' }, warnings: [] });
    expect(convert(node({ other: 'x' }))).toEqual({ info: { name: 'edge-1' }, warnings: [] });
  });

  it.each([
    ['192.168.1.10', 'missing ":PORT"'],
    ['192.168.1.10:0', 'port 0 out of range 1-65535'],
    ['192.168.1.10:65536', 'port 65536 out of range 1-65535'],
    ['fd00::10:20006', 'an IPv6 address must be written "[addr]:port"'],
    ['edge-1.example:20006', 'not an IPv4 address'],
    ['127.0.0.1:20006', 'an unspecified or loopback address is not a peer address'],
    ['[::]:20006', 'an unspecified or loopback address is not a peer address'],
    [20006, 'must be a string'],
  ])('a bad annotation %j is a warning naming the node and value; the node is kept without an address', (value, reason) => {
    const { info, warnings } = convert(node({ [TUNNEL_ADDRESS_ANNOTATION]: value }));
    expect(info).toEqual({ name: 'edge-1' });
    expect(warnings).toEqual([`Node edge-1: annotation edgemesh.io/tunnel-address ${JSON.stringify(value)}: ${reason}; the node has no tunnel address`]);
  });

  it('rejects a Node without a name (a bad object, not a warning)', () => {
    expect(() => convert(node(undefined, ''))).toThrow(ConfigError);
    expect(() => convert(node(undefined, ''))).toThrow('Node: metadata.name: required');
    expect(() => convert({ metadata: { name: 'n', annotations: 'x' } } as unknown as V1Node)).toThrow('Node n: metadata.annotations: must be an object');
  });
});
