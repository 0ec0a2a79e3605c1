// Security checks that need a namespace. With defaults, the agent listens on exactly three
// sockets: metrics and status on 127.0.0.1:10251 (loopback: /status names tunnel peers and
// certificates), the health probes on 0.0.0.0:10252 (as kube-proxy's 10256: the kubelet probes a
// hostNetwork pod at the node IP; /healthz and /readyz only), and the proxy on its link-local
// address 169.254.96.16:40001 (on edgemesh0).
// (The DaemonSet's capabilities: test/unit/deploy.test.ts; no open relay: no-open-relay.test.ts.)
import { afterAll, afterEach, expect, it } from 'vitest';
import { describeNetns, linkNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { CLI, startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
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

  it('with defaults, metrics/status listen on 127.0.0.1:10251, health on 0.0.0.0:10252 (probes only), the proxy on 169.254.96.16:40001, nothing else; `status` finds the agent', async () => {
    ns = await Netns.create('sec');
    // A routable address on the node, so that a wildcard bind would show.
    peer = await Netns.create('secpeer');
    await linkNetns(ns, '192.0.2.10/24', peer, '192.0.2.20/24');
    dir = new ServicesDir();
    seedBasics(dir);
    // Only what the agent needs to run; the listener addresses are left at their defaults.
    agent = startAgent(ns, ['run', '--backend', 'nftables', '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path]);
    await agent.waitFor((l) => /metrics and health on/.test(String(l.msg)), 15_000, 'metrics listener');
    await agent.waitFor((l) => /health probes on/.test(String(l.msg)), 15_000, 'health listener');
    await agent.waitFor((l) => /proxy listening/.test(String(l.msg)), 15_000, 'proxy listener');
    const { value } = await eventually(
      async () => (await ns!.run('ss', ['-Htln'])).stdout,
      (s) => s.includes('127.0.0.1:10251') && s.includes('0.0.0.0:10252') && s.includes('169.254.96.16:40001'),
      5_000,
      'listener',
    );
    const listeners = value.split('\n').filter(Boolean).map((l) => l.trim().split(/\s+/)[3]).sort();
    expect(listeners).toEqual(['0.0.0.0:10252', '127.0.0.1:10251', '169.254.96.16:40001']);
    const code = async (from: Netns, url: string) => (await from.run('curl', ['-s', '-m', '2', '-o', '/dev/null', '-w', '%{http_code}', url], { allowFail: true })).stdout;
    // Metrics and status answer on loopback.
    const local = await code(ns, 'http://127.0.0.1:10251/metrics');
    expect(local).toBe('200');
    expect(await code(ns, 'http://127.0.0.1:10251/status')).toBe('200');
    // From a neighbour on the node's network: the probes' paths answer on the node's address (as
    // the kubelet asks them), nothing else does.
    await eventually(() => code(peer!, 'http://192.0.2.10:10252/readyz'), (c) => c === '200', 10_000, 'readyz from the node address');
    const probe = await code(peer, 'http://192.0.2.10:10252/healthz');
    expect(probe).toBe('200');
    expect(await code(peer, 'http://192.0.2.10:10252/metrics')).toBe('404');
    expect(await code(peer, 'http://192.0.2.10:10252/status')).toBe('404');
    const remote = await code(peer, 'http://192.0.2.10:10251/metrics');
    expect(remote).toBe('000');
    // `edgemesh-agent status` with its defaults asks the running agent on 127.0.0.1:10251.
    const st = await ns.run(process.execPath, [CLI, 'status', '--backend', 'nftables'], { allowFail: true });
    expect(st.stdout, st.stderr).toMatch(/^# sync: ready; healthy; last success /m);
    expect(st.stdout).not.toContain('no agent answered');
    summary('security', { listeners: listeners.join(','), metricsLoopback: local, healthzNodeAddress: probe, metricsNodeAddress: remote === '000' ? 'refused' : remote });
  });
});
