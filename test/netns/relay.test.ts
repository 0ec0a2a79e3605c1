// Acceptance tests of the relays: edge nodes behind NAT routers (new inbound connections
// dropped), reached through a cloud agent they keep registration sessions with. Real
// `edgemesh-agent run` processes in namespaces (test/helpers/relay-topology.ts); every agent runs
// with --tunnel-relay. Each test says what it proves; every wait and load loop is bounded.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeNetns } from '../helpers/netns.js';
import { eventually } from '../helpers/agent.js';
import { createRelayTopology, metricSum, TUNNEL_PORT, type RelayNodeName, type RelayTopology } from '../helpers/relay-topology.js';
import type { ServerHandle } from '../helpers/tunnel-topology.js';

describeNetns('relays: edge nodes behind NAT reached through a cloud relay', () => {
  let t: RelayTopology;
  let e1Srv: ServerHandle;
  let e2Srv: ServerHandle;
  let cloudSrv: ServerHandle;
  let relayArgs: string[];

  const EDGE1 = 'http://10.96.0.50/';
  const EDGE2 = 'http://10.96.0.60/';
  const CLOUD = 'http://10.96.0.30/';
  const conns = (s: ServerHandle) => [...s.conns.values()].reduce((a, b) => a + b, 0);
  const pod = (n: RelayNodeName) => t.nodes[n].pod!;

  const ensureAgents = async () => {
    for (const n of ['cloud', 'edge-1', 'edge-2'] as const) if (!t.nodes[n].agent) await t.startAgent(n, relayArgs);
    await t.waitRegistered('cloud', ['edge-1', 'edge-2']);
  };

  beforeAll(async () => {
    t = await createRelayTopology({ label: 'rly' });
    relayArgs = ['--tunnel-relay', t.relay1];
    e1Srv = await t.startServers('edge-1', [
      { kind: 'http', host: '10.244.2.10', port: 8080, marker: t.markers.edge1 },
      { kind: 'sink', host: '10.244.2.10', port: 9000 },
      { kind: 'echo', host: '10.244.2.10', port: 7000 },
    ]);
    e2Srv = await t.startServers('edge-2', [{ kind: 'http', host: '10.244.3.10', port: 8080, marker: t.markers.edge2 }]);
    cloudSrv = await t.startServers('cloud', [{ kind: 'http', host: '10.244.1.10', port: 8080, marker: t.markers.cloud }]);
  });

  afterAll(async () => {
    await t?.destroy();
  });

  it('without agents: no edge pod reaches the other edge\'s pod or the cloud pod, the cloud pod cannot reach an edge pod, and the cloud cannot dial an edge node (the NAT drops it) while the edge can dial out', async () => {
    const before = conns(e1Srv) + conns(e2Srv) + conns(cloudSrv);
    for (const [from, url] of [
      ['edge-2', 'http://10.244.2.10:8080/'],
      ['edge-1', 'http://10.244.3.10:8080/'],
      ['cloud', 'http://10.244.2.10:8080/'],
      ['edge-1', 'http://10.244.1.10:8080/'],
    ] as const) {
      const r = await t.curl(pod(from), url, 2);
      expect(r.ok, `${from} pod -> ${url}: ${r.body}`).toBe(false);
    }
    expect(conns(e1Srv) + conns(e2Srv) + conns(cloudSrv)).toBe(before);
    // The edge node is reachable on its LAN (a closed port answers with a reset) ...
    expect(await t.probe(t.routers['edge-1'].ns, '10.0.1.2', TUNNEL_PORT)).toBe('refused');
    // ... but from the cloud, which has a route to that LAN, a new connection is dropped by the NAT router,
    expect(await t.probe(t.nodes.cloud.node, '10.0.1.2', TUNNEL_PORT, 1_500)).toBe('timeout');
    expect(await t.probe(t.nodes.cloud.node, '10.0.2.2', TUNNEL_PORT, 1_500)).toBe('timeout');
    // the router's WAN address is the router itself (nothing forwarded), and edge-2 has no route to edge-1's LAN.
    expect(await t.probe(t.nodes.cloud.node, '192.168.50.11', TUNNEL_PORT)).toBe('refused');
    expect(await t.probe(t.nodes['edge-2'].node, '10.0.1.2', TUNNEL_PORT)).not.toBe('refused');
    // Outbound works: the edges reach the cloud's underlay address (nothing listens yet: a reset).
    expect(await t.probe(t.nodes['edge-1'].node, '192.168.50.1', TUNNEL_PORT)).toBe('refused');
    expect(await t.probe(t.nodes['edge-2'].node, '192.168.50.1', TUNNEL_PORT)).toBe('refused');
  });

  it('reach: cloud pod -> Service on edge-1, edge-1 pod -> cloud Service, edge-2 pod -> Service on edge-1 through the relay; the relay counts the joins and holds 2 registrations, each edge reports its session registered', async () => {
    await ensureAgents();
    const m0 = await t.metrics('cloud');
    const before1 = conns(e1Srv);
    const c2e = await eventually(() => t.curl(pod('cloud'), EDGE1), (r) => r.ok, 10_000, 'cloud pod -> shop/edge1-web');
    expect(c2e.value.body).toContain(t.markers.edge1);
    const e2c = await eventually(() => t.curl(pod('edge-1'), CLOUD), (r) => r.ok, 10_000, 'edge-1 pod -> shop/cloud-web');
    expect(e2c.value.body).toContain(t.markers.cloud);
    const e2e = await eventually(() => t.curl(pod('edge-2'), EDGE1), (r) => r.ok, 10_000, 'edge-2 pod -> shop/edge1-web');
    expect(e2e.value.body).toContain(t.markers.edge1);
    const e1e2 = await eventually(() => t.curl(pod('edge-1'), EDGE2), (r) => r.ok, 10_000, 'edge-1 pod -> shop/edge2-web');
    expect(e1e2.value.body).toContain(t.markers.edge2);
    expect(conns(e1Srv) - before1).toBeGreaterThanOrEqual(2);
    // the pod networks still do not route to each other: the agents carried it
    expect((await t.curl(pod('edge-2'), 'http://10.244.2.10:8080/', 2)).ok).toBe(false);

    const m1 = await t.metrics('cloud');
    expect(metricSum(m1, 'edgemesh_relay_joins_total', { result: 'ok' }) - metricSum(m0, 'edgemesh_relay_joins_total', { result: 'ok' })).toBeGreaterThanOrEqual(3);
    expect(metricSum(m1, 'edgemesh_relay_registered_nodes')).toBe(2);
    expect(metricSum(m1, 'edgemesh_relay_bytes_total')).toBeGreaterThan(0);
    for (const e of ['edge-1', 'edge-2'] as const) {
      const m = await t.metrics(e);
      expect(metricSum(m, 'edgemesh_relay_sessions', { relay: t.relay1, state: 'registered' }), `${e}: ${JSON.stringify(m)}`).toBe(1);
    }
    const e1m = await t.metrics('edge-1');
    expect(metricSum(e1m, 'edgemesh_relay_data_connections_total', { result: 'ok' })).toBeGreaterThanOrEqual(2);
    const e2m = await t.metrics('edge-2');
    expect(metricSum(e2m, 'edgemesh_relay_dial_joins_total', { result: 'ok' })).toBeGreaterThanOrEqual(1);
  });

  it('status: on the relay it lists both registrations (from the NAT routers\' addresses), on an edge its relay session as registered', async () => {
    await ensureAgents();
    const r = await t.status('cloud');
    expect(r.code, r.stderr).toBe(0);
    const e1Line = r.stdout.split('\n').find((l) => /^\s*edge-1\s/.test(l));
    const e2Line = r.stdout.split('\n').find((l) => /^\s*edge-2\s/.test(l));
    expect(r.stdout, r.stdout).toMatch(/2 nodes registered/);
    expect(e1Line, r.stdout).toContain('192.168.50.11');
    expect(e2Line, r.stdout).toContain('192.168.50.12');
    for (const e of ['edge-1', 'edge-2'] as const) {
      const s = await t.status(e);
      expect(s.code, s.stderr).toBe(0);
      const line = s.stdout.split('\n').find((l) => l.startsWith(t.relay1));
      expect(line, s.stdout).toBeDefined();
      expect(line).toMatch(/\bregistered\b/);
    }
    console.log(`relay status on cloud:\n${r.stdout.split('\n').filter((l) => /relay|regist|edge-/.test(l)).join('\n')}`);
  });
});
