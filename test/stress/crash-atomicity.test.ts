// Crash atomicity: kill -9 the agent at random moments while the services dir changes every few
// ms (syncs in flight), many times per backend. After each kill: the whole table parses, our
// chains hold exactly the desired state of SOME services-dir state written during the run (each
// state flips many RETURNs at once, so a half-applied transaction would match none), our jumps
// sit once at rule 1, kube-proxy's rules are untouched; a restart converges within 2 s; and
// `edgemesh-agent cleanup` after a kill leaves the tables exactly as before the agent ever ran.
import { afterAll, afterEach, expect, it } from 'vitest';
import { describeNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { CLI, startAgent, type AgentProcess } from '../helpers/agent.js';
import { loadKubeProxyIptables } from '../helpers/fixtures.js';
import { loadKubeProxyNftables } from '../helpers/nft-fixture.js';
import { BACKENDS, Churn, CRASH_KILLS, flavour, isDesired, kubeLines, normalize, privateLock, PROXY, rng, SERVICE_CIDR, sleep, summary, type Ours } from './common.js';

/**
 * The figure for a restart, measured from spawn to the converged table: the 95th
 * percentile must meet it; every single restart must meet it with slack (two shared cores, other
 * jobs on the machine: one restart in 300 once took 2.3 s while p50 was 0.44 s).
 */
const CONVERGE_MS = 2_000;
const CONVERGE_MAX_MS = 5_000;
const CLEANUP_EVERY = 10;

for (const backend of BACKENDS) {
  describeNetns(`stress: crash atomicity with ${backend}`, () => {
    let ns: Netns | undefined;
    let agent: AgentProcess | undefined;
    let churn: Churn | undefined;
    let lock: ReturnType<typeof privateLock> | undefined;
    afterEach(async () => {
      await churn?.stop();
      if (agent) await agent.stop('SIGKILL');
      await ns?.destroy();
      churn?.destroy();
      lock?.destroy();
      agent = churn = lock = ns = undefined;
    });
    afterAll(destroyAllNetns);

    it(`kill -9 during syncs ${CRASH_KILLS} times: never a half-written table, restarts converge within 2 s (p95), cleanup leaves no trace`, { timeout: CRASH_KILLS * 6_000 + 60_000 }, async () => {
      lock = privateLock();
      const env = lock.env;
      const fl = flavour(backend, () => env);
      ns = await Netns.create('crash');
      if (backend === 'nftables') await loadKubeProxyNftables(ns);
      else await loadKubeProxyIptables(ns, backend === 'iptables-legacy' ? 'legacy' : 'nft');
      const pristine = await fl.dump(ns);
      const kubeOnly = async () => (backend === 'nftables' ? normalize((await ns!.run('nft', ['list', 'table', 'ip', 'kube-proxy'])).stdout) : kubeLines(await fl.dump(ns!)));
      const kubeBefore = await kubeOnly();

      churn = new Churn(0x5eed ^ backend.length);
      const random = rng(0xdead ^ backend.length);
      const args = ['run', '--backend', backend, '--service-cidr', SERVICE_CIDR, '--proxy-addr', PROXY, '--services-dir', churn.dir.path,
        '--min-sync-period', '0', '--order-check-period', '200ms', '--metrics-addr', 'off'];

      /** Starts the agent on a quiet dir and waits for the dir's state; returns ms from spawn. */
      const restart = async (): Promise<number> => {
        const expected = churn!.expected;
        const t0 = Date.now();
        agent = startAgent(ns!, args, env);
        let o: Ours | undefined;
        for (let i = 0; i < 2000 && Date.now() - t0 < 15_000; i++) {
          o = await fl.ours(ns!);
          if (isDesired(o, expected)) return Date.now() - t0;
          if (agent.child.exitCode !== null) break;
          await sleep(10);
        }
        throw new Error(`agent did not converge within 15 s: ${JSON.stringify(o)}\nstderr: ${agent.stderr.slice(-1000)}\nlogs: ${agent.logs.slice(-5).map((l) => JSON.stringify(l)).join('\n')}`);
      };

      const converge: number[] = [await restart()];
      let syncsSeenAtKill = 0;
      let absentAfterKill = 0;
      let cleanups = 0;
      const matched = new Set<string>();
      for (let kill = 1; kill <= CRASH_KILLS; kill++) {
        // Let it work on a dir changing every 0..8 ms, then kill -9 at a random moment.
        churn.start(8, 10_000);
        await sleep(50 + Math.floor(random() * 1200));
        const writesBefore = agent!.logs.filter((l) => String(l.msg).startsWith('sync (')).length;
        agent!.child.kill('SIGKILL');
        await agent!.exited;
        if (writesBefore > 0) syncsSeenAtKill++;
        await churn.stop();

        // The table parses, ours is exactly one recorded state, jumps once at 1, kube-proxy untouched.
        const o = await fl.ours(ns);
        const got = o.edgeMesh?.join('\n');
        expect(got !== undefined && churn.seen.has(got), `kill ${kill}: EDGE-MESH is no state ever written:\n${got}`).toBe(true);
        expect(o.edgeMeshTcp, `kill ${kill}`).toEqual([`dnat ${PROXY}`]);
        expect(o.jumps, `kill ${kill}`).toEqual({ PREROUTING: [1], OUTPUT: [1] });
        expect(await kubeOnly(), `kill ${kill}: kube-proxy's rules changed`).toEqual(kubeBefore);
        matched.add(got!);
        if (o.edgeMesh === undefined) absentAfterKill++;

        if (kill % CLEANUP_EVERY === 0 || kill === CRASH_KILLS) {
          const r = await ns.run(process.execPath, [CLI, 'cleanup', '--backend', backend], { env });
          expect(r.code).toBe(0);
          expect(await fl.dump(ns), `cleanup after kill ${kill}`).toBe(pristine);
          cleanups++;
        }
        if (kill < CRASH_KILLS) converge.push(await restart());
      }
      agent = undefined;

      const sorted = [...converge].sort((a, b) => a - b);
      const p50 = sorted[Math.floor(sorted.length / 2)]!;
      const p95 = sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.95) - 1)]!;
      const max = sorted.at(-1)!;
      summary(`crash-atomicity ${backend}`, {
        kills: CRASH_KILLS,
        killsAfterSyncs: syncsSeenAtKill,
        distinctStatesFoundAfterKills: matched.size,
        statesWritten: churn.writes,
        halfWritten: 0,
        cleanupsClean: cleanups,
        restartConvergeMsP50: p50,
        restartConvergeMsP95: p95,
        restartConvergeMsMax: max,
      });
      expect(absentAfterKill).toBe(0);
      expect(p95, `restart convergence times: ${sorted.join(',')}`).toBeLessThanOrEqual(CONVERGE_MS);
      expect(max, `restart convergence times: ${sorted.join(',')}`).toBeLessThanOrEqual(CONVERGE_MAX_MS);
    });
  });
}
