import { describe, expect, it } from 'vitest';
import type { EndpointSliceInfo, NodeInfo, ServiceInfo } from '../../src/cluster/model.js';
import { parseHostPort } from '../../src/net.js';
import { ClusterStore } from '../../src/cluster/store.js';

const svc = (name: string, ip = '10.10.0.9'): ServiceInfo => ({
  namespace: 'ns',
  name,
  labels: {},
  type: 'ClusterIP',
  clusterIPs: [ip],
  headless: false,
  ports: [],
  sessionAffinity: 'None',
  affinityTimeoutSeconds: 10800,
  internalTrafficPolicy: 'Cluster',
});
const slice = (name: string, service: string, ip: string, source: 'EndpointSlice' | 'Endpoints' = 'EndpointSlice'): EndpointSliceInfo => ({
  namespace: 'ns',
  name,
  serviceName: service,
  addressType: 'IPv4',
  ports: [],
  endpoints: [{ addresses: [ip], ready: true, serving: true, terminating: false }],
  source,
});

describe('ClusterStore', () => {
  it('is synced only after complete lists of both services and endpoint slices', async () => {
    const store = new ClusterStore();
    let resolved = false;
    void store.whenSynced().then(() => (resolved = true));
    store.upsertService(svc('a'));
    store.upsertEndpointSlice(slice('a-1', 'a', '10.244.0.1'));
    expect(store.synced).toBe(false);
    store.replaceServices([svc('a')]);
    await Promise.resolve();
    expect(store.synced).toBe(false);
    expect(resolved).toBe(false);
    store.replaceEndpointSlices([]);
    expect(store.synced).toBe(true);
    await store.whenSynced();
    expect(resolved).toBe(true);
  });

  it('notifies once per real change, not for writes that change nothing; becoming synced notifies', () => {
    const store = new ClusterStore();
    let n = 0;
    const off = store.onChange(() => n++);
    store.upsertService(svc('a'));
    store.upsertService(svc('a'));
    expect(n).toBe(1);
    store.upsertService(svc('a', '10.10.0.10'));
    expect(n).toBe(2);
    store.deleteService('ns', 'missing');
    expect(n).toBe(2);
    store.replaceAll({ services: [svc('a', '10.10.0.10')], endpointSlices: [] }); // no content change, but now synced
    expect(n).toBe(3);
    store.replaceAll({ services: [svc('a', '10.10.0.10')], endpointSlices: [] });
    expect(n).toBe(3);
    off();
    store.deleteService('ns', 'a');
    expect(n).toBe(3);
  });

  it('replaceAll removes what vanished and keeps snapshots immutable', () => {
    const store = new ClusterStore();
    store.replaceAll({ services: [svc('a'), svc('b')], endpointSlices: [slice('a-1', 'a', '10.244.0.1')] });
    const before = store.snapshot();
    expect(store.snapshot()).toBe(before); // cached until a change
    store.replaceAll({ services: [svc('b')], endpointSlices: [] });
    const after = store.snapshot();
    expect([...before.services.keys()]).toEqual(['ns/a', 'ns/b']);
    expect([...after.services.keys()]).toEqual(['ns/b']);
    expect(before.slices.get('ns/a')).toHaveLength(1);
    expect(after.slices.has('ns/a')).toBe(false);
  });

  it('groups slices by service and uses v1 Endpoints only where no EndpointSlice exists', () => {
    const store = new ClusterStore();
    store.upsertEndpointSlice(slice('a-2', 'a', '10.244.0.2'));
    store.upsertEndpointSlice(slice('a-1', 'a', '10.244.0.1'));
    store.upsertEndpoints('ns', 'a', [slice('a', 'a', '10.244.9.9', 'Endpoints')]);
    store.upsertEndpoints('ns', 'b', [slice('b', 'b', '10.244.0.3', 'Endpoints')]);
    const s = store.snapshot();
    expect(s.slices.get('ns/a')!.map((x) => x.name)).toEqual(['a-1', 'a-2']);
    expect(s.slices.get('ns/b')!.map((x) => x.source)).toEqual(['Endpoints']);
    store.deleteEndpointSlice('ns', 'a-1');
    store.deleteEndpointSlice('ns', 'a-2');
    expect(store.snapshot().slices.get('ns/a')!.map((x) => x.endpoints[0]!.addresses[0])).toEqual(['10.244.9.9']);
  });

  it('refuses slices of the wrong source kind', () => {
    const store = new ClusterStore();
    expect(() => store.upsertEndpointSlice(slice('a', 'a', '10.0.0.1', 'Endpoints'))).toThrow(TypeError);
    expect(() => store.replaceAll({ endpoints: [slice('a', 'a', '10.0.0.1')] })).toThrow(TypeError);
  });

  it('keeps nodes: upsert, delete and replace bump the generation only on a real change', () => {
    const node = (name: string, addr?: string): NodeInfo => (addr ? { name, tunnelAddress: parseHostPort(addr) } : { name });
    const store = new ClusterStore();
    store.replaceAll({ services: [], endpointSlices: [] });
    const g0 = store.generation;
    store.upsertNode(node('edge-1', '192.168.1.10:20006'));
    store.upsertNode(node('edge-1', '192.168.1.10:20006'));
    expect(store.generation).toBe(g0 + 1);
    const before = store.snapshot();
    store.replaceNodes([node('edge-1', '192.168.1.10:20006')]);
    expect(store.generation).toBe(g0 + 1);
    expect(store.snapshot()).toBe(before);
    store.replaceAll({ nodes: [node('edge-1', '192.168.1.11:20006'), node('edge-2')] });
    expect(store.generation).toBe(g0 + 2);
    expect([...store.snapshot().nodes.values()]).toEqual([node('edge-1', '192.168.1.11:20006'), node('edge-2')]);
    expect(before.nodes.get('edge-1')!.tunnelAddress!.address).toBe('192.168.1.10'); // the old snapshot is unchanged
    store.deleteNode('missing');
    expect(store.generation).toBe(g0 + 2);
    store.deleteNode('edge-2');
    expect(store.generation).toBe(g0 + 3);
    expect([...store.snapshot().nodes.keys()]).toEqual(['edge-1']);
  });

  it('with requireNodes, is synced only after a complete list of nodes as well', () => {
    const store = new ClusterStore({ requireNodes: true });
    store.replaceAll({ services: [], endpointSlices: [] });
    expect(store.synced).toBe(false);
    store.upsertNode({ name: 'edge-1' });
    expect([store.synced, store.nodesListed]).toEqual([false, false]);
    store.replaceNodes([]);
    expect([store.synced, store.nodesListed]).toEqual([true, true]);
    const plain = new ClusterStore();
    plain.replaceAll({ services: [], endpointSlices: [] });
    expect([plain.synced, plain.nodesListed]).toEqual([true, false]);
  });
});

describe('ClusterStore: timed changes (network programming latency)', () => {
  it('times every change after the first complete list, by generation, once; the initial list and no-op writes are not timed', () => {
    const store = new ClusterStore();
    store.upsertService(svc('early'));
    store.replaceAll({ services: [svc('a')], endpointSlices: [slice('a-1', 'a', '10.244.0.1')] });
    expect(store.synced).toBe(true);
    expect(store.takeChangesUpTo(store.generation)).toEqual([]);
    const t0 = performance.now();
    store.upsertService(svc('b'));
    const g1 = store.generation;
    store.upsertService(svc('b')); // the same value: no change
    store.upsertEndpointSlice(slice('b-1', 'b', '10.244.0.2'));
    const g2 = store.generation;
    store.deleteService('ns', 'a');
    const g3 = store.generation;
    // A sync of g2 includes the first two changes, not the third.
    const upToG2 = store.takeChangesUpTo(g2);
    expect(upToG2.map((c) => c.generation)).toEqual([g1, g2]);
    for (const c of upToG2) expect(c.seenAt).toBeGreaterThanOrEqual(t0);
    expect(store.takeChangesUpTo(g2)).toEqual([]); // taken once
    expect(store.takeChangesUpTo(g3).map((c) => c.generation)).toEqual([g3]);
    // A relist after the first is a change like any other.
    store.replaceAll({ services: [svc('c')] });
    expect(store.takeChangesUpTo(store.generation)).toHaveLength(1);
  });
});
