// The TCP service proxy end to end in namespaces, behind the real kube-proxy rules:
//
//   pod ns (10.244.1.2, fd00:244:1::2) --veth-- node ns --veth-- backend ns (10.244.2.2/.3, fd00:244:2::2)
//
// The node namespace holds kube-proxy's fixture rules, a KUBE-SERVICES-style DNAT for both test
// services (as kube-proxy would have), our DESIGN rule layout (EDGE-MESH at position 1 of
// PREROUTING and OUTPUT, RETURN for the ignored kube-dns IP, service CIDR -> EDGE-MESH-TCP ->
// DNAT to the proxy), edgemesh0 with the proxy addresses, and the proxy itself (running in this
// test process, its listener and worker threads inside the node namespace). The routing table is
// computed by routes.ts from a ClusterState, as the agent does.
import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ClusterState, EndpointSliceInfo, ServiceInfo } from '../../src/cluster/model.js';
import { TcpProxy, type ConnectionEvent } from '../../src/proxy/proxy.js';
import { computeRoutes } from '../../src/intent/routes.js';
import { loadKubeProxyIptables } from '../helpers/fixtures.js';
import { describeNetns, linkNetns, Netns } from '../helpers/netns.js';

const drivers = join(dirname(fileURLToPath(import.meta.url)), 'drivers');
const GiB = 1 << 30;
const MiB = 1 << 20;

function service(ns: string, name: string, clusterIPs: string[], ports: ServiceInfo['ports'], labels: Record<string, string> = {}): ServiceInfo {
  return { namespace: ns, name, labels, type: 'ClusterIP', clusterIPs, headless: false, ports, sessionAffinity: 'None', affinityTimeoutSeconds: 10800, internalTrafficPolicy: 'Cluster' };
}

function slice(ns: string, svc: string, family: 'IPv4' | 'IPv6', ips: string[], ports: EndpointSliceInfo['ports']): EndpointSliceInfo {
  return {
    namespace: ns,
    name: `${svc}-${family}`,
    serviceName: svc,
    addressType: family,
    ports,
    endpoints: ips.map((ip) => ({ addresses: [ip], ready: true, serving: true, terminating: false })),
    source: 'EndpointSlice',
  };
}

// The cluster as the sources would present it.
function clusterState(): ClusterState {
  const webPorts: EndpointSliceInfo['ports'] = [
    { name: 'http', protocol: 'TCP', port: 8080 },
    { name: 'sink', protocol: 'TCP', port: 9090 },
    { name: 'banner', protocol: 'TCP', port: 7070 },
  ];
  const services: ServiceInfo[] = [
    service('default', 'web', ['10.10.0.10', 'fd00:10:96::10'], [
      { name: 'http', protocol: 'TCP', port: 80, targetPort: 'http' },
      { name: 'sink', protocol: 'TCP', port: 90, targetPort: 9090 },
      { name: 'banner', protocol: 'TCP', port: 70, targetPort: 'banner' },
    ]),
    // Same backend, reached through the copy-mode proxy (its own DNAT rule, test only).
    service('default', 'web-copy', ['10.10.0.20'], [{ name: 'sink', protocol: 'TCP', port: 90, targetPort: 9090 }]),
    // Two live endpoints: round-robin spreads, ClientIP affinity sticks.
    service('default', 'spread', ['10.10.0.12'], [
      { name: '', protocol: 'TCP', port: 80, targetPort: 8081 },
      { name: 'random', protocol: 'TCP', port: 81, targetPort: 8081 }, // served by the random-selection proxy
    ]),
    { ...service('default', 'sticky', ['10.10.0.13'], [{ name: '', protocol: 'TCP', port: 80, targetPort: 8081 }]), sessionAffinity: 'ClientIP', affinityTimeoutSeconds: 60 },
    // First endpoint black-holes SYNs (connect timeout), second answers.
    service('default', 'slow', ['10.10.0.14'], [{ name: '', protocol: 'TCP', port: 80, targetPort: 8081 }]),
    // Every endpoint refuses.
    service('default', 'dead', ['10.10.0.15'], [{ name: '', protocol: 'TCP', port: 80, targetPort: 8099 }]),
    // Reached through a proxy limited to 3 concurrent connections (its own DNAT rule, test only).
    service('default', 'limited', ['10.10.0.30'], [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080 }]),
    // Two endpoints, the second refuses (nothing listens on 10.244.2.3:8080).
    service('default', 'flaky', ['10.10.0.11'], [{ name: '', protocol: 'TCP', port: 80, targetPort: 8080 }]),
    service('kube-system', 'kube-dns', ['10.10.0.3'], [{ name: 'dns-tcp', protocol: 'TCP', port: 53, targetPort: 5353 }], { 'k8s-app': 'kube-dns' }),
  ];
  const slices = [
    slice('default', 'web', 'IPv4', ['10.244.2.2'], webPorts),
    slice('default', 'web', 'IPv6', ['fd00:244:2::2'], webPorts),
    slice('default', 'web-copy', 'IPv4', ['10.244.2.2'], [{ name: 'sink', protocol: 'TCP', port: 9090 }]),
    slice('default', 'spread', 'IPv4', ['10.244.2.2', '10.244.2.3'], [{ name: '', protocol: 'TCP', port: 8081 }]),
    slice('default', 'sticky', 'IPv4', ['10.244.2.2', '10.244.2.3'], [{ name: '', protocol: 'TCP', port: 8081 }]),
    slice('default', 'slow', 'IPv4', ['10.244.2.4', '10.244.2.2'], [{ name: '', protocol: 'TCP', port: 8081 }]),
    slice('default', 'dead', 'IPv4', ['10.244.2.2', '10.244.2.3'], [{ name: '', protocol: 'TCP', port: 8099 }]),
    slice('default', 'limited', 'IPv4', ['10.244.2.2'], [{ name: '', protocol: 'TCP', port: 8080 }]),
    slice('default', 'flaky', 'IPv4', ['10.244.2.2', '10.244.2.3'], [{ name: '', protocol: 'TCP', port: 8080 }]),
    slice('kube-system', 'kube-dns', 'IPv4', ['10.244.2.2'], [{ name: 'dns-tcp', protocol: 'TCP', port: 5353 }]),
  ];
  const byKey = new Map<string, EndpointSliceInfo[]>();
  for (const s of slices) byKey.set(`${s.namespace}/${s.serviceName}`, [...(byKey.get(`${s.namespace}/${s.serviceName}`) ?? []), s]);
  return { services: new Map(services.map((s) => [`${s.namespace}/${s.name}`, s])), slices: byKey, nodes: new Map() };
}

const isProxied = (s: ServiceInfo) => !(s.namespace === 'kube-system' && s.labels['k8s-app'] === 'kube-dns') && s.labels.noproxy !== 'edgemesh';

const RULES_V4 = `*nat
:EDGE-MESH - [0:0]
:EDGE-MESH-TCP - [0:0]
:KUBE-SVC-EMTESTDNS - [0:0]
:KUBE-SVC-EMTESTWEB - [0:0]
-I KUBE-SERVICES 1 -d 10.10.0.3/32 -p tcp -m comment --comment "kube-system/kube-dns:dns-tcp cluster IP" -m tcp --dport 53 -j KUBE-SVC-EMTESTDNS
-I KUBE-SERVICES 1 -d 10.10.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-EMTESTWEB
-A KUBE-SVC-EMTESTDNS -p tcp -j DNAT --to-destination 10.244.2.2:5353
-A KUBE-SVC-EMTESTWEB -p tcp -j DNAT --to-destination 10.244.2.2:8080
-A EDGE-MESH -d 10.10.0.3/32 -m comment --comment "ignore kube-system/kube-dns service" -j RETURN
-A EDGE-MESH -d 10.10.0.0/16 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP
-A EDGE-MESH-TCP -d 10.10.0.20/32 -p tcp -m comment --comment "test only: copy-mode proxy" -j DNAT --to-destination 169.254.96.16:40002
-A EDGE-MESH-TCP -d 10.10.0.30/32 -p tcp -m comment --comment "test only: limited proxy" -j DNAT --to-destination 169.254.96.16:40003
-A EDGE-MESH-TCP -d 10.10.0.12/32 -p tcp -m tcp --dport 81 -m comment --comment "test only: random-selection proxy" -j DNAT --to-destination 169.254.96.16:40004
-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination 169.254.96.16:40001
-I PREROUTING 1 -m comment --comment "edgemesh root chain" -j EDGE-MESH
-I OUTPUT 1 -m comment --comment "edgemesh root chain" -j EDGE-MESH
COMMIT
`;

const RULES_V6 = `*nat
:EDGE-MESH - [0:0]
:EDGE-MESH-TCP - [0:0]
-A EDGE-MESH -d fd00:10:96::/112 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP
-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination [fd00:e::16]:40001
-I PREROUTING 1 -m comment --comment "edgemesh root chain" -j EDGE-MESH
-I OUTPUT 1 -m comment --comment "edgemesh root chain" -j EDGE-MESH
COMMIT
`;

async function client<T = Record<string, unknown>>(ns: Netns, mode: string, o: object, timeoutMs = 60_000): Promise<T> {
  const r = await ns.run('node', [join(drivers, 'client.mjs'), mode, JSON.stringify({ ...o, timeoutMs: timeoutMs - 2000 })], { timeoutMs, allowFail: true });
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as T;
  } catch {
    throw new Error(`client ${mode} gave no result (exit ${r.code}): ${r.stderr.trim()}`);
  }
}

/** Packet counter of the rule in `chain` whose listing line contains `match`. */
async function ruleCounter(ns: Netns, chain: string, match: string, cmd = 'iptables-legacy'): Promise<number> {
  const out = (await ns.run(cmd, ['-w', '-t', 'nat', '-nvxL', chain])).stdout;
  const line = out.split('\n').find((l) => l.includes(match));
  if (!line) throw new Error(`no rule matching "${match}" in ${chain}:\n${out}`);
  return Number(line.trim().split(/\s+/)[0]);
}

const fdCount = () => readdirSync('/proc/self/fd').length;

async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 25));
  }
  return true;
}

describeNetns('TCP service proxy through EDGE-MESH next to kube-proxy', () => {
  let node: Netns, pod: Netns, be: Netns;
  let p4: TcpProxy, pCopy: TcpProxy, p6: TcpProxy, pLimited: TcpProxy, pRandom: TcpProxy;
  const events: ConnectionEvent[] = [];
  const eventsSince = (n: number) => events.slice(n);

  beforeAll(async () => {
    expect(existsSync(join(drivers, '../../../dist/src/proxy/iface.js')), 'run tsc first (dist/)').toBe(true);
    [node, pod, be] = await Promise.all([Netns.create('node'), Netns.create('pod'), Netns.create('be')]);
    await linkNetns(node, '10.244.1.1/24', pod, '10.244.1.2/24', { a6: 'fd00:244:1::1/64', b6: 'fd00:244:1::2/64' });
    await linkNetns(node, '10.244.2.1/24', be, '10.244.2.2/24', { a6: 'fd00:244:2::1/64', b6: 'fd00:244:2::2/64' });
    await pod.sh('ip route add default via 10.244.1.1 && ip -6 route add default via fd00:244:1::1');
    await be.sh(
      [
        'dev=$(ip -br link | grep -o "^vb[0-9a-f]*")',
        'ip addr add 10.244.2.3/24 dev $dev',
        'ip addr add 10.244.2.4/24 dev $dev',
        'ip route add default via 10.244.2.1',
        'ip -6 route add default via fd00:244:2::1',
        // 10.244.2.4 swallows SYNs: a connect there can only time out.
        'iptables-legacy -w -A INPUT -d 10.244.2.4 -p tcp --syn -j DROP',
      ].join(' && '),
    );
    await node.sh('sysctl -qw net.ipv4.ip_forward=1 && ip route add default via 10.244.1.2 && ip -6 route add default via fd00:244:1::2');
    // The proxy interface, made by the product code inside the node namespace.
    const iface = await node.run('node', [join(drivers, 'iface.mjs'), 'ensure', JSON.stringify({ addresses: ['169.254.96.16', 'fd00:e::16'] })]);
    expect(iface.stdout).toMatch(/"ok"/);
    await loadKubeProxyIptables(node, 'legacy', 'ipv4');
    await node.run('iptables-legacy-restore', ['--noflush', '-w'], { input: RULES_V4 });
    await node.run('ip6tables-legacy-restore', ['--noflush', '-w'], { input: RULES_V6 });
    // EDGE-MESH really is rule 1 ahead of KUBE-SERVICES.
    const pre = (await node.run('iptables-legacy', ['-w', '-t', 'nat', '-S', 'PREROUTING'])).stdout.split('\n').filter((l) => l.startsWith('-A'));
    expect(pre[0]).toMatch(/-j EDGE-MESH$/);
    expect(pre[1]).toMatch(/-j KUBE-SERVICES$/);

    const servers = be.spawn('node', [
      join(drivers, 'servers.mjs'),
      JSON.stringify([
        { kind: 'echo', host: '10.244.2.2', port: 8080 },
        { kind: 'echo', host: 'fd00:244:2::2', port: 8080 },
        { kind: 'sink', host: '10.244.2.2', port: 9090 },
        { kind: 'sink', host: 'fd00:244:2::2', port: 9090 },
        { kind: 'echo', host: '10.244.2.2', port: 5353 },
        { kind: 'banner', host: '10.244.2.2', port: 7070 },
        { kind: 'echo', host: '10.244.2.2', port: 8081 },
        { kind: 'echo', host: '10.244.2.3', port: 8081 },
      ]),
    ]);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      servers.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('ready')) resolve();
      });
      servers.on('exit', (c) => reject(new Error(`backends exited ${c}`)));
    });

    const table = computeRoutes(clusterState(), isProxied);
    const onEvent = (e: ConnectionEvent) => events.push(e);
    p4 = new TcpProxy({ netns: node.path, address: '169.254.96.16', port: 40001 });
    pCopy = new TcpProxy({ netns: node.path, address: '169.254.96.16', port: 40002, mode: 'copy', idleTimeoutMs: 1500 });
    p6 = new TcpProxy({ netns: node.path, address: 'fd00:e::16', port: 40001 });
    pLimited = new TcpProxy({ netns: node.path, address: '169.254.96.16', port: 40003, maxConnections: 3, threads: 1 });
    pRandom = new TcpProxy({ netns: node.path, address: '169.254.96.16', port: 40004, selection: 'random', threads: 1 });
    for (const p of [p4, pCopy, p6, pLimited, pRandom]) {
      p.on('connection', onEvent);
      p.start();
      p.updateRoutes(table);
    }
  }, 60_000);

  afterAll(async () => {
    await Promise.all([p4?.close(0), pCopy?.close(0), p6?.close(0), pLimited?.close(0), pRandom?.close(0)]);
    await Promise.all([node?.destroy(), pod?.destroy(), be?.destroy()]);
  });

  it('serves a proxied service through the proxy from a pod (PREROUTING) and from the node itself (OUTPUT), not through kube-proxy', async () => {
    const s0 = p4.stats();
    const kube0 = await ruleCounter(node, 'KUBE-SERVICES', 'default/web:http cluster IP');
    const ours0 = await ruleCounter(node, 'EDGE-MESH-TCP', 'edgemesh tcp proxy');
    const n0 = events.length;
    expect(await client(pod, 'echo', { host: '10.10.0.10', port: 80, count: 5, concurrency: 2, size: 1000 })).toMatchObject({ ok: 5, failed: 0 });
    expect(await client(node, 'echo', { host: '10.10.0.10', port: 80, count: 5, concurrency: 2, size: 1000 })).toMatchObject({ ok: 5, failed: 0 });
    await until(() => events.length >= n0 + 10, 2000);
    const s1 = p4.stats();
    expect(s1.relayed - s0.relayed).toBe(10);
    expect(s1.bytesUp - s0.bytesUp).toBe(10_000);
    expect(s1.bytesDown - s0.bytesDown).toBe(10_000);
    expect(await ruleCounter(node, 'EDGE-MESH-TCP', 'edgemesh tcp proxy')).toBe(ours0 + 10);
    expect(await ruleCounter(node, 'KUBE-SERVICES', 'default/web:http cluster IP')).toBe(kube0);
    const evs = eventsSince(n0).filter((e) => e.service === 'default/web:http');
    expect(evs).toHaveLength(10);
    expect(evs.every((e) => e.reason === 'eof' && e.originalDst === '10.10.0.10:80' && e.endpoint === '10.244.2.2:8080' && e.mode === 'splice')).toBe(true);
    expect(evs.filter((e) => e.client.startsWith('10.244.1.2:'))).toHaveLength(5); // the pod's own source address
  });

  it('leaves an ignored service (kube-dns) to kube-proxy: EDGE-MESH RETURNs it, the proxy sees nothing', async () => {
    const total0 = p4.stats().total;
    const ret0 = await ruleCounter(node, 'EDGE-MESH', 'ignore kube-system/kube-dns service');
    const kube0 = await ruleCounter(node, 'KUBE-SERVICES', 'kube-system/kube-dns:dns-tcp cluster IP');
    expect(await client(pod, 'echo', { host: '10.10.0.3', port: 53, count: 3, concurrency: 1, size: 200 })).toMatchObject({ ok: 3, failed: 0 });
    expect(await ruleCounter(node, 'EDGE-MESH', 'ignore kube-system/kube-dns service')).toBe(ret0 + 3);
    expect(await ruleCounter(node, 'KUBE-SERVICES', 'kube-system/kube-dns:dns-tcp cluster IP')).toBe(kube0 + 3);
    expect(p4.stats().total).toBe(total0);
  });

  it('moves 1 GiB intact through the splice path and through the copy path (same bytes, same hash)', async () => {
    const n0 = events.length;
    const viaSplice = await client<{ sentHash: string; serverHash: string; serverCount: number; replyOk: boolean }>(pod, 'bulk', { host: '10.10.0.10', port: 90, bytes: GiB, reply: MiB }, 90_000);
    const viaCopy = await client<{ sentHash: string; serverHash: string; serverCount: number; replyOk: boolean }>(pod, 'bulk', { host: '10.10.0.20', port: 90, bytes: GiB, reply: MiB }, 90_000);
    for (const r of [viaSplice, viaCopy]) {
      expect(r.serverCount).toBe(GiB);
      expect(r.serverHash).toBe(r.sentHash);
      expect(r.replyOk).toBe(true);
    }
    expect(viaCopy.serverHash).toBe(viaSplice.serverHash);
    await until(() => events.length >= n0 + 2, 2000);
    const big = eventsSince(n0).filter((e) => e.bytesUp > GiB);
    expect(big.map((e) => [e.service, e.mode, e.reason])).toEqual([
      ['default/web:sink', 'splice', 'eof'],
      ['default/web-copy:sink', 'copy', 'eof'],
    ]);
    expect(p4.stats().pipes.spliceFallbacks).toBe(0);
  }, 200_000);

  it('half-close: the client shuts down its write side and still receives the full reply', async () => {
    const n0 = events.length;
    const r = await client<{ serverCount: number; serverHash: string; sentHash: string; replyBytes: number; replyOk: boolean }>(pod, 'bulk', { host: '10.10.0.10', port: 90, bytes: MiB, reply: 32 * MiB });
    expect(r.serverCount).toBe(MiB);
    expect(r.serverHash).toBe(r.sentHash);
    expect(r.replyOk).toBe(true);
    await until(() => events.length > n0, 2000);
    const e = eventsSince(n0).find((x) => x.service === 'default/web:sink')!;
    expect(e.reason).toBe('eof');
    expect(e.bytesDown).toBeGreaterThan(32 * MiB);
  });

  it('relays a server-first protocol: the endpoint speaks before the client sends anything', async () => {
    const n0 = events.length;
    expect(await client(pod, 'banner', { host: '10.10.0.10', port: 70, count: 30 })).toMatchObject({ ok: 30, failed: 0 });
    expect(await until(() => eventsSince(n0).filter((e) => e.service === 'default/web:banner').length === 30, 3000)).toBe(true);
  });

  it('fails over when one of two endpoints refuses: every connection succeeds, failovers counted', async () => {
    const s0 = p4.stats();
    const n0 = events.length;
    expect(await client(pod, 'echo', { host: '10.10.0.11', port: 80, count: 20, concurrency: 1, size: 100 })).toMatchObject({ ok: 20, failed: 0 });
    const flaky = () => eventsSince(n0).filter((e) => e.service === 'default/flaky');
    await until(() => flaky().length >= 20, 2000);
    const s1 = p4.stats();
    // Round-robin starts half of them on the refusing endpoint.
    expect(s1.failovers - s0.failovers).toBe(10);
    const evs = flaky();
    expect(evs).toHaveLength(20);
    expect(evs.filter((e) => e.failovers === 1)).toHaveLength(10);
    expect(evs.every((e) => e.endpoint === '10.244.2.2:8080' && e.reason === 'eof')).toBe(true);
  });

  it('counts every failed endpoint attempt natively: 100 connections, one of two endpoints refuses, connectFailures equals the refusals that endpoint sent (and the failovers)', async () => {
    // The refusals seen, counted where they come from: the RSTs the refusing endpoint's kernel sends.
    const rule = ['OUTPUT', '-p', 'tcp', '-s', '10.244.2.3', '--sport', '8080', '--tcp-flags', 'RST', 'RST', '-m', 'comment', '--comment', 'refusals seen'];
    await be.run('iptables-legacy', ['-w', '-t', 'filter', '-A', ...rule]);
    const rsts = async () => {
      const out = (await be.run('iptables-legacy', ['-w', '-t', 'filter', '-nvxL', 'OUTPUT'])).stdout;
      return Number(out.split('\n').find((l) => l.includes('refusals seen'))!.trim().split(/\s+/)[0]);
    };
    try {
      const r0 = await rsts();
      const s0 = p4.stats();
      const n0 = events.length;
      expect(await client(pod, 'echo', { host: '10.10.0.11', port: 80, count: 100, concurrency: 4, size: 100 })).toMatchObject({ ok: 100, failed: 0 });
      await until(() => eventsSince(n0).filter((e) => e.service === 'default/flaky').length >= 100, 5000);
      const s1 = p4.stats();
      const refusals = (await rsts()) - r0;
      expect(refusals).toBeGreaterThan(0);
      expect(s1.connectFailures - s0.connectFailures).toBe(refusals);
      expect(s1.failovers - s0.failovers).toBe(refusals); // each refusal moved on to the live endpoint
    } finally {
      await be.run('iptables-legacy', ['-w', '-t', 'filter', '-D', ...rule]);
    }
  });

  it('spreads connections over the endpoints round-robin, and keeps a client on one endpoint with ClientIP affinity', async () => {
    const n0 = events.length;
    expect(await client(pod, 'echo', { host: '10.10.0.12', port: 80, count: 10, concurrency: 1, size: 100 })).toMatchObject({ ok: 10 });
    expect(await client(pod, 'echo', { host: '10.10.0.13', port: 80, count: 10, concurrency: 1, size: 100 })).toMatchObject({ ok: 10 });
    await until(() => events.length >= n0 + 20, 2000);
    const used = (svc: string) => {
      const count = new Map<string, number>();
      for (const e of eventsSince(n0).filter((x) => x.service === svc)) count.set(e.endpoint, (count.get(e.endpoint) ?? 0) + 1);
      return Object.fromEntries(count);
    };
    expect(used('default/spread')).toEqual({ '10.244.2.2:8081': 5, '10.244.2.3:8081': 5 });
    expect(Object.values(used('default/sticky'))).toEqual([10]);
  });

  it('with selection "random", picks endpoints at random (both used, not in strict alternation)', async () => {
    const n0 = events.length;
    expect(await client(pod, 'echo', { host: '10.10.0.12', port: 81, count: 40, concurrency: 1, size: 100 })).toMatchObject({ ok: 40 });
    const mine = () => eventsSince(n0).filter((e) => e.service === 'default/spread:random');
    await until(() => mine().length >= 40, 2000);
    const seq = mine().map((e) => e.endpoint);
    expect(new Set(seq).size).toBe(2);
    // Round-robin would alternate perfectly; 40 random picks do that with probability 2^-39.
    expect(seq.some((e, i) => i > 0 && e === seq[i - 1])).toBe(true);
  });

  it('fails over after the connect timeout (1 s) when an endpoint swallows SYNs', async () => {
    const s0 = p4.stats();
    const n0 = events.length;
    expect(await client(pod, 'echo', { host: '10.10.0.14', port: 80, count: 4, concurrency: 1, size: 100 })).toMatchObject({ ok: 4, failed: 0 });
    const mine = () => eventsSince(n0).filter((e) => e.service === 'default/slow');
    await until(() => mine().length >= 4, 2000);
    expect(p4.stats().failovers - s0.failovers).toBe(2);
    const slow = mine().filter((e) => e.failovers === 1);
    expect(slow).toHaveLength(2);
    for (const e of slow) {
      expect(e.endpoint).toBe('10.244.2.2:8081');
      expect(e.durationMs).toBeGreaterThanOrEqual(950);
      expect(e.durationMs).toBeLessThan(3000);
    }
  });

  it('resets the client promptly when every endpoint refuses, reporting connect-failed with ECONNREFUSED', async () => {
    const s0 = p4.stats();
    const n0 = events.length;
    const r = await client<{ how: string; code?: string; ms: number; data: number }>(pod, 'probe', { host: '10.10.0.15', port: 80 });
    expect(r).toMatchObject({ how: 'error', code: 'ECONNRESET', data: 0 });
    expect(r.ms).toBeLessThan(500);
    await until(() => events.length > n0, 2000);
    expect(eventsSince(n0).filter((e) => e.service === 'default/dead')).toEqual([expect.objectContaining({ service: 'default/dead', reason: 'connect-failed', code: 'ECONNREFUSED', syscall: 'connect', failovers: 1 })]);
    expect(p4.stats().ended.connectFailed - s0.ended.connectFailed).toBe(1);
  });

  it('serves 1 000 concurrent connections, and the fd count returns to its baseline afterwards', async () => {
    await until(() => p4.stats().active === 0, 2000);
    // Pooled pipes from earlier tests close after pipeIdleMs (2 s): start from a quiet proxy.
    await new Promise((r) => setTimeout(r, 2500));
    const base = fdCount();
    const s0 = p4.stats();
    const r = await client<{ ok: number; failed: number; simultaneous: number }>(pod, 'echo', { host: '10.10.0.10', port: 80, count: 1000, hold: true, size: 100 });
    expect(r).toMatchObject({ ok: 1000, failed: 0, simultaneous: 1000 });
    expect(p4.stats().relayed - s0.relayed).toBe(1000);
    expect(await until(() => p4.stats().active === 0, 5000)).toBe(true);
    expect(await until(() => fdCount() <= base, 6000), `fds ${fdCount()} vs baseline ${base}`).toBe(true);
    expect(p4.stats().pipes.reused).toBeGreaterThan(0);
  }, 60_000);

  it('closes and counts a direct connection to the proxy port and one to an unknown ClusterIP port', async () => {
    const s0 = p4.stats();
    const direct = await client<{ data: number; how: string; ms: number }>(pod, 'probe', { host: '169.254.96.16', port: 40001 });
    const directNode = await client<{ data: number; how: string }>(node, 'probe', { host: '169.254.96.16', port: 40001 });
    const unknown = await client<{ data: number; how: string; ms: number }>(pod, 'probe', { host: '10.10.0.10', port: 81 });
    for (const r of [direct, directNode, unknown]) {
      expect(r.data).toBe(0);
      expect(r.how).not.toBe('timeout');
    }
    const s1 = p4.stats();
    expect(s1.refused.loop - s0.refused.loop).toBe(2);
    expect(s1.refused.noRoute - s0.refused.noRoute).toBe(1);
    expect(s1.relayed).toBe(s0.relayed);
  });

  it('refuses and counts connections over maxConnections while serving the ones within it', async () => {
    const r = await client<{ ok: number; failed: number; errors: string[] }>(pod, 'echo', { host: '10.10.0.30', port: 80, count: 6, hold: true, size: 100 });
    expect(r).toMatchObject({ ok: 3, failed: 3 });
    expect(pLimited.stats()).toMatchObject({ relayed: 3, refused: { overLimit: 3 } });
  });

  it('cancels one live connection by id from JS: the client is reset, the event says cancelled', async () => {
    const n0 = events.length;
    const held = client<{ how: string; code?: string }>(pod, 'probe', { host: '10.10.0.10', port: 90 });
    // Listed once its first byte (the probe's "x") has been relayed to the endpoint.
    expect(await until(() => p4.connections()[0]?.bytesUp === 1, 3000)).toBe(true);
    const [c] = p4.connections();
    expect(c).toMatchObject({ service: 'default/web:sink', originalDst: '10.10.0.10:90', state: 'relaying', bytesUp: 1 });
    p4.cancel(c!.id);
    expect(await held).toMatchObject({ how: 'error', code: 'ECONNRESET' });
    await until(() => eventsSince(n0).some((e) => e.id === c!.id), 2000);
    expect(eventsSince(n0).filter((e) => e.id === c!.id)).toEqual([expect.objectContaining({ reason: 'cancelled', bytesUp: 1 })]);
    expect(p4.connections()).toEqual([]);
  });

  it('spreads live connections over both worker threads, whichever one accept() woke (handing off to the less loaded)', async () => {
    const n0 = events.length;
    const held = Array.from({ length: 6 }, () => client<{ how: string; code?: string }>(pod, 'probe', { host: '10.10.0.10', port: 90 }));
    expect(await until(() => p4.connections().filter((c) => c.bytesUp === 1).length === 6, 10_000)).toBe(true);
    const perWorker = [0, 0];
    for (const c of p4.connections()) perWorker[c.worker]!++;
    expect(perWorker[0]! + perWorker[1]!).toBe(6);
    expect(Math.abs(perWorker[0]! - perWorker[1]!)).toBeLessThanOrEqual(2);
    for (const c of p4.connections()) p4.cancel(c.id);
    for (const r of await Promise.all(held)) expect(r).toMatchObject({ how: 'error', code: 'ECONNRESET' });
    await until(() => eventsSince(n0).filter((e) => e.reason === 'cancelled').length === 6, 2000);
    expect(p4.connections()).toEqual([]);
  });

  it('proxies an IPv6 service end to end (ip6tables DNAT, IP6T_SO_ORIGINAL_DST, IPv6 endpoint)', async () => {
    const s0 = p6.stats();
    const n0 = events.length;
    expect(await client(pod, 'echo', { host: 'fd00:10:96::10', port: 80, count: 5, concurrency: 2, size: 1000 })).toMatchObject({ ok: 5, failed: 0 });
    const bulk = await client<{ serverHash: string; sentHash: string; serverCount: number; replyOk: boolean }>(pod, 'bulk', { host: 'fd00:10:96::10', port: 90, bytes: 64 * MiB, reply: MiB });
    expect(bulk.serverCount).toBe(64 * MiB);
    expect(bulk.serverHash).toBe(bulk.sentHash);
    expect(bulk.replyOk).toBe(true);
    expect(p6.stats().relayed - s0.relayed).toBe(6);
    await until(() => events.length >= n0 + 6, 2000);
    const evs = eventsSince(n0);
    expect(evs.every((e) => e.originalDst.startsWith('[fd00:10:96::10]:') && e.endpoint.startsWith('[fd00:244:2::2]:') && e.client.startsWith('[fd00:244:1::2]:'))).toBe(true);
  });

  it('ends a connection idle past idleTimeoutMs with a reset, reported as idle-timeout', async () => {
    const n0 = events.length;
    // probe sends one byte to the sink (no answer before EOF) and waits up to 3 s.
    const r = await client<{ how: string; code?: string; ms: number }>(pod, 'probe', { host: '10.10.0.20', port: 90 });
    expect(r).toMatchObject({ how: 'error', code: 'ECONNRESET' });
    expect(r.ms).toBeGreaterThanOrEqual(1400);
    await until(() => events.length > n0, 2000);
    expect(eventsSince(n0).find((e) => e.service === 'default/web-copy:sink')).toMatchObject({ reason: 'idle-timeout', bytesUp: 1 });
  });

  it('close() stops accepting, then cancels what outlives the grace period (event: cancelled) and leaves no connection', async () => {
    const n0 = events.length;
    const cancelled0 = p4.stats().ended.cancelled;
    const probe = spawn('ip', ['netns', 'exec', pod.name, 'node', join(drivers, 'client.mjs'), 'probe', JSON.stringify({ host: '10.10.0.10', port: 90 })], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    probe.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise((r) => probe.on('exit', r));
    try {
      expect(await until(() => p4.connections()[0]?.bytesUp === 1, 5000)).toBe(true);
      await p4.close(200);
      await exited;
    } finally {
      if (probe.exitCode === null && probe.pid) process.kill(probe.pid, 'SIGKILL');
    }
    expect(JSON.parse(out.trim())).toMatchObject({ how: 'error', code: 'ECONNRESET' });
    expect(eventsSince(n0).filter((e) => e.service === 'default/web:sink').map((e) => e.reason)).toEqual(['cancelled']);
    expect(p4.stats()).toMatchObject({ active: 0 });
    expect(p4.stats().ended.cancelled).toBe(cancelled0 + 1);
    const refused = await client<{ how: string; code?: string }>(pod, 'probe', { host: '10.10.0.10', port: 80 });
    expect(refused).toMatchObject({ how: 'error', code: 'ECONNREFUSED' });
  });
});
