// Load through the running agent: N idle connections held open (slowloris) against a connection
// limit, live connections still flowing, then M short connections as fast as the client goes;
// the agent's memory stays bounded and its fd count returns to where it started.
// Knobs: EDGEMESH_LOAD_IDLE (default 2 000; `npm run test:stress` 9 000: with its upstream sockets
// the proxy holds two fds per connection, and this machine's hard RLIMIT_NOFILE is 20 000),
// EDGEMESH_LOAD_SHORT (default 2 000; test:stress 10 000).
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterAll, expect, it } from 'vitest';
import { describeNetns, linkNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { ServicesDir, serviceYaml, sliceYaml } from '../helpers/manifests.js';
import { summary } from './common.js';

const here = dirname(fileURLToPath(import.meta.url));
const IDLE = Number(process.env.EDGEMESH_LOAD_IDLE ?? 2000);
const SHORT = Number(process.env.EDGEMESH_LOAD_SHORT ?? 2000);
const EXCESS = 300;

const fdCount = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);

describeNetns('stress: load through the running agent', () => {
  let agent: AgentProcess | undefined;
  let dir: ServicesDir | undefined;
  afterAll(async () => {
    await agent?.stop('SIGKILL');
    await destroyAllNetns();
    dir?.destroy();
  });

  it(`holds ${IDLE} idle connections, refuses ${EXCESS} over the limit cleanly, keeps live ones flowing, serves ${SHORT} short ones, and returns to its fd baseline with bounded memory`, { timeout: 240_000 }, async () => {
    const [node, pod, be] = await Promise.all([Netns.create('loadnode'), Netns.create('loadpod'), Netns.create('loadbe')]);
    await linkNetns(node, '10.244.0.1/24', pod, '10.244.0.2/24');
    await linkNetns(node, '10.244.1.1/24', be, '10.244.1.10/24');
    await pod.run('ip', ['route', 'add', 'default', 'via', '10.244.0.1']);
    await be.run('ip', ['route', 'add', 'default', 'via', '10.244.1.1']);
    await node.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.core.somaxconn=8192']);
    for (const ns of [pod, node]) await ns.run('sysctl', ['-qw', 'net.ipv4.ip_local_port_range=10000 65000', 'net.ipv4.tcp_tw_reuse=1']);
    const server = be.spawn('setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, join(here, '..', 'netns', 'drivers', 'servers.mjs'), JSON.stringify([{ kind: 'echo', host: '10.244.1.10', port: 8080 }])]);
    await new Promise<void>((res, rej) => {
      server.stdout!.on('data', (d: Buffer) => (d.toString().includes('ready') ? res() : undefined));
      server.on('exit', (c) => rej(new Error(`server exited ${c}`)));
    });
    dir = new ServicesDir();
    dir.write('web.yaml', serviceYaml({ namespace: 'shop', name: 'web', clusterIP: '10.10.0.20', ports: [{ port: 80, targetPort: 8080 }] }) + '---\n' + sliceYaml('shop', 'web', ['10.244.1.10'], 8080));
    agent = startAgent(node, ['run', '--backend', 'nftables', '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path, '--max-connections', String(IDLE)]);
    await agent.waitFor((l) => /^sync \(/.test(String(l.msg)), 20_000, 'first sync');
    const pid = agent.child.pid!;
    const metrics = async () => {
      const text = (await node.run('curl', ['-s', 'http://127.0.0.1:10251/metrics'])).stdout;
      const out: Record<string, number> = {};
      for (const l of text.split('\n')) {
        const m = /^(edgemesh_proxy_[a-z_]+(?:\{[^}]*\})?) (\S+)$/.exec(l);
        if (m) out[m[1]!] = Number(m[2]);
      }
      return out;
    };
    await metrics(); // the first scrape allocates what every later scrape reuses
    const fd0 = fdCount(pid);
    const rss0 = rssKiB(pid);

    const client = pod.spawn('setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, join(here, 'drivers', 'hold.mjs'), JSON.stringify({ host: '10.10.0.20', port: 80, idle: IDLE + EXCESS, short: SHORT, concurrency: 16, sample: 100, timeoutMs: 200_000 })], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const lines = createInterface({ input: client.stdout! })[Symbol.asyncIterator]();
    const phase = async (name: string) => {
      for (;;) {
        const { value, done } = await lines.next();
        if (done) throw new Error(`client ended before phase ${name}`);
        const o = JSON.parse(value) as Record<string, number | string>;
        if (o.phase === name) return o;
        if (o.phase === 'timeout') throw new Error('client timed out');
      }
    };

    const held = await phase('held');
    const mHeld = await eventually(metrics, (m) => m.edgemesh_proxy_connections_active === IDLE, 20_000, 'all held connections relayed');
    const fdHeld = fdCount(pid);
    const rssHeld = rssKiB(pid);
    expect(held.open).toBe(IDLE);
    expect(held.refused).toBe(EXCESS);
    expect(mHeld.value['edgemesh_proxy_connections_refused_total{reason="over-limit"}']).toBe(EXCESS);
    // An idle connection holds its two sockets and no pipes (pipes come from a pool only while bytes move).
    expect(fdHeld - fd0).toBeLessThanOrEqual(2 * IDLE + 64);

    client.stdin!.write('flow\n');
    const flowed = await phase('flowed');
    expect(flowed.echoed).toBe(flowed.asked); // with the proxy at its limit, live connections still move bytes

    client.stdin!.write('close\n');
    const short = await phase('short');
    expect(short.failed).toBe(0);
    expect(short.ok).toBe(SHORT);

    await eventually(metrics, (m) => m.edgemesh_proxy_connections_active === 0, 20_000, 'every connection ended');
    // Pooled pipes are trimmed after 2 s of disuse: the fd count comes back to the baseline.
    const { ms } = await eventually(async () => fdCount(pid), (n) => n <= fd0, 15_000, `fd count back to ${fd0}`);
    const rssAfter = rssKiB(pid);
    // Memory is bounded: holding IDLE connections costs kernel socket buffers, not agent heap.
    expect(rssHeld - rss0).toBeLessThan(IDLE * 8); // < 8 KiB of agent RSS per held connection
    summary('load', { idle: IDLE, refusedOverLimit: EXCESS, shortOk: short.ok, shortPerSec: short.perSec, fdBaseline: fd0, fdHeld, fdBackInMs: ms, rssBaselineKiB: rss0, rssHeldKiB: rssHeld, rssAfterKiB: rssAfter });
  });
});
