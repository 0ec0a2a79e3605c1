import { describe, expect, it } from 'vitest';
import { desiredRuleSets, type DesiredConfig } from '../../src/intent/desired.js';
import type { ClusterState, EndpointSliceInfo, ServiceInfo } from '../../src/cluster/model.js';
import { parseCidr, parseHostPort } from '../../src/net.js';
import { EDGE_MESH_CHAIN, EDGE_MESH_TCP_CHAIN, renderRuleSet } from '../../src/netfilter/rules.js';
import { DEFAULT_SELECTION } from '../../src/intent/selection.js';
import { convertEndpoints } from '../../src/cluster/convert.js';
import { ClusterStore } from '../../src/cluster/store.js';

const svc = (ns: string, name: string, clusterIPs: string[], labels: Record<string, string> = { noproxy: 'edgemesh' }, over: Partial<ServiceInfo> = {}): ServiceInfo => ({
  namespace: ns,
  name,
  labels,
  type: 'ClusterIP',
  clusterIPs,
  headless: false,
  ports: [],
  sessionAffinity: 'None',
  affinityTimeoutSeconds: 10800,
  internalTrafficPolicy: 'Cluster',
  ...over,
});
const headless = (ns: string, name: string, labels: Record<string, string> = { noproxy: 'edgemesh' }): ServiceInfo => svc(ns, name, [], labels, { headless: true });
const slice = (ns: string, name: string, service: string, type: 'IPv4' | 'IPv6', addrs: string[][]): EndpointSliceInfo => ({
  namespace: ns,
  name,
  serviceName: service,
  addressType: type,
  ports: [],
  endpoints: addrs.map((a) => ({ addresses: a, ready: true, serving: true, terminating: false })),
  source: 'EndpointSlice',
});

const DUAL: DesiredConfig = {
  serviceCidrs: [parseCidr('10.10.0.0/16'), parseCidr('fd00:10::/108')],
  proxyAddrs: [parseHostPort('169.254.96.16:40001'), parseHostPort('[fd00::96:16]:40001')],
  selection: DEFAULT_SELECTION,
};

const stateOf = (services: ServiceInfo[], slices: EndpointSliceInfo[] = []): ClusterState => {
  const store = new ClusterStore();
  store.replaceAll({ services, endpointSlices: slices.filter((s) => s.source === 'EndpointSlice'), endpoints: slices.filter((s) => s.source === 'Endpoints') });
  return store.snapshot();
};
const returns = (state: ClusterState, config: DesiredConfig, family: 'ipv4' | 'ipv6' = 'ipv4'): string[] =>
  desiredRuleSets(state, config)
    .sets[family]!.chains.find((c) => c.name === EDGE_MESH_CHAIN)!
    .rules.filter((r) => r.target === 'RETURN')
    .map((r) => `${r.dst} ${r.comment}`);

describe('desired rule sets', () => {
  it('puts each cluster IP of a dual-stack service in its own family, IPv6 as /128 and canonical', () => {
    const state = stateOf([svc('ns', 'dual', ['10.10.5.5', 'FD00:10:0:0::5'])]);
    expect(returns(state, DUAL, 'ipv4')).toEqual(['10.10.5.5/32 ignore ns/dual service']);
    expect(returns(state, DUAL, 'ipv6')).toEqual(['fd00:10::5/128 ignore ns/dual service']);
  });

  it('renders the IPv6 set with its own CIDR rule and a bracketed DNAT target', () => {
    const text = renderRuleSet(desiredRuleSets(stateOf([]), DUAL).sets.ipv6!);
    expect(text).toContain('-A EDGE-MESH -d fd00:10::/108 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP');
    expect(text).toContain('--to-destination [fd00::96:16]:40001');
  });

  it('makes no set for a family without a service CIDR', () => {
    const cfg: DesiredConfig = { ...DUAL, serviceCidrs: [parseCidr('fd00:10::/108')], proxyAddrs: [parseHostPort('[fd00::1]:40001')] };
    const r = desiredRuleSets(stateOf([svc('ns', 'a', ['10.10.1.1', 'fd00:10::1'])]), cfg);
    expect(Object.keys(r.sets)).toEqual(['ipv6']);
  });

  it('lists EDGE-MESH-TCP before EDGE-MESH, one CIDR rule per CIDR of the family, jumps in PREROUTING and OUTPUT', () => {
    const cfg: DesiredConfig = { ...DUAL, serviceCidrs: [parseCidr('10.10.0.0/16'), parseCidr('10.20.0.0/16')] , proxyAddrs: [parseHostPort('169.254.96.16:40001')] };
    const set = desiredRuleSets(stateOf([]), cfg).sets.ipv4!;
    expect(set.chains.map((c) => c.name)).toEqual([EDGE_MESH_TCP_CHAIN, EDGE_MESH_CHAIN]);
    expect(set.chains[1]!.rules.map((r) => r.dst)).toEqual(['10.10.0.0/16', '10.20.0.0/16']);
    expect(set.jumps.map((j) => `${j.chain} ${j.rule.comment} ${j.rule.target}`)).toEqual(['PREROUTING edgemesh root chain EDGE-MESH', 'OUTPUT edgemesh root chain EDGE-MESH']);
  });

  it('gives ExternalName and IP-less services nothing and counts them', () => {
    const state = stateOf([
      svc('a', 'ext', [], { noproxy: 'edgemesh' }, { type: 'ExternalName' }),
      svc('a', 'noip', []),
      headless('a', 'hl-proxied', {}),
      svc('a', 'web', ['10.10.9.9'], {}),
    ]);
    expect(returns(state, DUAL)).toEqual([]);
    expect(desiredRuleSets(state, DUAL).counts).toEqual({ watched: 4, ignored: 0, proxied: 1, none: 3 });
  });

  it('ignores an ignored headless service by its endpoint addresses of the matching family, deduplicated', () => {
    const state = stateOf(
      [headless('m', 'hl')],
      [
        slice('m', 'hl-a', 'hl', 'IPv4', [['10.244.0.9'], ['10.244.0.10']]),
        slice('m', 'hl-b', 'hl', 'IPv4', [['10.244.0.9']]), // the same pod in a second slice
        slice('m', 'hl-c', 'hl', 'IPv6', [['fd00:244::9']]),
        { ...slice('m', 'hl-d', 'hl', 'IPv4', []), addressType: 'FQDN', endpoints: [{ addresses: ['pod.example'], ready: true, serving: true, terminating: false }] },
      ],
    );
    expect(returns(state, DUAL)).toEqual(['10.244.0.9/32 ignore m/hl service', '10.244.0.10/32 ignore m/hl service']);
    expect(returns(state, DUAL, 'ipv6')).toEqual(['fd00:244::9/128 ignore m/hl service']);
  });

  it('uses v1 Endpoints only for services without an EndpointSlice', () => {
    const eps = (name: string, ip: string): EndpointSliceInfo[] =>
      convertEndpoints({ metadata: { name, namespace: 'm' }, subsets: [{ addresses: [{ ip }], ports: [{ port: 80 }] }] });
    const state = stateOf([headless('m', 'with-slice'), headless('m', 'only-endpoints')], [
      slice('m', 'with-slice-1', 'with-slice', 'IPv4', [['10.244.1.1']]),
      ...eps('with-slice', '10.244.9.9'),
      ...eps('only-endpoints', '10.244.2.2'),
    ]);
    expect(returns(state, DUAL)).toEqual(['10.244.2.2/32 ignore m/only-endpoints service', '10.244.1.1/32 ignore m/with-slice service']);
  });

  it('is deterministic: shuffled input gives the same rules, sorted by namespace/name then IP numerically', () => {
    const services = [
      svc('b', 'x', ['10.10.0.20']),
      svc('a', 'z', ['10.10.0.3']),
      headless('a', 'y'),
      svc('a', 'kubernetes-like', ['10.10.0.100'], {}),
      svc('default', 'kubernetes', ['10.10.0.1'], {}),
    ];
    const slices = [slice('a', 'y-1', 'y', 'IPv4', [['10.244.0.100'], ['10.244.0.9'], ['10.244.0.80']])];
    const expected = [
      '10.244.0.9/32 ignore a/y service',
      '10.244.0.80/32 ignore a/y service',
      '10.244.0.100/32 ignore a/y service',
      '10.10.0.3/32 ignore a/z service',
      '10.10.0.20/32 ignore b/x service',
      '10.10.0.1/32 ignore default/kubernetes service',
    ];
    let seed = 7;
    const rand = (): number => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const first = renderRuleSet(desiredRuleSets(stateOf(services, slices), DUAL).sets.ipv4!);
    for (let i = 0; i < 20; i++) {
      const sh = [...services].sort(() => rand() - 0.5);
      const st = stateOf(sh, slices.map((s) => ({ ...s, endpoints: [...s.endpoints].sort(() => rand() - 0.5) })));
      expect(returns(st, DUAL)).toEqual(expected);
      expect(renderRuleSet(desiredRuleSets(st, DUAL).sets.ipv4!)).toBe(first);
    }
  });

  it('keeps the RETURN of an ignored IP outside the service CIDR', () => {
    const state = stateOf([svc('a', 'outside', ['172.16.0.5'])]);
    expect(returns(state, DUAL)).toEqual(['172.16.0.5/32 ignore a/outside service']);
  });
});
