// What the agent tells operators, from the real CLI in a namespace: its JSON log lines (string
// levels, ISO-8601 time, node) or pino's own with --log-format pino; the two listeners (health
// on --healthz-addr, metrics and status on --metrics-addr); edgemesh_build_info; and the network
// programming latency of one change to the services directory.
import { afterAll, afterEach, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { describeNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { ServicesDir, seedBasics, serviceYaml } from '../helpers/manifests.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

describeNetns('agent observability: logs, listeners, build info, network programming latency', () => {
  let ns: Netns | undefined;
  let agent: AgentProcess | undefined;
  let dir: ServicesDir | undefined;
  afterEach(async () => {
    if (agent) await agent.stop('SIGKILL');
    await ns?.destroy();
    dir?.destroy();
    agent = ns = dir = undefined;
  });
  afterAll(destroyAllNetns);

  const get = async (url: string) => {
    const r = await ns!.run('curl', ['-s', '-m', '3', '-w', '\n%{http_code}', url], { allowFail: true });
    const i = r.stdout.lastIndexOf('\n');
    return { status: r.stdout.slice(i + 1), body: r.stdout.slice(0, i) };
  };
  /** The value of one sample line of /metrics (undefined: absent). */
  const sample = (text: string, name: string): number | undefined => {
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.slice(name.length + 1));
  };

  const start = async (extra: string[]) => {
    ns = await Netns.create('obs');
    dir = new ServicesDir();
    seedBasics(dir);
    agent = startAgent(ns, ['run', '--backend', 'nftables', '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path, '--metrics-addr', '127.0.0.1:0', '--healthz-addr', '127.0.0.1:0', '--node-name', 'edge-7', ...extra]);
    const m = await agent.waitFor((l) => /^metrics and health on/.test(String(l.msg)), 15_000, 'metrics listener');
    const h = await agent.waitFor((l) => /^health probes on/.test(String(l.msg)), 15_000, 'health listener');
    expect(h.port).not.toBe(m.port);
    return { metrics: `http://127.0.0.1:${String(m.port)}`, health: `http://127.0.0.1:${String(h.port)}` };
  };

  it('json logs carry a string level, an ISO-8601 time and the node; health and metrics listen apart; build_info names version and node', async () => {
    const { metrics, health } = await start([]);
    const first = agent!.logs[0]!;
    expect(first.level).toBe('info');
    expect(String(first.time)).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(first.node).toBe('edge-7');
    expect(first).not.toHaveProperty('pid');
    await eventually(async () => (await get(`${health}/readyz`)).status, (s) => s === '200', 15_000, 'ready');
    expect((await get(`${health}/healthz`)).status).toBe('200');
    // The health listener answers the probes only: no metrics, no tunnel detail.
    expect((await get(`${health}/metrics`)).status).toBe('404');
    expect((await get(`${health}/status`)).status).toBe('404');
    const m = await get(`${metrics}/metrics`);
    expect(m.status).toBe('200');
    expect(m.body).toContain(`edgemesh_build_info{version="${pkg.version}",node="edge-7"} 1`);
    expect((await get(`${metrics}/status`)).status).toBe('200');
    // As kube-proxy's metrics server, the metrics listener answers the probes' paths too.
    expect((await get(`${metrics}/healthz`)).status).toBe('200');
  });

  it('one change to the services directory is one network programming observation, no longer than from the write to the scrape; periodic resyncs add none', async () => {
    const { metrics } = await start(['--sync-period', '1s', '--min-sync-period', '0']);
    await eventually(async () => (await get(`${metrics}/readyz`)).status, (s) => s === '200', 15_000, 'ready');
    const before = (await get(`${metrics}/metrics`)).body;
    // The initial list is the start, not a change: nothing observed yet.
    expect(sample(before, 'edgemesh_network_programming_duration_seconds_count')).toBe(0);
    const t0 = Date.now();
    dir!.write('api.yaml', serviceYaml({ namespace: 'shop', name: 'api', clusterIP: '10.10.0.21', labels: { noproxy: 'edgemesh' } }));
    // The ignore rule for the new service is in the kernel: the sync that programs it is done.
    await eventually(async () => (await ns!.run('nft', ['list', 'ruleset'])).stdout, (s) => s.includes('ignore shop/api service'), 10_000, 'ignore rule for shop/api');
    const { value: after } = await eventually(
      async () => (await get(`${metrics}/metrics`)).body,
      (t) => sample(t, 'edgemesh_network_programming_duration_seconds_count') === 1,
      5_000,
      'one observation',
    );
    const elapsed = (Date.now() - t0) / 1000;
    const sum = sample(after, 'edgemesh_network_programming_duration_seconds_sum') as number;
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeLessThanOrEqual(elapsed);
    // kube-proxy's buckets: the observation is in the 0.25 s bucket or a later one, and in +Inf.
    expect(sample(after, 'edgemesh_network_programming_duration_seconds_bucket{le="+Inf"}')).toBe(1);
    expect(after).toContain('edgemesh_network_programming_duration_seconds_bucket{le="300"}');
    // Two periodic resyncs later: still one.
    await new Promise((r) => setTimeout(r, 2_200));
    const later = (await get(`${metrics}/metrics`)).body;
    expect(sample(later, 'edgemesh_syncs_total{result="ok"}')).toBeGreaterThan(sample(after, 'edgemesh_syncs_total{result="ok"}') as number);
    expect(sample(later, 'edgemesh_network_programming_duration_seconds_count')).toBe(1);
    console.log(`network programming: one change observed at ${sum.toFixed(3)} s (write to scrape ${elapsed.toFixed(3)} s)`);
  });

  it('--log-format pino keeps pino\'s defaults (numeric level, epoch milliseconds, pid, hostname)', async () => {
    await start(['--log-format', 'pino']);
    const first = agent!.logs[0]!;
    expect(first.level).toBe(30);
    expect(typeof first.time).toBe('number');
    expect(Math.abs(Number(first.time) - Date.now())).toBeLessThan(60_000);
    expect(typeof first.pid).toBe('number');
    expect(first).toHaveProperty('hostname');
  });
});
