// The agent end to end with traffic, over each backend: pod -> node (agent + kube-proxy rules)
// -> backends. Proxied services go through our proxy (its counters rise, kube-proxy's path is
// not taken), ignored ones through kube-proxy's DNAT (our proxy sees nothing), IPv6 too; the
// metrics move; SIGTERM lets a live connection finish before the rules and interface go.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeNetns, Netns, linkNetns, destroyAllNetns } from '../helpers/netns.js';
import { readFixture, IPTABLES_RESTORE_FIXTURE, IPTABLES_JUMPS_FIXTURE } from '../helpers/fixtures.js';
import { startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { ServicesDir, serviceYaml, sliceYaml } from '../helpers/manifests.js';
import { kubeProxyNft, kubeProxyRestore, type KubeProxyService } from '../../src/testing/kube-proxy-rules.js';
import { loadKubeProxyNftables } from '../helpers/nft-fixture.js';

const drivers = join(dirname(fileURLToPath(import.meta.url)), 'drivers');

type Backend = 'iptables-legacy' | 'iptables-nft' | 'nftables';

interface Flavour {
  /** --backend given to the agent. */
  agent: Backend | 'auto';
  /** kube-proxy's mode on the node. */
  kubeProxy: 'legacy' | 'nft' | 'nftables';
  /** The backend the agent must end up with. */
  expect: Backend;
}

const FLAVOURS: Flavour[] = [
  { agent: 'iptables-legacy', kubeProxy: 'legacy', expect: 'iptables-legacy' },
  { agent: 'iptables-nft', kubeProxy: 'nft', expect: 'iptables-nft' },
  { agent: 'nftables', kubeProxy: 'nft', expect: 'nftables' },
  // auto, on each kube-proxy flavour
  { agent: 'auto', kubeProxy: 'legacy', expect: 'iptables-legacy' },
  { agent: 'auto', kubeProxy: 'nft', expect: 'iptables-nft' },
  { agent: 'auto', kubeProxy: 'nftables', expect: 'nftables' },
];

/** kube-proxy's services on the node: the ignored coredns, and web (never used while we proxy it). */
const KUBE_PROXY_SERVICES: KubeProxyService[] = [
  { namespace: 'kube-system', name: 'coredns', portName: 'dns-tcp', clusterIP: '10.10.0.3', port: 53, endpoints: [{ ip: '10.244.1.10', port: 5353 }] },
  { namespace: 'shop', name: 'web', clusterIP: '10.10.0.20', port: 80, endpoints: [{ ip: '10.244.1.10', port: 5353 }] },
];

/** A conversation: `n` messages 200 ms apart, each echoed; prints how many came back. */
const TALK = `
const net = require('node:net');
const [host, port, n] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
let got = '', sent = 0;
s.on('connect', () => { const t = setInterval(() => { if (sent === Number(n)) { clearInterval(t); setTimeout(() => s.end(), 300); return; } s.write('m' + (sent++) + '\\n'); }, 200); });
s.on('data', (d) => (got += d));
s.on('close', () => { process.stdout.write(JSON.stringify({ echoed: got.split('\\n').filter(Boolean).length })); });
s.on('error', (e) => { process.stdout.write(JSON.stringify({ error: e.code })); process.exit(1); });
`;

/** Prints the edgemesh_* samples of /metrics as JSON {name{labels}: value}. */
const METRICS = `
fetch('http://127.0.0.1:' + process.argv[1] + '/metrics').then((r) => r.text()).then((t) => {
  const out = {};
  for (const l of t.split('\\n')) { const m = /^(edgemesh_[^ ]+) (\\S+)$/.exec(l); if (m) out[m[1]] = Number(m[2]); }
  process.stdout.write(JSON.stringify(out));
});
`;

for (const f of FLAVOURS) {
  const backend = f.expect;
  describeNetns(`agent traffic with --backend ${f.agent} beside kube-proxy in ${f.kubeProxy === 'nftables' ? 'nftables' : `iptables (${f.kubeProxy})`} mode`, () => {
    let node: Netns;
    let pod: Netns;
    let be: Netns;
    let dir: ServicesDir;
    let agent: AgentProcess;
    let metricsPort = 0;

    const client = async (from: Netns, mode: string, o: Record<string, unknown>) => JSON.parse((await from.run(process.execPath, [join(drivers, 'client.mjs'), mode, JSON.stringify(o)])).stdout.trim()) as Record<string, unknown>;
    const metrics = async () => JSON.parse((await node.run(process.execPath, ['-e', METRICS, String(metricsPort)])).stdout) as Record<string, number>;

    beforeAll(async () => {
      node = await Netns.create('tnode');
      pod = await Netns.create('tpod');
      be = await Netns.create('tbe');
      await linkNetns(node, '10.244.0.1/24', pod, '10.244.0.2/24', { a6: 'fd00:244::1/64', b6: 'fd00:244::2/64' });
      const { bIf } = await linkNetns(node, '10.244.1.1/24', be, '10.244.1.10/24', { a6: 'fd00:244:1::1/64', b6: 'fd00:244:1::10/64' });
      await be.run('ip', ['addr', 'add', '10.244.1.11/24', 'dev', bIf]);
      for (const ns of [pod, be]) {
        await ns.run('ip', ['route', 'add', 'default', 'via', ns === pod ? '10.244.0.1' : '10.244.1.1']);
        await ns.run('ip', ['-6', 'route', 'add', 'default', 'via', ns === pod ? 'fd00:244::1' : 'fd00:244:1::1']);
      }
      await node.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
      // As on a real node, a default route: a local connection to a ClusterIP needs a route
      // before nat OUTPUT can DNAT it.
      await node.run('ip', ['route', 'add', 'default', 'via', '10.244.1.10']);
      await node.run('ip', ['-6', 'route', 'add', 'default', 'via', 'fd00:244:1::10']);
      const servers = be.spawn(process.execPath, [join(drivers, 'servers.mjs'), JSON.stringify([
        { kind: 'echo', host: '10.244.1.10', port: 8080 },
        { kind: 'echo', host: '10.244.1.11', port: 8080 },
        { kind: 'banner', host: '10.244.1.10', port: 5353 },
        { kind: 'echo', host: 'fd00:244:1::10', port: 8080 },
      ])]);
      await new Promise<void>((resolve, reject) => {
        servers.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
        servers.on('exit', (c) => reject(new Error(`servers exited ${c}`)));
      });

      // kube-proxy: the real dump plus its rules for the ignored coredns (and for web, which
      // must never be used while we proxy it).
      if (f.kubeProxy === 'nftables') {
        await loadKubeProxyNftables(node);
        await node.run('nft', ['-f', '-'], { input: kubeProxyNft(KUBE_PROXY_SERVICES) });
      } else {
        const restore = `iptables-${f.kubeProxy}-restore`;
        await node.sh('nfacct add ct_state_invalid_dropped_pkts; nfacct add localhost_nps_accepted_pkts', { allowFail: true });
        const strip = (t: string) => t.split('\n').filter((l) => !l.startsWith('#')).join('\n');
        await node.run(restore, ['--noflush', '-w'], { input: strip(readFixture(IPTABLES_RESTORE_FIXTURE)) });
        await node.run(restore, ['--noflush', '-w'], { input: kubeProxyRestore(KUBE_PROXY_SERVICES) });
        await node.run(restore, ['--noflush', '-w'], { input: strip(readFixture(IPTABLES_JUMPS_FIXTURE)) });
      }

      dir = new ServicesDir();
      dir.write('coredns.yaml', serviceYaml({ namespace: 'kube-system', name: 'coredns', clusterIP: '10.10.0.3', labels: { 'k8s-app': 'kube-dns' }, ports: [{ name: 'dns-tcp', port: 53 }] }));
      dir.write('web.yaml', serviceYaml({ namespace: 'shop', name: 'web', clusterIP: '10.10.0.20', ports: [{ name: 'http', port: 80, targetPort: 'http' }] }) + '---\n' + sliceYaml('shop', 'web', ['10.244.1.10', '10.244.1.11'], 8080, { portName: 'http' }));
      dir.write('web6.yaml', serviceYaml({ namespace: 'shop', name: 'web6', clusterIP: 'fd00:10::20', ports: [{ port: 80, targetPort: 8080 }] }) + '---\n' + sliceYaml('shop', 'web6', ['fd00:244:1::10'], 8080, { addressType: 'IPv6' }));
      agent = startAgent(node, [
        'run', '--backend', f.agent,
        '--service-cidr', '10.10.0.0/16', '--service-cidr', 'fd00:10::/112',
        '--proxy-addr', '169.254.96.16:40001', '--proxy-addr', '[fd00::96:16]:40001',
        '--services-dir', dir.path, '--metrics-addr', '127.0.0.1:0', '--drain-grace', '10s',
      ]);
      const line = await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics and health on'), 15_000, 'metrics line');
      metricsPort = Number(line.port);
      await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('sync ('), 15_000, 'first sync');
      const started = await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('agent started'), 1_000, 'start line');
      expect(started.backend).toBe(f.expect);
    });

    afterAll(async () => {
      await agent?.stop('SIGKILL');
      await destroyAllNetns();
      dir?.destroy();
    });

    it('a proxied service is reached through our proxy from a pod (PREROUTING) and from the node (OUTPUT), round-robin over its endpoints', async () => {
      const before = await metrics();
      const fromPod = await client(pod, 'echo', { host: '10.10.0.20', port: 80, count: 10, concurrency: 2 });
      expect(fromPod).toMatchObject({ ok: 10, failed: 0 });
      const fromNode = await client(node, 'echo', { host: '10.10.0.20', port: 80, count: 4 });
      expect(fromNode).toMatchObject({ ok: 4, failed: 0 });
      const after = await metrics();
      expect(after.edgemesh_proxy_connections_relayed_total! - before.edgemesh_proxy_connections_relayed_total!).toBe(14);
      expect(after['edgemesh_proxy_bytes_total{direction="up"}']! - before['edgemesh_proxy_bytes_total{direction="up"}']!).toBe(1400);
      expect(after['edgemesh_proxy_bytes_total{direction="down"}']! - before['edgemesh_proxy_bytes_total{direction="down"}']!).toBe(1400);
    });

    it('an ignored service (kube-dns) goes through kube-proxy: the answer comes from its endpoint and our proxy sees nothing', async () => {
      const before = await metrics();
      expect(await client(pod, 'banner', { host: '10.10.0.3', port: 53, count: 3 })).toMatchObject({ ok: 3, failed: 0 });
      const after = await metrics();
      expect(after.edgemesh_proxy_connections_total).toBe(before.edgemesh_proxy_connections_total);
    });

    it('an IPv6 proxied service works end to end through the IPv6 proxy address', async () => {
      const before = await metrics();
      expect(await client(pod, 'echo', { host: 'fd00:10::20', port: 80, count: 5 })).toMatchObject({ ok: 5, failed: 0 });
      expect((await metrics()).edgemesh_proxy_connections_relayed_total! - before.edgemesh_proxy_connections_relayed_total!).toBe(5);
    });

    it('an unknown ClusterIP port and a direct connection to the proxy are closed at once and counted', async () => {
      const before = await metrics();
      const unknown = await client(pod, 'probe', { host: '10.10.0.99', port: 80 });
      expect(unknown.data).toBe(0);
      expect(unknown.how).not.toBe('timeout');
      const direct = await client(node, 'probe', { host: '169.254.96.16', port: 40001 });
      expect(direct.data).toBe(0);
      const after = await metrics();
      const refused = (m: Record<string, number>) => Object.entries(m).filter(([k]) => k.startsWith('edgemesh_proxy_connections_refused_total')).reduce((n, [, v]) => n + v, 0);
      expect(refused(after) - refused(before)).toBe(2);
    });

    it('exports every documented metric after a sync', async () => {
      const m = await metrics();
      for (const name of [
        'edgemesh_sync_duration_seconds_count{reason="initial"}',
        'edgemesh_syncs_total{result="ok"}',
        'edgemesh_syncs_total{result="error"}',
        'edgemesh_rule_writes_total{family="ipv4"}',
        'edgemesh_rule_writes_total{family="ipv6"}',
        'edgemesh_order_repairs_total{family="ipv4"}',
        'edgemesh_last_sync_success_timestamp_seconds',
        'edgemesh_rules{family="ipv4",chain="EDGE-MESH"}',
        'edgemesh_services{state="ignored"}',
        'edgemesh_services{state="proxied"}',
        'edgemesh_proxy_connections_active',
        'edgemesh_proxy_connections_total',
        'edgemesh_proxy_connections_relayed_total',
        'edgemesh_proxy_failovers_total',
        'edgemesh_proxy_connect_failures_total',
        'edgemesh_proxy_accept_errors_total',
      ]) {
        expect(m, name).toHaveProperty([name]);
      }
      expect(m['edgemesh_rules{family="ipv4",chain="EDGE-MESH"}']).toBe(2); // coredns RETURN + the proxy rule
      expect(m['edgemesh_services{state="proxied"}']).toBe(2);
    });

    it('SIGTERM during a live connection: it finishes within the grace period, then the rules and edgemesh0 are gone', async () => {
      const talk = pod.run(process.execPath, ['-e', TALK, '10.10.0.20', '80', '10'], { timeoutMs: 20_000 });
      await eventually(metrics, (m) => m.edgemesh_proxy_connections_active === 1, 5_000, 'connection live');
      const sigAt = Date.now();
      const exited = agent.stop('SIGTERM', 20_000);
      const r = JSON.parse((await talk).stdout) as { echoed: number };
      const talkDone = Date.now();
      expect(r.echoed).toBe(10); // every message of the conversation came back through the draining proxy
      expect(await exited).toBe(0);
      expect(talkDone - sigAt).toBeGreaterThan(500);
      await agent.waitFor((l) => /draining 1 live connections/.test(String(l.msg)), 1000, 'drain log');
      const tables = backend === 'nftables' ? (await node.sh('nft list ruleset')).stdout : (await node.sh(`iptables-${backend === 'iptables-legacy' ? 'legacy' : 'nft'}-save -t nat`)).stdout;
      expect(tables).not.toMatch(/EDGE-MESH|edgemesh/);
      expect((await node.run('ip', ['-o', 'link'])).stdout).not.toContain('edgemesh0');
    });
  });
}
