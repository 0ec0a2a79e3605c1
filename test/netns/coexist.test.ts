// Living next to other writers of the nat table, and the agent's lifecycle, with the real agent
// CLI in namespaces: a foreign rewrite that keeps the table's size (kube-proxy's jump deleted and
// re-inserted at rule 1 in one iptables-restore --noflush) is repaired within the order-check
// bound; a Felix-like agent that insists on rule 1 is not fought; bad manifests at start are
// skipped; /healthz and /readyz while the API server never answers.
import { afterAll, afterEach, beforeEach, expect, it } from 'vitest';
import { createBackend } from '../../src/netfilter/factory.js';
import { LegacyIptablesTable } from '../../src/netfilter/iptables/iptables-legacy.js';
import type { BackendName } from '../../src/netfilter/types.js';
import { describeNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { loadKubeProxyIptables } from '../helpers/fixtures.js';
import { loadKubeProxyNftables } from '../helpers/nft-fixture.js';
import { CLI, startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { ServicesDir, seedBasics, serviceYaml } from '../helpers/manifests.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const KUBE_JUMP = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES';
/** The order-check bound at the default --order-check-period 1s. */
const REPAIR_BOUND_MS = 1100;

interface Flavour {
  backend: BackendName;
  loadKubeProxy(ns: Netns): Promise<void>;
  /** iptables(-restore) binaries of this flavour; undefined for nftables. */
  bin?: { cli: string; restore: string };
}

const flavours: Flavour[] = [
  { backend: 'iptables-legacy', loadKubeProxy: (ns) => loadKubeProxyIptables(ns, 'legacy'), bin: { cli: 'iptables-legacy', restore: 'iptables-legacy-restore' } },
  { backend: 'iptables-nft', loadKubeProxy: (ns) => loadKubeProxyIptables(ns, 'nft'), bin: { cli: 'iptables-nft', restore: 'iptables-nft-restore' } },
  { backend: 'nftables', loadKubeProxy: loadKubeProxyNftables },
];

/** `-S CHAIN` of the nat table, rule lines only. */
async function rules(ns: Netns, cli: string, chain: string): Promise<string[]> {
  return (await ns.run(cli, ['-w', '-t', 'nat', '-S', chain])).stdout.split('\n').filter((l) => l.startsWith('-A '));
}

const written = (a: AgentProcess, from = 0) => a.logs.slice(from).filter((l) => /^sync \(\w+\) wrote/.test(String(l.msg)));

for (const f of flavours) {
  describeNetns(`coexistence with other writers, ${f.backend}`, () => {
    let ns: Netns;
    let dir: ServicesDir;
    let agent: AgentProcess | undefined;
    const args = (extra: string[] = []) => ['run', '--backend', f.backend, '--service-cidr', '10.10.0.0/16', '--services-dir', dir.path, '--metrics-addr', 'off', ...extra];

    beforeEach(async () => {
      ns = await Netns.create('coexist');
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

    it(`a same-size foreign rewrite (kube-proxy's jump deleted and re-inserted at rule 1 in one restore --noflush) is repaired within ${REPAIR_BOUND_MS} ms, three times in a row`, async () => {
      await f.loadKubeProxy(ns);
      agent = startAgent(ns, args()); // default --order-check-period 1s
      const backend = createBackend(f.backend, 'ipv4', { netns: ns.path });
      await eventually(() => backend.checkOrder(), (o) => o.ok, 15_000, 'initial sync in order');
      if (!f.bin) {
        // nftables: our base chains run at priority dstnat-1 whatever kube-proxy rewrites; the
        // same kind of rewrite is kube-proxy re-creating its table in one transaction.
        for (let round = 0; round < 3; round++) {
          await loadKubeProxyNftables(ns);
          expect((await backend.checkOrder()).ok).toBe(true);
        }
        await sleep(1500);
        expect(agent.logs.some((l) => /order-repairs/.test(String(l.msg)))).toBe(false);
        return;
      }
      const latencies: number[] = [];
      for (let round = 0; round < 3; round++) {
        const legacy = f.backend === 'iptables-legacy' ? new LegacyIptablesTable({ family: 'ipv4', netns: ns.path }) : undefined;
        const size0 = await legacy?.info();
        const input = `*nat\n-D PREROUTING ${KUBE_JUMP}\n-I PREROUTING 1 ${KUBE_JUMP}\n-D OUTPUT ${KUBE_JUMP}\n-I OUTPUT 1 ${KUBE_JUMP}\nCOMMIT\n`;
        const tStart = performance.now();
        let tEnd = NaN;
        const cmd = ns.run(f.bin.restore, ['-w', '--noflush'], { input }).then(() => (tEnd = performance.now()));
        // Watch the order from here: the first read that shows us displaced is the foreign
        // commit (or, if we never see it, the command's own end bounds it); the first read in
        // order after that is the repair.
        let tForeign = NaN;
        let tRepaired = NaN;
        const deadline = tStart + 10_000;
        while (performance.now() < deadline) {
          const o = await backend.checkOrder();
          const t = performance.now();
          if (!o.ok && Number.isNaN(tForeign)) tForeign = t;
          if (o.ok && (!Number.isNaN(tForeign) || !Number.isNaN(tEnd))) {
            tRepaired = t;
            if (Number.isNaN(tForeign)) tForeign = tStart; // repaired before we could even see it
            break;
          }
          await sleep(5);
        }
        await cmd;
        expect(Number.isNaN(tRepaired), `round ${round + 1}: not repaired within 10 s`).toBe(false);
        // Proof that the rewrite kept size and entry count (the case a size check cannot see).
        if (legacy && size0) {
          const after = await legacy.info();
          expect([after.size, after.entries]).toEqual([size0.size, size0.entries]);
        }
        latencies.push(tRepaired - tForeign);
        const pre = await rules(ns, f.bin.cli, 'PREROUTING');
        expect(pre[0]).toBe('-A PREROUTING -m comment --comment "edgemesh root chain" -j EDGE-MESH');
        await sleep(300);
      }
      console.log(`${f.backend}: same-size rewrite repaired in ${latencies.map((x) => x.toFixed(0)).join(', ')} ms`);
      expect(Math.max(...latencies)).toBeLessThanOrEqual(REPAIR_BOUND_MS);
      await agent.waitFor((l) => /order-repairs/.test(String(l.msg)), 1000, 'order repair log');
    });

    if (f.bin) {
      const bin = f.bin;
      it('a Felix-like writer insisting on rule 1 for 15 s keeps rule 1, we stay ahead of KUBE-SERVICES, and both sides write at most a couple of times', async () => {
        await f.loadKubeProxy(ns);
        await ns.run(bin.cli, ['-w', '-t', 'nat', '-N', 'cali-PREROUTING']);
        const felixJump = '-m comment --comment "cali:6gwbT8clXdHdC1b1" -j cali-PREROUTING';
        let felixWrites = 0;
        let stop = false;
        // Felix in insert mode: every 200 ms, its jump must be rule 1 of PREROUTING and OUTPUT, or
        // it is put back there in one restore. Bounded: 15 s, at most 100 rounds.
        const felix = (async () => {
          const t0 = performance.now();
          for (let round = 0; round < 100 && !stop && performance.now() - t0 < 15_000; round++) {
            const lines: string[] = [];
            for (const chain of ['PREROUTING', 'OUTPUT']) {
              const rs = await rules(ns, bin.cli, chain);
              if (rs[0] === `-A ${chain} ${felixJump}`) continue;
              if (rs.includes(`-A ${chain} ${felixJump}`)) lines.push(`-D ${chain} ${felixJump}`);
              lines.push(`-I ${chain} 1 ${felixJump}`);
            }
            if (lines.length) {
              await ns.run(bin.restore, ['-w', '--noflush'], { input: `*nat\n${lines.join('\n')}\nCOMMIT\n` });
              felixWrites++;
            }
            await sleep(200);
          }
        })();
        try {
          await sleep(1000); // Felix first, then the agent starts (it inserts at rule 1, above Felix)
          agent = startAgent(ns, args());
          await felix;
        } finally {
          stop = true;
          await felix;
        }
        const ours = written(agent);
        const backend = createBackend(f.backend, 'ipv4', { netns: ns.path });
        const order = await backend.checkOrder();
        const pre = await rules(ns, bin.cli, 'PREROUTING');
        const out = await rules(ns, bin.cli, 'OUTPUT');
        console.log(`${f.backend}: over 15 s Felix wrote ${felixWrites} times, the agent ${ours.length} (${ours.map((l) => l.msg).join(' | ')}); PREROUTING ${pre.map((l) => l.split(' -j ')[1]).join(', ')}`);
        expect(pre[0]).toBe(`-A PREROUTING ${felixJump}`);
        expect(out[0]).toBe(`-A OUTPUT ${felixJump}`);
        for (const chain of [pre, out]) {
          const us = chain.findIndex((l) => l.endsWith('-j EDGE-MESH'));
          const kube = chain.findIndex((l) => l.endsWith('-j KUBE-SERVICES'));
          expect(us).toBeGreaterThan(0);
          expect(us).toBeLessThan(kube);
        }
        expect(order.ok).toBe(true);
        expect(felixWrites).toBeLessThanOrEqual(3);
        expect(ours.length).toBeGreaterThanOrEqual(1); // the initial sync
        expect(ours.length).toBeLessThanOrEqual(2);
      }, 40_000);
    }

    it('bad manifests at start are named and skipped, the good ones applied; --strict-manifests keeps them fatal (exit 2, tables untouched)', async () => {
      await f.loadKubeProxy(ns);
      dir.write('broken.yaml', 'apiVersion: v1\nkind: Service\nmetadata: { name: x, namespace: y }\nspec: { clusterIP: 10.10.0.300 }\n');
      dir.write('garbage.json', '{ not json');
      dir.write('grafana.yaml', serviceYaml({ namespace: 'monitoring', name: 'grafana', clusterIP: '10.10.250.210', labels: { noproxy: 'edgemesh' } }));
      const backend = createBackend(f.backend, 'ipv4', { netns: ns.path });
      const strict = await ns.run(process.execPath, [CLI, ...args(['--once', '--strict-manifests'])], { allowFail: true });
      expect(strict.code).toBe(2);
      expect(strict.stderr.trim().split('\n')).toHaveLength(1);
      expect(strict.stderr).toMatch(/broken\.yaml.*10\.10\.0\.300|garbage\.json/);
      expect((await backend.status()).present).toBe(false);
      agent = startAgent(ns, args());
      await eventually(() => backend.checkOrder(), (o) => o.ok, 15_000, 'rules written despite the bad manifests');
      const skipped = agent.logs.filter((l) => /manifest skipped/.test(String(l.msg)));
      expect(skipped.map((l) => String(l.path).split('/').pop()).sort()).toEqual(['broken.yaml', 'garbage.json']);
      expect(skipped.find((l) => String(l.path).endsWith('broken.yaml'))!.msg).toMatch(/10\.10\.0\.300/);
      const status = await backend.status();
      expect(status.text).toMatch(/monitoring\/grafana|ignored services/);
      if (f.bin) expect((await rules(ns, f.bin.cli, 'EDGE-MESH')).some((l) => l.includes('ignore monitoring/grafana service'))).toBe(true);
    });
  });
}

describeNetns('liveness and readiness while the API server never answers', () => {
  let ns: Netns;
  let agent: AgentProcess | undefined;
  afterEach(async () => {
    if (agent) await agent.stop('SIGKILL');
    agent = undefined;
    await ns?.destroy();
  });
  afterAll(destroyAllNetns);

  it('/healthz stays 200 and /readyz 503 for longer than 2 x sync-period + 30 s; the errors and the time since the last answer show in metrics and status', async () => {
    ns = await Netns.create('health');
    // Nothing listens on 127.0.0.1:9 in the namespace: every list is refused at once.
    agent = startAgent(ns, ['run', '--backend', 'nftables', '--service-cidr', '10.10.0.0/16', '--api-server', 'http://127.0.0.1:9', '--sync-period', '2s', '--metrics-addr', '127.0.0.1:0']);
    const listening = await agent.waitFor((l) => typeof l.port === 'number' && /metrics and health/.test(String(l.msg)), 15_000, 'metrics listener');
    const base = `http://127.0.0.1:${String(listening.port)}`;
    const get = async (path: string) => {
      const r = await ns.run('curl', ['-s', '-m', '5', '-w', '\n%{http_code}', `${base}${path}`], { allowFail: true });
      const lines = r.stdout.split('\n');
      return { code: Number(lines.pop()), body: lines.join('\n') };
    };
    const bound = 2 * 2 + 30; // s
    const t0 = Date.now();
    let checks = 0;
    while (Date.now() - t0 < (bound + 4) * 1000 && checks < 200) {
      const [h, r] = [await get('/healthz'), await get('/readyz')];
      expect(h.code, `healthz after ${Math.round((Date.now() - t0) / 1000)} s: ${h.body}`).toBe(200);
      expect(r.code).toBe(503);
      checks++;
      await sleep(2000);
    }
    expect(Date.now() - t0).toBeGreaterThan(bound * 1000);
    const metrics = (await get('/metrics')).body;
    const errors = Number(/^edgemesh_source_errors_total\{resource="services"\} (\d+)/m.exec(metrics)?.[1] ?? 'NaN');
    expect(errors).toBeGreaterThan(1);
    const since = Number(/^edgemesh_source_seconds_since_answer (\S+)/m.exec(metrics)?.[1] ?? 'NaN');
    expect(since).toBeGreaterThan(bound);
    expect(metrics).toMatch(/^edgemesh_source_synced 0$/m);
    expect(metrics).toMatch(/^edgemesh_sync_pending_seconds 0$/m);
    const st = await ns.run(process.execPath, [CLI, 'status', '--backend', 'nftables', '--metrics-addr', `127.0.0.1:${String(listening.port)}`], { allowFail: true });
    expect(st.stdout).toMatch(/# sync: NOT ready \(first full sync not done\); healthy; last success never/);
    expect(st.stdout).toMatch(/# source api-server: NOT listed yet; no answer in \d+(\.\d+)?s; errors .*services \d+/);
    expect(st.stdout).toMatch(/# last source error \(\d+(\.\d+)?s ago, (services|endpointslices|nodes)\): \S/);
  }, 90_000);

  it('--min-sync-period longer than --sync-period ends the agent with one line and exit 2', async () => {
    ns = await Netns.create('minsync');
    const r = await ns.run(process.execPath, [CLI, 'run', '--backend', 'nftables', '--service-cidr', '10.10.0.0/16', '--services-dir', '/tmp', '--min-sync-period', '5s', '--sync-period', '2s', '--once'], { allowFail: true });
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--min-sync-period "5s": must not exceed --sync-period \(2s\)/);
  });
});
