// Security checks that need a namespace. The metrics/health endpoint binds to loopback by default:
// the agent started with no --metrics-addr listens on 127.0.0.1:10251 and nowhere else, even on a
// node with routable addresses. (The DaemonSet's capabilities are checked in test/unit/deploy.test.ts;
// the no-open-relay checks arrive with the proxy.)
import { afterAll, afterEach, expect, it } from 'vitest';
import { describeNetns, linkNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { ServicesDir, seedBasics } from '../helpers/manifests.js';
import { summary } from './common.js';

describeNetns('stress: security defaults', () => {
  let ns: Netns | undefined;
  let peer: Netns | undefined;
  let agent: AgentProcess | undefined;
  let dir: ServicesDir | undefined;
  afterEach(async () => {
    if (agent) await agent.stop('SIGKILL');
    await ns?.destroy();
    await peer?.destroy();
    dir?.destroy();
    agent = ns = peer = dir = undefined;
  });
  afterAll(destroyAllNetns);

  it('with defaults, the metrics and health endpoint listens on 127.0.0.1:10251 only', async () => {
    ns = await Netns.create('sec');
    // A routable address on the node, so that a wildcard bind would show.
    peer = await Netns.create('secpeer');
    await linkNetns(ns, '192.0.2.10/24', peer, '192.0.2.20/24');
    dir = new ServicesDir();
    seedBasics(dir);
    // Only what the agent needs to run; the metrics address is left at its default.
    agent = startAgent(ns, ['run', '--backend', 'nftables', '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path]);
    await agent.waitFor((l) => /metrics and health on/.test(String(l.msg)), 15_000, 'metrics listener');
    const { value } = await eventually(
      async () => (await ns!.run('ss', ['-Htln'])).stdout,
      (s) => s.includes('127.0.0.1:10251'),
      5_000,
      'listener',
    );
    const listeners = value.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[3]);
    expect(listeners).toEqual(['127.0.0.1:10251']);
    // It answers on loopback.
    const local = await ns.run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:10251/healthz'], { allowFail: true });
    expect(local.stdout).toBe('200');
    // From a neighbour on the node's network, the node's address has nothing on that port.
    const remote = await peer!.run('curl', ['-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}', 'http://192.0.2.10:10251/healthz'], { allowFail: true });
    expect(remote.stdout).toBe('000');
    summary('security', { listeners: listeners.join(','), healthzLoopback: local.stdout, healthzNodeAddress: remote.stdout === '000' ? 'refused' : remote.stdout });
  });
});
