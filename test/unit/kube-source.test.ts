// The Kubernetes source through its real list/watch client (kube-client.ts) against an in-test
// API server (list + watch with resourceVersion, bookmarks, 410 Gone, dropped connections).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { desiredRuleSets } from '../../src/intent/desired.js';
import { renderRuleSet } from '../../src/netfilter/rules.js';
import { TUNNEL_ADDRESS_ANNOTATION } from '../../src/cluster/convert.js';
import { KubeSource, makeKubeConfig } from '../../src/cluster/kube.js';
import { ClusterStore } from '../../src/cluster/store.js';
import { FakeApiServer, type Resource } from '../helpers/fake-apiserver.js';
import { loadDir, SEED_CONFIG, SEED_MONITORING_DIR } from '../helpers/sources.js';

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: unknown };

/** The Service and EndpointSlice objects of a manifest directory, as the API server would hold them. */
function manifests(dir: string): { services: Obj[]; slices: Obj[] } {
  const out = { services: [] as Obj[], slices: [] as Obj[] };
  const visit = (o: Obj & { items?: Obj[] }): void => {
    if (!o) return;
    if (o.kind === 'List') return o.items?.forEach(visit);
    if (o.kind === 'Service') out.services.push(o);
    if (o.kind === 'EndpointSlice') out.slices.push(o);
  };
  for (const f of readdirSync(dir).sort()) {
    const text = readFileSync(join(dir, f), 'utf8');
    if (f.endsWith('.json')) visit(JSON.parse(text) as Obj);
    else for (const d of parseAllDocuments(text)) visit(d.toJS() as Obj);
  }
  return out;
}

const svc = (name: string, ip: string, labels: Record<string, string> = {}): Obj => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: 'shop', labels },
  spec: { clusterIP: ip, ports: [{ port: 80 }] },
});

/** Polls until `cond` holds; bounded. */
async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const render = (store: ClusterStore): string => renderRuleSet(desiredRuleSets(store.snapshot(), SEED_CONFIG).sets.ipv4!);
const ips = (store: ClusterStore): Record<string, string> =>
  Object.fromEntries([...store.snapshot().services.values()].filter((s) => s.namespace === 'shop').map((s) => [s.name, s.clusterIPs.join(',')]));

let api: FakeApiServer;
let source: KubeSource | undefined;
let errors: string[];

beforeEach(async () => {
  api = new FakeApiServer();
  await api.start();
  errors = [];
});
afterEach(async () => {
  await source?.stop();
  source = undefined;
  await api.close();
});

let warnings: string[];

function startSource(store: ClusterStore, opts: { watchNodes?: boolean } = {}): KubeSource {
  warnings = [];
  source = new KubeSource({
    kubeConfig: makeKubeConfig({ kind: 'api-server', url: api.url }),
    store,
    backoff: { initialMs: 20, maxMs: 200, resetAfterMs: 10_000 },
    onError: (r, m) => errors.push(`${r}: ${m}`),
    onWarning: (r, m) => warnings.push(`${r}: ${m}`),
    ...opts,
  });
  source.start();
  return source;
}

function loadSeed(): void {
  const { services, slices } = manifests(SEED_MONITORING_DIR);
  for (const s of services) api.set('services', s);
  for (const s of slices) api.set('endpointslices', s);
}

describe('Kubernetes source (real client, fake API server)', () => {
  it('converges to the same state and rules as the static source from the same manifests', async () => {
    loadSeed();
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    const fromStatic = await loadDir(SEED_MONITORING_DIR);
    expect(store.snapshot().services).toEqual(fromStatic.snapshot().services);
    expect(store.snapshot().slices).toEqual(fromStatic.snapshot().slices);
    expect(render(store)).toBe(render(fromStatic));
    expect(render(store).match(/-j RETURN/g)).toHaveLength(13);
  });

  it('is synced only after the first complete list of both services and endpoint slices', async () => {
    loadSeed();
    api.hold('endpointslices');
    const store = new ClusterStore();
    startSource(store);
    await until(() => store.snapshot().services.size === 11, 'services listed');
    await new Promise((r) => setTimeout(r, 100));
    expect(store.synced).toBe(false);
    api.release('endpointslices');
    await store.whenSynced();
    expect(store.synced).toBe(true);
    expect(store.snapshot().slices.get('monitoring/node-exporter')![0]!.endpoints).toHaveLength(5);
  });

  it('applies ADDED, MODIFIED and DELETED watch events; watches with resourceVersion and bookmarks', async () => {
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => api.openWatches() === 3, 'all three watches open');
    const watch = api.requests.find((r) => r.watch && r.resource === 'services')!;
    expect(watch.query).toMatchObject({ watch: 'true', allowWatchBookmarks: 'true', resourceVersion: '100' });

    api.set('services', svc('web', '10.10.1.1'));
    await until(() => ips(store).web === '10.10.1.1', 'ADDED');
    api.set('services', svc('web', '10.10.1.1', { noproxy: 'edgemesh' }));
    await until(() => render(store).includes('ignore shop/web service'), 'MODIFIED adds the RETURN');
    api.bookmark();
    api.set('endpointslices', { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', metadata: { name: 'web-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'web' } }, addressType: 'IPv4', endpoints: [{ addresses: ['10.244.0.1'] }] });
    await until(() => store.snapshot().slices.has('shop/web'), 'slice ADDED');
    api.delete('services', 'shop', 'web');
    await until(() => !('web' in ips(store)), 'DELETED');
    expect(api.lists('services')).toBe(1); // nothing forced a relist
    expect(errors).toEqual([]);
  });

  it('relists after a 410 ERROR event on the watch and converges, including changes lost to compaction', async () => {
    api.set('services', svc('a', '10.10.2.1'));
    api.set('services', svc('b', '10.10.2.2'));
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => api.openWatches() === 3, 'all three watches open');
    // Changes whose events are lost (compacted away), then the watch expires.
    api.delete('services', 'shop', 'a', { silent: true });
    api.set('services', svc('b', '10.10.2.3'), { silent: true });
    api.set('services', svc('c', '10.10.2.4'), { silent: true });
    api.expireWatches('services');
    await until(() => JSON.stringify(ips(store)) === JSON.stringify({ b: '10.10.2.3', c: '10.10.2.4' }), 'converged after 410');
    expect(api.lists('services')).toBe(2);
  });

  it('relists after an HTTP 410 on re-watch (watch ended cleanly, history compacted meanwhile)', async () => {
    api.set('services', svc('a', '10.10.3.1'));
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => api.openWatches() === 3, 'all three watches open');
    api.set('services', svc('a', '10.10.3.9'), { silent: true });
    api.compact();
    api.endWatches();
    await until(() => ips(store).a === '10.10.3.9', 'converged after HTTP 410');
    expect(api.requests.some((r) => r.watch && r.resource === 'services' && r.query.resourceVersion === '101')).toBe(true);
    expect(api.lists('services')).toBe(2);
  });

  it('recovers from a dropped connection and from failed lists, with backoff, and converges', async () => {
    api.set('services', svc('a', '10.10.4.1'));
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => api.openWatches() === 3, 'all three watches open');
    api.failLists.services = 2; // the relists after the drop fail twice first
    api.dropConnections();
    api.set('services', svc('a', '10.10.4.2'), { silent: true });
    api.set('services', svc('n', '10.10.4.3'));
    await until(() => JSON.stringify(ips(store)) === JSON.stringify({ a: '10.10.4.2', n: '10.10.4.3' }), 'converged after drop');
    await until(() => api.openWatches() === 3, 'watches re-established');
    expect(errors.some((e) => e.startsWith('services:') && e.includes('relisting in'))).toBe(true);
    expect(errors.some((e) => e.includes('500') || e.includes('Internal Server Error') || e.includes('etcd'))).toBe(true);
    // Backoff grew: 20 ms, then 40 ms, then 80 ms for the services supervisor.
    const delays = errors.filter((e) => e.startsWith('services:')).map((e) => Number(/relisting in (\d+) ms/.exec(e)?.[1]));
    expect(delays.slice(0, 3)).toEqual([20, 40, 80]);
    // And a later change still flows through the new watch.
    api.set('services', svc('a', '10.10.4.4'));
    await until(() => ips(store).a === '10.10.4.4', 'watch after recovery');
  });

  it('skips an object that fails conversion, keeping its last good state, and reports it', async () => {
    api.set('services', svc('a', '10.10.5.1'));
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => api.openWatches() === 3, 'all three watches open');
    api.set('services', svc('a', '10.10.5.999'));
    await until(() => errors.some((e) => e.includes('octet 999')), 'conversion error reported');
    expect(ips(store).a).toBe('10.10.5.1');
    expect(errors.find((e) => e.includes('octet 999'))).toBe('services: services: skipping object: Service shop/a: spec.clusterIP: "10.10.5.999": octet 999 out of range 0-255');
  });

  it('makeKubeConfig refuses a bad URL or a missing kubeconfig with a ConfigError', () => {
    expect(() => makeKubeConfig({ kind: 'api-server', url: 'ftp://x' })).toThrow('--api-server "ftp://x": scheme must be http or https');
    expect(() => makeKubeConfig({ kind: 'kubeconfig', file: '/nonexistent/kubeconfig' })).toThrow('--kubeconfig "/nonexistent/kubeconfig"');
  });
});

const node = (name: string, tunnelAddress?: string, heartbeat = '2024-01-01T00:00:00Z'): Obj => ({
  apiVersion: 'v1',
  kind: 'Node',
  metadata: { name, ...(tunnelAddress !== undefined ? { annotations: { [TUNNEL_ADDRESS_ANNOTATION]: tunnelAddress } } : {}) },
  status: { conditions: [{ type: 'Ready', status: 'True', lastHeartbeatTime: heartbeat }] },
});
const tunnels = (store: ClusterStore): Record<string, string> =>
  Object.fromEntries([...store.snapshot().nodes.values()].map((n) => [n.name, n.tunnelAddress ? `${n.tunnelAddress.address}:${n.tunnelAddress.port}` : '-']));

describe('Kubernetes source: nodes', () => {
  it('lists and watches Nodes: tunnel addresses in the store, ADDED/MODIFIED/DELETED applied', async () => {
    api.set('nodes', node('edge-1', '192.168.1.10:20006'));
    api.set('nodes', node('edge-2'));
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => store.nodesListed, 'nodes listed');
    expect(tunnels(store)).toEqual({ 'edge-1': '192.168.1.10:20006', 'edge-2': '-' });
    await until(() => api.openWatches('nodes') === 1, 'node watch open');
    expect(api.requests.find((r) => r.watch && r.resource === 'nodes')!.query).toMatchObject({ watch: 'true', allowWatchBookmarks: 'true' });
    api.set('nodes', node('edge-2', '[fd00::2]:20006'));
    api.set('nodes', node('edge-3', '192.168.1.30:20006'));
    await until(() => tunnels(store)['edge-3'] !== undefined && tunnels(store)['edge-2'] !== '-', 'MODIFIED and ADDED');
    expect(tunnels(store)).toEqual({ 'edge-1': '192.168.1.10:20006', 'edge-2': 'fd00::2:20006', 'edge-3': '192.168.1.30:20006' });
    api.delete('nodes', '', 'edge-1');
    await until(() => !('edge-1' in tunnels(store)), 'DELETED');
    expect(api.lists('nodes')).toBe(1);
    expect([errors, warnings]).toEqual([[], []]);
  });

  it('a status-only Node update changes nothing in the store (no generation bump)', async () => {
    api.set('nodes', node('edge-1', '192.168.1.10:20006'));
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => store.nodesListed && api.openWatches('nodes') === 1, 'node watch open');
    const gen = store.generation;
    api.set('nodes', node('edge-1', '192.168.1.10:20006', '2024-01-01T00:01:00Z'));
    api.set('nodes', node('edge-2'));
    await until(() => 'edge-2' in tunnels(store), 'the later event applied');
    expect(store.generation).toBe(gen + 1); // edge-2 only
  });

  it('warns once about a bad tunnel address annotation, not on every update, and keeps the node without an address', async () => {
    api.set('nodes', node('edge-1', '192.168.1.10'));
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => store.nodesListed && api.openWatches('nodes') === 1, 'node watch open');
    api.set('nodes', node('edge-1', '192.168.1.10', '2024-01-01T00:01:00Z'));
    api.set('nodes', node('edge-1', '192.168.1.10', '2024-01-01T00:02:00Z'));
    api.set('nodes', node('edge-2'));
    await until(() => 'edge-2' in tunnels(store), 'later events applied');
    expect(tunnels(store)['edge-1']).toBe('-');
    expect(warnings).toEqual(['nodes: Node edge-1: annotation edgemesh.io/tunnel-address "192.168.1.10": missing ":PORT"; the node has no tunnel address']);
    expect(errors).toEqual([]);
  });

  it('relists Nodes after a 410 on the watch and converges, including changes lost to compaction', async () => {
    api.set('nodes', node('edge-1', '192.168.1.10:20006'));
    const store = new ClusterStore();
    startSource(store);
    await store.whenSynced();
    await until(() => store.nodesListed && api.openWatches('nodes') === 1, 'node watch open');
    api.set('nodes', node('edge-1', '192.168.1.11:20006'), { silent: true });
    api.set('nodes', node('edge-2', '192.168.1.12:20006'), { silent: true });
    api.expireWatches('nodes');
    await until(() => JSON.stringify(tunnels(store)) === JSON.stringify({ 'edge-1': '192.168.1.11:20006', 'edge-2': '192.168.1.12:20006' }), 'converged after 410');
    expect(api.lists('nodes')).toBe(2);
  });

  it('recovers from failed Node lists with backoff', async () => {
    api.failLists.nodes = 2;
    api.set('nodes', node('edge-1', '192.168.1.10:20006'));
    const store = new ClusterStore();
    startSource(store);
    await until(() => store.nodesListed, 'nodes listed after the failures');
    expect(tunnels(store)).toEqual({ 'edge-1': '192.168.1.10:20006' });
    expect(errors.filter((e) => e.startsWith('nodes:')).map((e) => Number(/relisting in (\d+) ms/.exec(e)?.[1]))).toEqual([20, 40]);
  });

  it('a store made with requireNodes is synced only after the Node list too', async () => {
    api.hold('nodes');
    const store = new ClusterStore({ requireNodes: true });
    startSource(store);
    await until(() => api.lists('services') === 1 && api.lists('endpointslices') === 1, 'services and slices listed');
    await new Promise((r) => setTimeout(r, 100));
    expect(store.synced).toBe(false);
    api.release('nodes');
    await store.whenSynced();
    expect(store.nodesListed).toBe(true);
  });

  it('with watchNodes false asks nothing about Nodes', async () => {
    const store = new ClusterStore();
    startSource(store, { watchNodes: false });
    await store.whenSynced();
    await until(() => api.openWatches() === 2, 'two watches open');
    expect(api.requests.some((r) => r.resource === 'nodes')).toBe(false);
    expect(source!.starts.nodes).toBe(0);
  });
});

export type { Resource };
