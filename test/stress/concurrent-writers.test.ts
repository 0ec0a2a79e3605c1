// Concurrent writers: a kube-proxy-like writer rewrites its chains in a loop (iptables modes:
// `iptables-restore -w --noflush` of its full-sync input, EnsureRule of its jumps, and now and
// then a "restart" that deletes its jumps and inserts them again at rule 1; nftables mode: its
// table deleted and re-created in one transaction) while the agent reconciles a services dir
// that changes as fast as it can. At the end: kube-proxy's chains are exactly its last write, ours
// exactly the desired state of the final dir, our jumps rule 1, and no failure stayed unrecovered.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, expect, it } from 'vitest';
import { describeNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { loadableNftFixture } from '../helpers/nft-fixture.js';
import {
  BACKENDS, Churn, flavour, isDesired, kubeJumps, kubeLines, kubeNftVariant, kubeRestoreVariant, normalize, privateLock, PROXY, SERVICE_CIDR,
  STRESS_SECONDS, summary, syncStats, type BackendName,
} from './common.js';

const VARIANTS = 5;

/** The reference listing of kube-proxy's objects after writing variant k into a fresh namespace. */
async function reference(backend: BackendName, k: number, lockEnv: NodeJS.ProcessEnv): Promise<string[] | string> {
  const ref = await Netns.create('ref');
  try {
    if (backend === 'nftables') {
      await ref.run('nft', ['-f', '-'], { input: kubeNftVariant(k) });
      return normalize((await ref.run('nft', ['list', 'table', 'ip', 'kube-proxy'])).stdout);
    }
    const tool = backend === 'iptables-legacy' ? 'legacy' : 'nft';
    await ref.sh('nfacct add ct_state_invalid_dropped_pkts; nfacct add localhost_nps_accepted_pkts', { allowFail: true });
    await ref.run(`iptables-${tool}-restore`, ['-w', '5', '--noflush'], { input: kubeRestoreVariant(k), env: lockEnv });
    return kubeLines((await ref.run(`iptables-${tool}-save`, [], { env: lockEnv })).stdout).filter((l) => !/^-A (PREROUTING|OUTPUT|INPUT|FORWARD|POSTROUTING) /.test(l));
  } finally {
    await ref.destroy();
  }
}

/** The writer: a bounded shell loop in the namespace; prints `W k` after each successful restore and a final tally. */
function writerScript(backend: BackendName, dir: string, seconds: number): string {
  if (backend === 'nftables') {
    return `
end=$(( $(date +%s) + ${seconds} )); i=0; ok=0; fail=0
while [ $(date +%s) -lt $end ] && [ $i -lt 100000 ]; do
  k=$(( i % ${VARIANTS} ))
  if nft -f ${dir}/v$k.nft 2>>${dir}/err; then ok=$((ok+1)); echo "W $k"; else fail=$((fail+1)); fi
  i=$((i+1))
done
echo "TALLY commits=$ok failures=$fail"
`;
  }
  const tool = backend === 'iptables-legacy' ? 'legacy' : 'nft';
  const jump = `-m comment --comment "kubernetes service portals" -j KUBE-SERVICES`;
  return `
ipt=iptables-${tool}; restore=iptables-${tool}-restore
end=$(( $(date +%s) + ${seconds} )); i=0; restores=0; inserts=0; deletes=0; restarts=0; fail=0
while [ $(date +%s) -lt $end ] && [ $i -lt 100000 ]; do
  k=$(( i % ${VARIANTS} ))
  if $restore -w 5 --noflush < ${dir}/v$k.txt 2>>${dir}/err; then restores=$((restores+1)); echo "W $k"; else fail=$((fail+1)); fi
  if [ $(( i % 7 )) -eq 6 ]; then
    # kube-proxy restarting: its jumps go and come back at rule 1
    restarts=$((restarts+1))
    for c in PREROUTING OUTPUT; do
      if $ipt -w 5 -t nat -D $c ${jump} 2>>${dir}/err; then deletes=$((deletes+1)); else fail=$((fail+1)); fi
    done
  fi
  # EnsureRule(Prepend): insert at 1 only when missing
  for c in PREROUTING OUTPUT; do
    if ! $ipt -w 5 -t nat -C $c ${jump} 2>/dev/null; then
      if $ipt -w 5 -t nat -I $c 1 ${jump} 2>>${dir}/err; then inserts=$((inserts+1)); else fail=$((fail+1)); fi
    fi
  done
  i=$((i+1))
done
echo "TALLY commits=$((restores+inserts+deletes)) restores=$restores inserts=$inserts deletes=$deletes restarts=$restarts failures=$fail"
`;
}

for (const backend of BACKENDS) {
  describeNetns(`stress: concurrent writers with ${backend}`, () => {
    let ns: Netns | undefined;
    let agent: AgentProcess | undefined;
    let churn: Churn | undefined;
    let lock: ReturnType<typeof privateLock> | undefined;
    let tmp: string | undefined;
    afterEach(async () => {
      await churn?.stop();
      if (agent) await agent.stop('SIGKILL');
      await ns?.destroy();
      churn?.destroy();
      lock?.destroy();
      if (tmp) rmSync(tmp, { recursive: true, force: true });
      agent = churn = lock = ns = tmp = undefined;
    });
    afterAll(destroyAllNetns);

    it(`kube-proxy rewriting its rules for ${STRESS_SECONDS}s while the agent reconciles a churning services dir: nobody loses a rule`, { timeout: STRESS_SECONDS * 1000 + 90_000 }, async () => {
      lock = privateLock();
      const env = lock.env;
      const fl = flavour(backend, () => env);
      tmp = mkdtempSync(join(tmpdir(), 'edgemesh-kp-'));
      const refs: (string[] | string)[] = [];
      for (let k = 0; k < VARIANTS; k++) {
        if (backend === 'nftables') writeFileSync(join(tmp, `v${k}.nft`), kubeNftVariant(k));
        else writeFileSync(join(tmp, `v${k}.txt`), kubeRestoreVariant(k));
        refs.push(await reference(backend, k, env));
      }
      ns = await Netns.create('conc');
      if (backend === 'nftables') await ns.run('nft', ['-f', '-'], { input: loadableNftFixture() });
      else {
        const tool = backend === 'iptables-legacy' ? 'legacy' : 'nft';
        await ns.sh('nfacct add ct_state_invalid_dropped_pkts; nfacct add localhost_nps_accepted_pkts', { allowFail: true });
        await ns.run(`iptables-${tool}-restore`, ['-w', '5', '--noflush'], { input: kubeRestoreVariant(0), env });
        await ns.run(`iptables-${tool}-restore`, ['-w', '5', '--noflush'], { input: kubeJumps(), env });
      }

      churn = new Churn(0xc0ffee ^ backend.length);
      agent = startAgent(
        ns,
        ['run', '--backend', backend, '--service-cidr', SERVICE_CIDR, '--proxy-addr', PROXY, '--services-dir', churn.dir.path,
          '--min-sync-period', '0', '--order-check-period', '100ms', '--metrics-addr', 'off'],
        env,
      );
      await eventually(() => fl.ours(ns!), (o) => isDesired(o, churn!.expected), 15_000, 'initial sync');

      // Both writers at once, bounded in time (and count, in the script).
      const writer = ns.spawn('setpriv', ['--pdeathsig', 'KILL', '--', 'bash', '-c', writerScript(backend, tmp, STRESS_SECONDS)], { env, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      writer.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      const writerDone = new Promise<number | null>((r) => writer.on('exit', (c) => r(c)));
      churn.start(15, STRESS_SECONDS * 1000);
      const code = await writerDone;
      await churn.stop();
      expect(code, out.slice(-2000)).toBe(0);

      const tally = /TALLY (.*)/.exec(out)?.[1] ?? '';
      const last = [...out.matchAll(/^W (\d+)$/gm)].at(-1)?.[1];
      expect(last, out.slice(-500)).toBeDefined();
      const failures = Number(/failures=(\d+)/.exec(tally)?.[1]);
      const errText = (await ns.sh(`cat ${tmp}/err 2>/dev/null || true`)).stdout;
      // kube-proxy's own writes never failed because of us (every restore, -I and -D succeeded).
      expect(failures, errText.slice(-2000)).toBe(0);

      // kube-proxy's chains: exactly its last write.
      const kube = async () =>
        backend === 'nftables'
          ? normalize((await ns!.run('nft', ['list', 'table', 'ip', 'kube-proxy'])).stdout)
          : kubeLines((await ns!.run(`iptables-${backend === 'iptables-legacy' ? 'legacy' : 'nft'}-save`, [], { env })).stdout);
      const expectedKube = refs[Number(last)]!;
      const kubeNow = async () => {
        const k = await kube();
        if (typeof k === 'string') return k;
        // The jumps kube-proxy keeps in built-in chains: once each (nat PREROUTING/OUTPUT among them).
        const builtin = k.filter((l) => /^-A (PREROUTING|OUTPUT|INPUT|FORWARD|POSTROUTING) /.test(l));
        const natJumps = builtin.filter((l) => / -j KUBE-SERVICES$/.test(l) && /^-A (PREROUTING|OUTPUT) -m comment --comment "kubernetes service portals"/.test(l));
        expect(natJumps).toHaveLength(2);
        return k.filter((l) => !builtin.includes(l));
      };
      expect(await kubeNow()).toEqual(expectedKube);

      // Ours: exactly the desired state of the final dir, jumps at rule 1 (after at most a few order checks).
      const final = churn.expected;
      const conv = await eventually(() => fl.ours(ns!), (o) => isDesired(o, final), 10_000, 'final state');
      expect(await kubeNow()).toEqual(expectedKube);

      // No error escaped: alive, nothing on stderr, every failed sync followed by a successful one.
      expect(agent.child.exitCode).toBeNull();
      expect(agent.stderr.trim()).toBe('');
      const stats = syncStats(agent.logs);
      const lastFail = agent.logs.map((l) => String(l.msg)).lastIndexOf(agent.logs.map((l) => String(l.msg)).filter((m) => m.startsWith('sync failed')).at(-1) ?? '\u0000');
      if (lastFail >= 0) expect(agent.logs.slice(lastFail + 1).some((l) => String(l.msg).startsWith('sync ('))).toBe(true);
      expect(stats.writes).toBeGreaterThan(0);

      summary(`concurrent-writers ${backend}`, {
        seconds: STRESS_SECONDS,
        kubeProxy: `{${tally}}`,
        kubeProxyLastGeneration: last,
        dirWrites: churn.writes,
        agentCommits: stats.writes,
        commitAttempts: stats.attempts,
        retries: stats.retries,
        lockWaitMsTotal: stats.lockWaitMs,
        lockWaitMsMax: stats.maxLockWaitMs,
        orderRepairs: stats.orderRepairs,
        syncFailuresRecovered: stats.failures,
        finalConvergeMs: conv.ms,
      });
    });
  });
}
