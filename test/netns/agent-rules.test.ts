// The seed's rule story end to end: the real agent CLI in a namespace holding real kube-proxy
// rules, driven by a watched services directory.
import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { describeNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { loadKubeProxyIptables } from '../helpers/fixtures.js';
import { startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { ServicesDir, seedBasics, serviceYaml, sliceYaml } from '../helpers/manifests.js';

const ORDER_CHECK_MS = 300;

interface Flavour {
  backend: 'iptables-legacy';
  save: string;
  insertCmd: string;
}
const flavours: Flavour[] = [{ backend: 'iptables-legacy', save: 'iptables-legacy-save -t nat', insertCmd: 'iptables-legacy -w' }];

function normalize(save: string): string {
  return save
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
    .join('\n');
}

function firstRule(save: string, chain: string): string | undefined {
  return save.split('\n').find((l) => l.startsWith(`-A ${chain} `));
}

const ROOT_JUMP = (chain: string) => `-A ${chain} -m comment --comment "edgemesh root chain" -j EDGE-MESH`;

for (const f of flavours) {
  describeNetns(`agent rule programming with ${f.backend}`, () => {
    let ns: Netns;
    let dir: ServicesDir;
    let agent: AgentProcess | undefined;
    const save = async () => (await ns.sh(f.save)).stdout;
    const args = (extra: string[] = []) => [
      'run',
      '--backend', f.backend,
      '--service-cidr', '10.10.0.0/16',
      '--services-dir', dir.path,
      '--order-check-period', `${ORDER_CHECK_MS}ms`,
      '--metrics-addr', '127.0.0.1:0',
      ...extra,
    ];

    beforeEach(async () => {
      ns = await Netns.create('agent');
      dir = new ServicesDir();
      seedBasics(dir);
    });
    afterEach(async () => {
      if (agent) await agent.stop('SIGKILL');
      agent = undefined;
      await ns.destroy();
      dir.destroy();
    });
    afterAll(destroyAllNetns);

    it('started after kube-proxy, puts EDGE-MESH at rule 1 of PREROUTING and OUTPUT with the seed ignore rules', async () => {
      await loadKubeProxyIptables(ns, 'legacy');
      agent = startAgent(ns, args());
      const { value } = await eventually(save, (s) => s.includes('-j EDGE-MESH-TCP'), 10_000, 'EDGE-MESH written');
      expect(firstRule(value, 'PREROUTING')).toBe(ROOT_JUMP('PREROUTING'));
      expect(firstRule(value, 'OUTPUT')).toBe(ROOT_JUMP('OUTPUT'));
      const ours = value.split('\n').filter((l) => l.startsWith('-A EDGE-MESH'));
      expect(ours).toEqual([
        '-A EDGE-MESH -d 10.10.0.1/32 -m comment --comment "ignore default/kubernetes service" -j RETURN',
        '-A EDGE-MESH -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN',
        '-A EDGE-MESH -d 10.10.0.0/16 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP',
        '-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination 169.254.96.16:40001',
      ]);
      // kube-proxy's own jump is still there, right behind ours
      expect(value).toContain('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
    });

    it('started before kube-proxy, moves its jump back to rule 1 within two order-check periods of kube-proxy inserting above it', async () => {
      agent = startAgent(ns, args());
      await eventually(save, (s) => firstRule(s, 'PREROUTING') === ROOT_JUMP('PREROUTING'), 10_000, 'initial sync');
      await loadKubeProxyIptables(ns, 'legacy'); // inserts KUBE-SERVICES jumps at 1
      const t0 = Date.now();
      const { value } = await eventually(
        save,
        (s) => firstRule(s, 'PREROUTING') === ROOT_JUMP('PREROUTING') && firstRule(s, 'OUTPUT') === ROOT_JUMP('OUTPUT'),
        5_000,
        'order repaired',
      );
      expect(Date.now() - t0).toBeLessThanOrEqual(2 * ORDER_CHECK_MS + 1_000); // 2 periods + one slow commit on a loaded 2-core machine
      expect(value.split('\n').filter((l) => l.includes('-j EDGE-MESH') && l.startsWith('-A PREROUTING'))).toHaveLength(1);
      await agent.waitFor((l) => typeof l.msg === 'string' && /order-repairs/.test(l.msg), 5_000, 'order repair log');
    });

    it('a noproxy=edgemesh label added to a manifest adds its RETURN within 2 s, and removing it removes it', async () => {
      await loadKubeProxyIptables(ns, 'legacy');
      dir.write('grafana.yaml', serviceYaml({ namespace: 'monitoring', name: 'grafana', clusterIP: '10.10.250.210' }));
      agent = startAgent(ns, args());
      await eventually(save, (s) => s.includes('-j EDGE-MESH-TCP'), 10_000, 'initial sync');
      const rule = '-A EDGE-MESH -d 10.10.250.210/32 -m comment --comment "ignore monitoring/grafana service" -j RETURN';
      expect(await save()).not.toContain(rule);
      dir.write('grafana.yaml', serviceYaml({ namespace: 'monitoring', name: 'grafana', clusterIP: '10.10.250.210', labels: { noproxy: 'edgemesh' } }));
      const added = await eventually(save, (s) => s.includes(rule), 2_000, 'RETURN added');
      expect(added.ms).toBeLessThanOrEqual(2_000);
      dir.write('grafana.yaml', serviceYaml({ namespace: 'monitoring', name: 'grafana', clusterIP: '10.10.250.210' }));
      await eventually(save, (s) => !s.includes(rule), 2_000, 'RETURN removed');
    });

    it('an ignored headless service gets one RETURN per endpoint IP, following endpoint changes', async () => {
      const svc = serviceYaml({ namespace: 'monitoring', name: 'node-exporter', clusterIP: 'None', labels: { noproxy: 'edgemesh' }, ports: [{ name: 'https', port: 9100, targetPort: 'https' }] });
      dir.write('node-exporter.yaml', svc + '---\n' + sliceYaml('monitoring', 'node-exporter', ['192.168.132.38', '192.168.132.37'], 9100, { portName: 'https' }));
      agent = startAgent(ns, args());
      const line = (ip: string) => `-A EDGE-MESH -d ${ip}/32 -m comment --comment "ignore monitoring/node-exporter service" -j RETURN`;
      await eventually(save, (s) => s.includes(line('192.168.132.38')) && s.includes(line('192.168.132.37')), 10_000, 'headless RETURNs');
      dir.write('node-exporter.yaml', svc + '---\n' + sliceYaml('monitoring', 'node-exporter', ['192.168.132.37', '192.168.132.26'], 9100, { portName: 'https' }));
      const { value } = await eventually(save, (s) => s.includes(line('192.168.132.26')) && !s.includes(line('192.168.132.38')), 3_000, 'endpoints followed');
      expect(value).toContain(line('192.168.132.37'));
    });

    it('SIGTERM removes every trace of us: the nat table is exactly what it was before the agent started', async () => {
      await loadKubeProxyIptables(ns, 'legacy');
      const before = normalize(await save());
      agent = startAgent(ns, args());
      await eventually(save, (s) => s.includes('-j EDGE-MESH-TCP'), 10_000, 'initial sync');
      expect(await agent.stop('SIGTERM')).toBe(0);
      agent = undefined;
      expect(normalize(await save())).toBe(before);
    });

    it('run --once applies one full sync, prints what it applied and exits 0; cleanup then removes it all', async () => {
      await loadKubeProxyIptables(ns, 'legacy');
      const before = normalize(await save());
      const once = await ns.run(process.execPath, [(await import('../helpers/agent.js')).CLI, ...args(['--once'])]);
      expect(once.stdout).toContain('-A EDGE-MESH -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN');
      expect(firstRule(await save(), 'OUTPUT')).toBe(ROOT_JUMP('OUTPUT'));
      const status = await ns.run(process.execPath, [(await import('../helpers/agent.js')).CLI, 'status', '--backend', f.backend]);
      expect(status.stdout).toMatch(/Chain EDGE-MESH \(2 references\)/);
      expect(status.stdout).toMatch(/ignore kube-system\/coredns service/);
      const cleanup = await ns.run(process.execPath, [(await import('../helpers/agent.js')).CLI, 'cleanup', '--backend', f.backend]);
      expect(cleanup.code).toBe(0);
      expect(normalize(await save())).toBe(before);
    });

    it('a bad flag or CIDR ends with a one-line error naming it, exit 2, and the tables untouched', async () => {
      await loadKubeProxyIptables(ns, 'legacy');
      const before = normalize(await save());
      const cli = (await import('../helpers/agent.js')).CLI;
      for (const bad of [
        ['run', '--service-cidr', '10.10.0.0/33', '--services-dir', dir.path, '--once'],
        ['run', '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path, '--bogus-flag', '--once'],
        ['run', '--service-cidr', '10.10.0.0/16', '--services-dir', '/nonexistent/dir', '--once'],
      ]) {
        const r = await ns.run(process.execPath, [cli, ...bad], { allowFail: true });
        expect(r.code, bad.join(' ')).toBe(2);
        expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
        expect(r.stderr).toMatch(/--service-cidr|--bogus-flag|services-dir/);
      }
      expect(normalize(await save())).toBe(before);
    });
  });
}
