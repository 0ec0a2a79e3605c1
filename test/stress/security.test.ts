// Security checks that need a namespace. With defaults, the agent listens on exactly two
// sockets: the metrics/health endpoint on 127.0.0.1:10251 and the proxy on its link-local address
// 169.254.96.16:40001 (on edgemesh0), nothing on a wildcard or the node's routable addresses.
// (The DaemonSet's capabilities: test/unit/deploy.test.ts; no open relay: no-open-relay.test.ts.)
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

  it('with defaults, metrics/health listen on 127.0.0.1:10251 and the proxy on 169.254.96.16:40001, nothing else', async () => {
    ns = await Netns.create('sec');
    // A routable address on the node, so that a wildcard bind would show.
    peer = await Netns.create('secpeer');
    await linkNetns(ns, '192.0.2.10/24', peer, '192.0.2.20/24');
    dir = new ServicesDir();
    seedBasics(dir);
    // Only what the agent needs to run; the metrics address is left at its default.
    agent = startAgent(ns, ['run', '--backend', 'nftables', '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path]);
    await agent.waitFor((l) => /metrics and health on/.test(String(l.msg)), 15_000, 'metrics listener');
    await agent.waitFor((l) => /proxy listening/.test(String(l.msg)), 15_000, 'proxy listener');
    const { value } = await eventually(
      async () => (await ns!.run('ss', ['-Htln'])).stdout,
      (s) => s.includes('127.0.0.1:10251') && s.includes('169.254.96.16:40001'),
      5_000,
      'listener',
    );
    const listeners = value.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[3]).sort();
    expect(listeners).toEqual(['127.0.0.1:10251', '169.254.96.16:40001']);
    // It answers on loopback.
    const local = await ns.run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:10251/healthz'], { allowFail: true });
    expect(local.stdout).toBe('200');
    // From a neighbour on the node's network, the node's address has nothing on that port.
    const remote = await peer!.run('curl', ['-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}', 'http://192.0.2.10:10251/healthz'], { allowFail: true });
    expect(remote.stdout).toBe('000');
    summary('security', { listeners: listeners.join(','), healthzLoopback: local.stdout, healthzNodeAddress: remote.stdout === '000' ? 'refused' : remote.stdout });
  });
});
