// No open relay, through the running agent (rules + proxy, `edgemesh-agent run`): a connection
// whose original destination is not a proxied service port is closed at once and counted, never
// relayed. Probes from a pod: straight at the proxy port; at a service whose endpoints point at
// the proxy itself; at a service whose endpoint is a loopback-only port of the node (the proxy
// runs in the node's namespace: that would be a pivot to node-local listeners); at an unknown port of a ClusterIP and at an unknown ClusterIP. A positive control
// (a real service) proves the proxy relays at all. Counts come from the agent's /metrics.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, expect, it } from 'vitest';
import { describeNetns, linkNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { ServicesDir, seedBasics, serviceYaml, sliceYaml } from '../helpers/manifests.js';
import { summary } from './common.js';

const drivers = join(dirname(fileURLToPath(import.meta.url)), '..', 'netns', 'drivers');

async function probe(ns: Netns, host: string, port: number): Promise<{ data: number; how: string; ms?: number; code?: string }> {
  const r = await ns.run('node', [join(drivers, 'client.mjs'), 'probe', JSON.stringify({ host, port, timeoutMs: 8000 })], { timeoutMs: 10_000, allowFail: true });
  return JSON.parse(r.stdout.trim().split('\n').pop() || '{}') as { data: number; how: string; ms?: number; code?: string };
}

async function metrics(ns: Netns): Promise<Record<string, number>> {
  const text = (await ns.run('curl', ['-s', 'http://127.0.0.1:10251/metrics'])).stdout;
  const out: Record<string, number> = {};
  for (const l of text.split('\n')) {
    const m = /^(edgemesh_proxy_[a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(l);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

describeNetns('stress: no open relay through the running agent', () => {
  let node: Netns | undefined;
  let pod: Netns | undefined;
  let agent: AgentProcess | undefined;
  let dir: ServicesDir | undefined;
  afterEach(async () => {
    if (agent) await agent.stop('SIGKILL');
    await node?.destroy();
    await pod?.destroy();
    dir?.destroy();
    agent = node = pod = dir = undefined;
  });
  afterAll(destroyAllNetns);

  it('closes and counts every connection that is not to a proxied service port; relays the one that is', { timeout: 120_000 }, async () => {
    [node, pod] = await Promise.all([Netns.create('relaynode'), Netns.create('relaypod')]);
    await linkNetns(node, '10.244.1.1/24', pod, '10.244.1.2/24');
    await pod.sh('ip route add default via 10.244.1.1');
    // A pod serving the real service, and node-local listeners a relay must never reach.
    const servers = pod.spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'node', join(drivers, 'servers.mjs'), JSON.stringify([{ kind: 'echo', host: '10.244.1.2', port: 8080 }])]);
    const nodeServers = node.spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'node', join(drivers, 'servers.mjs'), JSON.stringify([{ kind: 'banner', host: '127.0.0.1', port: 2222 }])]);
    for (const s of [servers, nodeServers]) {
      await new Promise<void>((res, rej) => {
        let out = '';
        s.stdout!.on('data', (d: Buffer) => ((out += d.toString()).includes('ready') ? res() : undefined));
        s.on('exit', (c) => rej(new Error(`servers exited ${c}`)));
      });
    }
    dir = new ServicesDir();
    seedBasics(dir);
    const svc = (name: string, ip: string, epIp: string, epPort: number) =>
      serviceYaml({ namespace: 'default', name, clusterIP: ip, ports: [{ name: 'p', port: 80, targetPort: epPort }] }) + '---\n' + sliceYaml('default', name, [epIp], epPort, { portName: 'p' });
    dir.write('real.yaml', svc('real', '10.10.0.30', '10.244.1.2', 8080));
    dir.write('to-proxy.yaml', svc('to-proxy', '10.10.0.31', '169.254.96.16', 40001));
    dir.write('to-loopback.yaml', svc('to-loopback', '10.10.0.32', '127.0.0.1', 2222));
    agent = startAgent(node, ['run', '--backend', 'iptables-legacy', '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path]);
    await agent.waitFor((l) => /^sync \(/.test(String(l.msg)), 20_000, 'first sync');
    await agent.waitFor((l) => /proxy listening/.test(String(l.msg)), 20_000, 'proxy');

    // Positive control: the real service is relayed.
    const ok = await probe(pod, '10.10.0.30', 80);
    expect(ok.how, JSON.stringify(ok)).not.toBe('error');
    const m0 = await metrics(node);

    const cases: [string, string, number][] = [
      ['direct to the proxy port', '169.254.96.16', 40001],
      ['service whose endpoint is the proxy itself', '10.10.0.31', 80],
      ['service whose endpoint is a node loopback port', '10.10.0.32', 80],
      ['unknown port of a ClusterIP', '10.10.0.30', 81],
      ['unknown ClusterIP', '10.10.0.99', 80],
    ];
    const results: Record<string, unknown> = {};
    for (const [what, host, port] of cases) {
      const r = await probe(pod, host, port);
      results[what] = r;
      expect(r.data, `${what}: ${JSON.stringify(r)}`).toBe(0); // nothing came back: no banner from a node port, nothing relayed
      expect(r.how, `${what}: ${JSON.stringify(r)}`).not.toBe('timeout'); // closed at once, not left hanging
    }
    const m1 = await eventually(() => metrics(node!), (m) => sum(m, 'edgemesh_proxy_connections_refused_total') - sum(m0, 'edgemesh_proxy_connections_refused_total') >= cases.length, 5_000, 'refusals counted');
    const refused = sum(m1.value, 'edgemesh_proxy_connections_refused_total') - sum(m0, 'edgemesh_proxy_connections_refused_total');
    const relayed = (m1.value['edgemesh_proxy_connections_relayed_total'] ?? 0) - (m0['edgemesh_proxy_connections_relayed_total'] ?? 0);
    expect(refused, JSON.stringify(m1.value)).toBe(cases.length);
    expect(relayed, JSON.stringify(m1.value)).toBe(0);
    summary('no-open-relay', { probes: cases.length, refusedCounted: refused, relayed, byReason: JSON.stringify(Object.fromEntries(Object.entries(m1.value).filter(([k]) => k.startsWith('edgemesh_proxy_connections_refused_total')).map(([k, v]) => [/reason="([^"]+)"/.exec(k)?.[1], v - (m0[k] ?? 0)]))) });
  });
});

function sum(m: Record<string, number>, name: string): number {
  return Object.entries(m).filter(([k]) => k === name || k.startsWith(`${name}{`)).reduce((a, [, v]) => a + v, 0);
}
