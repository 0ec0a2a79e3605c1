// The hybrid-NAT rule story end to end: the real agent CLI in a namespace holding real kube-proxy
// rules, driven by a watched services directory, over each backend with the same expectations:
// our hook first (rule 1, or priority dstnat-1 for nftables), the ignore RETURNs, the DNAT.
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { describeNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { loadKubeProxyIptables } from '../helpers/fixtures.js';
import { loadKubeProxyNftables } from '../helpers/nft-fixture.js';
import { CLI, startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { ServicesDir, seedBasics, serviceYaml, sliceYaml } from '../helpers/manifests.js';

const ORDER_CHECK_MS = 300;

interface Flavour {
  backend: 'iptables-legacy' | 'iptables-nft' | 'nftables';
  /** kube-proxy as it runs beside this backend. */
  loadKubeProxy(ns: Netns): Promise<void>;
  /** The kernel's own listing of everything we could have written. */
  dump(ns: Netns): Promise<string>;
  /** What an ignore rule looks like in dump(). */
  ignore(ip: string, key: string): RegExp;
  /** ...and in what `run --once` prints it applied. */
  onceIgnore(ip: string, key: string): string;
  /** dump() shows our hook running before kube-proxy's. */
  first: (dump: string) => boolean;
  /** dump() shows the proxy rule and the DNAT. */
  proxied: (dump: string) => boolean;
}

const iptablesFirst = (s: string) =>
  ['PREROUTING', 'OUTPUT'].every((c) => s.split('\n').find((l) => l.startsWith(`-A ${c} `)) === `-A ${c} -m comment --comment "edgemesh root chain" -j EDGE-MESH`);
const iptablesProxied = (s: string) =>
  s.includes('-A EDGE-MESH -d 10.10.0.0/16 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP') &&
  s.includes('-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination 169.254.96.16:40001');
const iptablesIgnore = (ip: string, key: string) => new RegExp(`^-A EDGE-MESH -d ${ip.replace(/\./g, '\\.')}/32 -m comment --comment "ignore ${key} service" -j RETURN$`, 'm');

const flavours: Flavour[] = [
  {
    backend: 'iptables-legacy',
    loadKubeProxy: (ns) => loadKubeProxyIptables(ns, 'legacy'),
    dump: async (ns) => (await ns.sh('iptables-legacy-save -t nat')).stdout,
    ignore: iptablesIgnore,
    onceIgnore: (ip, key) => `-A EDGE-MESH -d ${ip}/32 -m comment --comment "ignore ${key} service" -j RETURN`,
    first: iptablesFirst,
    proxied: iptablesProxied,
  },
  {
    backend: 'iptables-nft',
    loadKubeProxy: (ns) => loadKubeProxyIptables(ns, 'nft'),
    dump: async (ns) => (await ns.sh('iptables-nft-save -t nat')).stdout,
    ignore: iptablesIgnore,
    onceIgnore: (ip, key) => `-A EDGE-MESH -d ${ip}/32 -m comment --comment "ignore ${key} service" -j RETURN`,
    first: iptablesFirst,
    proxied: iptablesProxied,
  },
  {
    backend: 'nftables',
    loadKubeProxy: loadKubeProxyNftables,
    dump: async (ns) => (await ns.sh('nft list ruleset')).stdout,
    // An element of the ignore set (`ip daddr @ignored return` in EDGE-MESH looks it up).
    onceIgnore: (ip, key) => `add ignored ${ip} comment "ignore ${key} service"`,
    ignore: (ip, key) => new RegExp(`[{ ]${ip.replace(/\./g, '\\.')} counter packets \\d+ bytes \\d+ comment "ignore ${key} service"`),
    first: (s) =>
      /chain prerouting \{\n\s+type nat hook prerouting priority dstnat - 1; policy accept;\n\s+counter packets \d+ bytes \d+ jump EDGE-MESH comment "edgemesh root chain"/.test(s) &&
      /chain output \{\n\s+type nat hook output priority -101; policy accept;\n\s+counter packets \d+ bytes \d+ jump EDGE-MESH comment "edgemesh root chain"/.test(s),
    proxied: (s) =>
      /ip daddr @ignored counter packets \d+ bytes \d+ return comment "ignored services"\n\s+ip daddr 10\.10\.0\.0\/16 meta l4proto tcp counter packets \d+ bytes \d+ jump EDGE-MESH-TCP comment "tcp service proxy"/.test(s) &&
      /meta l4proto tcp counter packets \d+ bytes \d+ dnat to 169\.254\.96\.16:40001 comment "edgemesh tcp proxy"/.test(s),
  },
];

/** A dump without comments (timestamps) and with counters zeroed. */
function normalize(dump: string): string {
  return dump
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]').replace(/packets \d+ bytes \d+/g, 'packets 0 bytes 0'))
    .join('\n');
}

for (const f of flavours) {
  describeNetns(`agent rule programming with ${f.backend}`, () => {
    let ns: Netns;
    let dir: ServicesDir;
    let agent: AgentProcess | undefined;
    const dump = () => f.dump(ns);
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

    it('started after kube-proxy, runs first with the basic example\'s ignore rules and the DNAT to the proxy', async () => {
      await f.loadKubeProxy(ns);
      agent = startAgent(ns, args());
      const { value } = await eventually(dump, f.proxied, 10_000, 'EDGE-MESH written');
      expect(f.first(value), value).toBe(true);
      expect(value).toMatch(f.ignore('10.10.0.1', 'default/kubernetes'));
      expect(value).toMatch(f.ignore('10.10.0.3', 'kube-system/coredns'));
      expect(value).not.toMatch(f.ignore('10.10.0.20', 'default/web'));
      if (f.backend !== 'nftables') {
        const ours = value.split('\n').filter((l) => l.startsWith('-A EDGE-MESH'));
        expect(ours).toEqual([
          '-A EDGE-MESH -d 10.10.0.1/32 -m comment --comment "ignore default/kubernetes service" -j RETURN',
          '-A EDGE-MESH -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN',
          '-A EDGE-MESH -d 10.10.0.0/16 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP',
          '-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination 169.254.96.16:40001',
        ]);
        expect(value).toContain('-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES');
      } else {
        expect(value).toContain('table ip kube-proxy');
      }
    });

    it('started before kube-proxy, still runs first after kube-proxy programs its rules (legacy/nft: repaired within two order-check periods; nftables: no repair needed)', async () => {
      agent = startAgent(ns, args());
      await eventually(dump, (s) => f.first(s) && f.proxied(s), 10_000, 'initial sync');
      await f.loadKubeProxy(ns); // iptables modes insert KUBE-SERVICES jumps at 1
      if (f.backend === 'nftables') {
        // Never displaced: priority dstnat-1 runs first by construction, so the very first look
        // after kube-proxy's load already finds us first (no wait, no repair).
        expect(f.first(await dump())).toBe(true);
        await new Promise((r) => setTimeout(r, 3 * ORDER_CHECK_MS));
        expect(agent.logs.some((l) => /order-repairs/.test(String(l.msg)))).toBe(false);
      } else {
        const t0 = Date.now();
        const { value } = await eventually(dump, f.first, 5_000, 'our hook first again');
        expect(Date.now() - t0).toBeLessThanOrEqual(2 * ORDER_CHECK_MS + 1_000); // 2 periods + one commit on a loaded 2-core machine
        expect(value.split('\n').filter((l) => l.includes('-j EDGE-MESH') && l.startsWith('-A PREROUTING'))).toHaveLength(1);
        await agent.waitFor((l) => /order-repairs/.test(String(l.msg)), 5_000, 'order repair log');
      }
    });

    it('a noproxy=edgemesh label added to a manifest adds its RETURN within 2 s, and removing it removes it', async () => {
      await f.loadKubeProxy(ns);
      dir.write('grafana.yaml', serviceYaml({ namespace: 'monitoring', name: 'grafana', clusterIP: '10.10.250.210' }));
      agent = startAgent(ns, args());
      await eventually(dump, f.proxied, 10_000, 'initial sync');
      const rule = f.ignore('10.10.250.210', 'monitoring/grafana');
      expect(await dump()).not.toMatch(rule);
      dir.write('grafana.yaml', serviceYaml({ namespace: 'monitoring', name: 'grafana', clusterIP: '10.10.250.210', labels: { noproxy: 'edgemesh' } }));
      const added = await eventually(dump, (s) => rule.test(s), 2_000, 'RETURN added');
      expect(added.ms).toBeLessThanOrEqual(2_000);
      dir.write('grafana.yaml', serviceYaml({ namespace: 'monitoring', name: 'grafana', clusterIP: '10.10.250.210' }));
      await eventually(dump, (s) => !rule.test(s), 2_000, 'RETURN removed');
    });

    it('an ignored headless service gets one RETURN per endpoint IP, following endpoint changes', async () => {
      const svc = serviceYaml({ namespace: 'monitoring', name: 'node-exporter', clusterIP: 'None', labels: { noproxy: 'edgemesh' }, ports: [{ name: 'https', port: 9100, targetPort: 'https' }] });
      dir.write('node-exporter.yaml', svc + '---\n' + sliceYaml('monitoring', 'node-exporter', ['192.168.132.38', '192.168.132.37'], 9100, { portName: 'https' }));
      agent = startAgent(ns, args());
      const ne = (ip: string) => f.ignore(ip, 'monitoring/node-exporter');
      await eventually(dump, (s) => ne('192.168.132.38').test(s) && ne('192.168.132.37').test(s), 10_000, 'headless RETURNs');
      dir.write('node-exporter.yaml', svc + '---\n' + sliceYaml('monitoring', 'node-exporter', ['192.168.132.37', '192.168.132.26'], 9100, { portName: 'https' }));
      const { value } = await eventually(dump, (s) => ne('192.168.132.26').test(s) && !ne('192.168.132.38').test(s), 3_000, 'endpoints followed');
      expect(value).toMatch(ne('192.168.132.37'));
    });

    it('SIGTERM removes every trace of us: the ruleset is exactly what it was before the agent started', async () => {
      await f.loadKubeProxy(ns);
      const before = normalize(await dump());
      agent = startAgent(ns, args());
      await eventually(dump, f.proxied, 10_000, 'initial sync');
      expect(await agent.stop('SIGTERM')).toBe(0);
      agent = undefined;
      expect(normalize(await dump())).toBe(before);
    });

    it('run --once applies one full sync, prints what it applied and exits 0; status shows it; cleanup removes it all', async () => {
      await f.loadKubeProxy(ns);
      const before = normalize(await dump());
      const once = await ns.run(process.execPath, [CLI, ...args(['--once'])]);
      expect(once.stdout).toContain(f.onceIgnore('10.10.0.3', 'kube-system/coredns'));
      expect(f.first(await dump())).toBe(true);
      const again = await ns.run(process.execPath, [CLI, ...args(['--once'])]);
      expect(again.stdout).toMatch(/already as desired, nothing written/);
      const status = await ns.run(process.execPath, [CLI, 'status', '--backend', f.backend]);
      expect(status.stdout).toMatch(/ignore kube-system\/coredns service/);
      expect(status.stdout).not.toMatch(/WARNING/);
      const cleanup = await ns.run(process.execPath, [CLI, 'cleanup', '--backend', f.backend]);
      expect(cleanup.code).toBe(0);
      expect(normalize(await dump())).toBe(before);
    });

    it('a bad flag, CIDR, directory, config file, environment value or (with --strict-manifests) manifest ends with a one-line error naming it, exit 2, and the tables untouched', async () => {
      await f.loadKubeProxy(ns);
      const before = normalize(await dump());
      for (const bad of [
        ['run', '--backend', f.backend, '--service-cidr', '10.10.0.0/33', '--services-dir', dir.path, '--once'],
        ['run', '--backend', f.backend, '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path, '--bogus-flag', '--once'],
        ['run', '--backend', f.backend, '--service-cidr', '10.10.0.0/16', '--services-dir', '/nonexistent/dir', '--once'],
      ]) {
        const r = await ns.run(process.execPath, [CLI, ...bad], { allowFail: true });
        expect(r.code, bad.join(' ')).toBe(2);
        expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
        expect(r.stderr).toMatch(/--service-cidr|--bogus-flag|services-dir/);
      }
      // a bad --config file, and a bad environment value
      const cfg = join(dir.path, '..', `bad-config-${process.pid}.yaml`);
      writeFileSync(cfg, 'serviceCidr: [10.10.0.0/16]\norderCheckPeriod: soon\n');
      try {
        const r1 = await ns.run(process.execPath, [CLI, 'run', '--config', cfg, '--services-dir', dir.path, '--once'], { allowFail: true });
        expect(r1.code).toBe(2);
        expect(r1.stderr.trim().split('\n')).toHaveLength(1);
        expect(r1.stderr).toMatch(/orderCheckPeriod.*soon/);
      } finally {
        rmSync(cfg, { force: true });
      }
      const r2 = await ns.run(process.execPath, [CLI, ...args(['--once'])].filter((a, i, all) => a !== '--backend' && all[i - 1] !== '--backend'), {
        allowFail: true,
        env: { ...process.env, EDGEMESH_BACKEND: 'ipvs' },
      });
      expect(r2.code).toBe(2);
      expect(r2.stderr.trim().split('\n')).toHaveLength(1);
      expect(r2.stderr).toMatch(/EDGEMESH_BACKEND.*ipvs/);
      // A bad manifest is fatal only with --strict-manifests (otherwise named and skipped: coexist.test.ts).
      dir.write('broken.yaml', 'apiVersion: v1\nkind: Service\nmetadata: { name: x, namespace: y }\nspec: { clusterIP: 10.10.0.300 }\n');
      const r = await ns.run(process.execPath, [CLI, ...args(['--once', '--strict-manifests'])], { allowFail: true });
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/broken\.yaml.*10\.10\.0\.300/);
      expect(normalize(await dump())).toBe(before);
    });
  });
}
