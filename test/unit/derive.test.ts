import { describe, expect, it } from 'vitest';
import { Deriver, derive, type DeriveConfig } from '../../src/intent/derive.js';
import { desiredIntent } from '../../src/intent/desired.js';
import { computeLocalServe, computeRoutes } from '../../src/intent/routes.js';
import { DEFAULT_SELECTION, selectService } from '../../src/intent/selection.js';
import type { ClusterState, EndpointSliceInfo, ServiceInfo } from '../../src/cluster/model.js';
import { ClusterStore } from '../../src/cluster/store.js';
import { parseCidr, parseHostPort, parseIp } from '../../src/net.js';

const svc = (name: string, ip: string, labels: Record<string, string> = {}): ServiceInfo => ({
  namespace: 'ns',
  name,
  labels,
  type: 'ClusterIP',
  clusterIPs: [parseIp(ip)],
  headless: false,
  ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080 }],
  sessionAffinity: 'None',
  affinityTimeoutSeconds: 10800,
  internalTrafficPolicy: 'Cluster',
});
const slice = (service: string, ip: string, nodeName: string): EndpointSliceInfo => ({
  namespace: 'ns',
  name: `${service}-1`,
  serviceName: service,
  addressType: 'IPv4',
  ports: [],
  endpoints: [{ addresses: [parseIp(ip)], ready: true, serving: true, terminating: false, nodeName }],
  source: 'EndpointSlice',
});

function storeWith(services: ServiceInfo[], slices: EndpointSliceInfo[]): ClusterStore {
  const store = new ClusterStore();
  store.replaceAll({ services, endpointSlices: slices, endpoints: [] });
  return store;
}

const RULES_ONLY: DeriveConfig = { serviceCidrs: [parseCidr('10.10.0.0/16')], proxyAddrs: [parseHostPort('169.254.96.16:40001')], selection: DEFAULT_SELECTION };
const WITH_PROXY: DeriveConfig = { ...RULES_ONLY, paths: { nodeName: 'n1', directCidrs: [], tunnel: false } };

const STATE = (): ClusterState =>
  storeWith(
    [svc('web', '10.10.0.10'), svc('kept', '10.10.0.11', { noproxy: 'edgemesh' }), svc('api', '10.10.0.12')],
    [slice('web', '10.244.0.5', 'n1'), slice('kept', '10.244.0.6', 'n1'), slice('api', '10.244.0.7', 'n2')],
  ).snapshot();

describe('derive: one selection, the intent and the routes', () => {
  it('gives the same intent as desiredIntent and the same routes as computeRoutes with the selection as the filter', () => {
    const state = STATE();
    const d = derive(state, WITH_PROXY);
    expect(d.intent).toEqual(desiredIntent(state, RULES_ONLY));
    expect(d.routes).toEqual(computeRoutes(state, (s) => selectService(s, DEFAULT_SELECTION).kind === 'proxied', WITH_PROXY.paths));
    // The ignored service is a RETURN in the intent and has no route; the proxied ones have routes and no RETURN.
    expect(d.intent.families.ipv4!.ignored.map((a) => a.service)).toEqual(['ns/kept']);
    expect(d.routes!.routes.map((r) => r.service)).toEqual(['ns/web', 'ns/api']);
    expect(d.localServe).toBeUndefined();
  });

  it('computes no routes without paths (an agent without a proxy), and what the tunnel listener may serve with the tunnel', () => {
    const state = STATE();
    expect(derive(state, RULES_ONLY).routes).toBeUndefined();
    const tunnel = derive(state, { ...RULES_ONLY, paths: { nodeName: 'n1', directCidrs: [], tunnel: true } });
    expect(tunnel.localServe).toEqual(computeLocalServe(state, 'n1'));
    expect(tunnel.localServe!.map((l) => l.service)).toEqual(['ns/kept', 'ns/web']);
  });
});

describe('Deriver: memoised by store generation and config', () => {
  it('derives once per generation: a second consumer of the same generation gets the same object without reading the state', () => {
    const store = storeWith([svc('web', '10.10.0.10')], []);
    const m = new Deriver();
    let reads = 0;
    const state = () => {
      reads++;
      return store.snapshot();
    };
    const first = m.at(store.generation, state, WITH_PROXY);
    expect(m.at(store.generation, state, WITH_PROXY)).toBe(first);
    expect(reads).toBe(1);
    store.replaceServices([svc('web', '10.10.0.10'), svc('more', '10.10.0.20', { noproxy: 'edgemesh' })]);
    const second = m.at(store.generation, state, WITH_PROXY);
    expect(second).not.toBe(first);
    expect(second.intent.families.ipv4!.ignored.map((a) => a.ip.text)).toEqual(['10.10.0.20']);
    expect(reads).toBe(2);
    // A new config object (relays resolved anew) derives again, at the same generation.
    const third = m.at(store.generation, state, { ...WITH_PROXY });
    expect(third).not.toBe(second);
    expect(third).toEqual(second);
    expect(reads).toBe(3);
  });
});
