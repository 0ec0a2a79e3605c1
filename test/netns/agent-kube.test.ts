// The real agent on an edge node: no source flag and no in-cluster service variables, so it asks
// KubeEdge's MetaServer on 127.0.0.1:10550 (here the in-test API server, inside the node's
// namespace). That server lacks the EndpointSlice API (404): the agent follows v1 Endpoints, for
// its rules (RETURNs for an ignored headless service's endpoints) and for its proxy (a real
// connection through EDGE-MESH and the proxy to an endpoint in another namespace). An Endpoints
// change, a 410 on the Endpoints watch and a cut watch connection are each followed.
import type { ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeNetns, destroyAllNetns, linkNetns, Netns } from '../helpers/netns.js';
import { eventually, startAgent, type AgentProcess } from '../helpers/agent.js';

const drivers = join(dirname(fileURLToPath(import.meta.url)), 'drivers');

const endpoints = (name: string, ready: string[], notReady: string[] = []) => ({
  metadata: { name, namespace: 'shop' },
  subsets: [{ addresses: ready.map((ip) => ({ ip })), notReadyAddresses: notReady.map((ip) => ({ ip })), ports: [{ name: 'http', port: 8080 }] }],
});

describeNetns('agent on an edge node: MetaServer by default, v1 Endpoints where EndpointSlices are not served', () => {
  let node: Netns;
  let be: Netns;
  let api: ChildProcess;
  let agent: AgentProcess;
  let apiOut = '';
  let metricsPort = 0;
  const metrics = async () => (await node.run(process.execPath, ['-e', `fetch('http://127.0.0.1:${metricsPort}/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))`])).stdout;

  const send = (c: Record<string, unknown>) => api.stdin!.write(JSON.stringify(c) + '\n');
  const client = async (mode: string, o: Record<string, unknown>) =>
    JSON.parse((await node.run(process.execPath, [join(drivers, 'client.mjs'), mode, JSON.stringify(o)])).stdout.trim()) as Record<string, unknown>;
  const nat = async () => (await node.sh('iptables-legacy-save -t nat')).stdout;

  beforeAll(async () => {
    node = await Netns.create('kedge');
    be = await Netns.create('kbe');
    const { bIf } = await linkNetns(node, '10.244.1.1/24', be, '10.244.1.10/24');
    await be.run('ip', ['addr', 'add', '10.244.1.11/24', 'dev', bIf]);
    await be.run('ip', ['route', 'add', 'default', 'via', '10.244.1.1']);
    // A local connection to a ClusterIP needs a route before nat OUTPUT can DNAT it.
    await node.run('ip', ['route', 'add', 'default', 'via', '10.244.1.10']);
    const servers = be.spawn(process.execPath, [join(drivers, 'servers.mjs'), JSON.stringify([
      { kind: 'echo', host: '10.244.1.10', port: 8080 },
      { kind: 'banner', host: '10.244.1.11', port: 8080 },
    ])]);
    await new Promise<void>((resolve, reject) => {
      servers.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      servers.on('exit', (c) => reject(new Error(`servers exited ${c}`)));
    });

    api = node.spawn(process.execPath, [join(drivers, 'fake-apiserver.mjs'), JSON.stringify({
      host: '127.0.0.1',
      port: 10550,
      disabled: ['endpointslices'],
      objects: {
        services: [
          { metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.10.0.20', ports: [{ name: 'http', port: 80, targetPort: 'http' }] } },
          { metadata: { name: 'db', namespace: 'shop', labels: { noproxy: 'edgemesh' } }, spec: { clusterIP: 'None', ports: [{ port: 5432 }] } },
        ],
        endpoints: [endpoints('web', ['10.244.1.10']), endpoints('db', ['10.244.1.50'], ['10.244.1.51'])],
      },
    })], { stdio: ['pipe', 'pipe', 'pipe'] });
    await new Promise<void>((resolve, reject) => {
      api.stdout!.on('data', (d: Buffer) => {
        apiOut += d.toString();
        if (apiOut.includes('ready http://127.0.0.1:10550')) resolve();
      });
      api.on('exit', (c) => reject(new Error(`fake API server exited ${c}`)));
    });

    // No source flag; the variables of a pod are absent (empty), as on an edge node.
    agent = startAgent(node, ['run', '--backend', 'iptables-legacy', '--service-cidr', '10.10.0.0/16', '--metrics-addr', '127.0.0.1:0', '--node-name', 'edge-1', '--log-level', 'debug'], {
      KUBERNETES_SERVICE_HOST: '',
      KUBERNETES_SERVICE_PORT: '',
    });
    const line = await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics and health on'), 20_000, 'metrics line');
    metricsPort = Number(line.port);
    await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('sync ('), 20_000, 'first sync');
  }, 60_000);

  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await destroyAllNetns();
  });

  it('with no source flag and no service variables, uses the MetaServer at http://127.0.0.1:10550 and says why', async () => {
    const line = await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('source: '), 1000, 'source line');
    expect(line.msg).toBe('source: http://127.0.0.1:10550 (no source flag and no in-cluster service variables (an edge node): KubeEdge MetaServer)');
    expect(line.level === 30 || line.level === 'info').toBe(true);
  });

  it('the EndpointSlice list answers 404: v1 Endpoints are used and logged', async () => {
    await agent.waitFor((l) => l.msg === 'endpoints: the EndpointSlice API answered 404 (/apis/discovery.k8s.io/v1/endpointslices); using v1 Endpoints (/api/v1/endpoints) instead', 1000, 'fallback line');
    await agent.waitFor((l) => l.msg === 'endpoints: from v1 Endpoints (/api/v1/endpoints)', 1000, 'endpoints API line');
  });

  it('the ignored headless service gets a RETURN per Endpoints address (ready and not ready)', async () => {
    const rules = await nat();
    expect(rules).toContain('-A EDGE-MESH -d 10.244.1.50/32 -m comment --comment "ignore shop/db service" -j RETURN');
    expect(rules).toContain('-A EDGE-MESH -d 10.244.1.51/32 -m comment --comment "ignore shop/db service" -j RETURN');
  });

  it('the proxy reaches the endpoint the Endpoints object names, and follows a change to it', async () => {
    expect(await client('echo', { host: '10.10.0.20', port: 80, count: 3 })).toMatchObject({ ok: 3, failed: 0 });
    // The endpoint moves to the banner server: the proxy's endpoints come from the watch event.
    send({ op: 'set', resource: 'endpoints', object: endpoints('web', ['10.244.1.11']) });
    await eventually(() => client('banner', { host: '10.10.0.20', port: 80, count: 1, timeoutMs: 3000 }).catch(() => ({})), (r) => (r as { ok?: number }).ok === 1, 10_000, 'banner through the proxy');
  });

  it('a 410 on the Endpoints watch and a cut watch connection are each followed by a relist that converges', async () => {
    send({ op: 'expire', resource: 'endpoints' });
    await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('endpoints: watch from resourceVersion') && l.msg.includes('gone (410)'), 5000, '410 relist');
    send({ op: 'set', resource: 'endpoints', object: endpoints('web', ['10.244.1.10']) });
    await eventually(() => client('echo', { host: '10.10.0.20', port: 80, count: 1, timeoutMs: 3000 }).catch(() => ({})), (r) => (r as { ok?: number }).ok === 1, 10_000, 'echo after the 410');
    send({ op: 'drop' });
    await agent.waitFor((l) => typeof l.msg === 'string' && /^kubernetes endpoints: endpoints: watch \/api\/v1\/endpoints: .*relisting in \d+ ms$/.test(l.msg), 5000, 'watch error line');
    send({ op: 'set', resource: 'endpoints', object: endpoints('web', ['10.244.1.11']) });
    await eventually(() => client('banner', { host: '10.10.0.20', port: 80, count: 1, timeoutMs: 3000 }).catch(() => ({})), (r) => (r as { ok?: number }).ok === 1, 15_000, 'banner after the cut');
  });

  it('metrics: failed list/watch requests by resource and request, and the time of the last list per resource', async () => {
    const m = await metrics();
    const value = (re: RegExp) => Number(re.exec(m)?.[1] ?? 'NaN');
    // The cut connection above failed the open watches; the EndpointSlice 404 was no error (the fallback).
    expect(value(/^edgemesh_source_api_errors_total\{resource="endpoints",request="watch"\} (\d+)$/m)).toBeGreaterThanOrEqual(1);
    expect(m).not.toMatch(/edgemesh_source_api_errors_total\{resource="endpointslices"/);
    const now = Date.now() / 1000;
    for (const r of ['services', 'endpoints', 'nodes']) {
      const at = value(new RegExp(`^edgemesh_source_last_list_timestamp_seconds\\{resource="${r}"\\} (\\S+)$`, 'm'));
      expect(now - at, r).toBeGreaterThanOrEqual(0);
      expect(now - at, r).toBeLessThan(60);
    }
  });
});
