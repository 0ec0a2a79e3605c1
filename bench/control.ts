// Control plane, part 1: a full sync of N ignore rules into a nat table that already holds
// kube-proxy's rules, by each of our backends (in-process, against the namespace) and by the
// peers' methods in the same namespace: one iptables process per rule with -C first (capped and
// extrapolated), one iptables-restore --noflush, one nft -f. Variants are interleaved, rotating
// their order every round; the table is cleaned between measurements (not timed).
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Netns } from '../src/dev/netns.js';
import { createBackend } from '../src/netfilter/factory.js';
import type { NatBackend } from '../src/netfilter/types.js';
import { median } from './results.js';
import { desiredSet, kubeProxyChunks, log, nftInput, perRuleScript, restoreInput, runMarked, timeScript } from './lib.js';

export type Flavor = 'legacy' | 'nft';

export interface KubeNs {
  ns: Netns;
  flavor: Flavor;
  services: number;
  loadMs: number;
}

/** A namespace with kube-proxy's table of `services` services loaded through iptables-<flavor>-restore. */
export async function kubeNamespace(label: string, flavor: Flavor, services: number): Promise<KubeNs> {
  const ns = await Netns.create(label);
  const t0 = performance.now();
  for (const chunk of kubeProxyChunks(services)) {
    await ns.run(`iptables-${flavor}-restore`, ['-w', '--noflush'], { input: chunk, timeoutMs: 120_000 });
  }
  const loadMs = performance.now() - t0;
  log(`${ns.name}: kube-proxy table of ${services} services loaded with iptables-${flavor}-restore in ${(loadMs / 1000).toFixed(1)} s`);
  return { ns, flavor, services, loadMs };
}

export interface FullSyncSample {
  variant: string;
  flavor: Flavor;
  kube: number;
  n: number;
  ms: number[];
}

export interface PerRuleSample {
  flavor: Flavor;
  kube: number;
  /** Chains, the two fixed rules and the jumps, with -C first. */
  setupMs: number[];
  /** Per ignore rule (-C + -I), over the first `rulesDone` rules. */
  perRuleMs: number[];
  rulesDone: number[];
}

export interface FullSyncResult {
  samples: FullSyncSample[];
  perRule: PerRuleSample[];
  cap: { rules: number; ms: number };
}

interface Variant {
  name: string;
  flavor: Flavor;
  run: (n: number) => Promise<number>;
}

async function cleanAll(backends: NatBackend[]): Promise<void> {
  for (const b of backends) await b.cleanup();
}

/**
 * Checks that a variant left the intended number of ignore rules (+1 catch-all) in EDGE-MESH;
 * nftables: ignored addresses in the set, plus EDGE-MESH's rules other than the set lookup.
 */
async function countRules(k: KubeNs, variant: string): Promise<number> {
  if (variant.includes('nftables') || variant.startsWith('nft -f')) {
    const r = await k.ns.run('nft', ['-j', 'list', 'table', 'ip', 'edgemesh'], { timeoutMs: 60_000 });
    const items = (JSON.parse(r.stdout) as { nftables: { set?: { name: string; elem?: unknown[] }; rule?: { chain: string; expr: unknown[] } }[] }).nftables;
    const elements = items.find((i) => i.set?.name === 'ignored')?.set?.elem?.length ?? 0;
    const rules = items.filter((i) => i.rule?.chain === 'EDGE-MESH' && !JSON.stringify(i.rule.expr).includes('"@ignored"')).length;
    return elements + rules;
  }
  const r = await k.ns.run(`iptables-${k.flavor}`, ['-w', '-t', 'nat', '-S', 'EDGE-MESH'], { timeoutMs: 60_000 });
  return r.stdout.split('\n').filter((l) => l.startsWith('-A EDGE-MESH ')).length;
}

export async function measureFullSync(kubes: KubeNs[], sizes: number[], rounds: number, cap: { rules: number; ms: number }, tmp: string): Promise<FullSyncResult> {
  const samples = new Map<string, FullSyncSample>();
  const perRule: PerRuleSample[] = [];
  const sample = (variant: string, k: KubeNs, n: number): FullSyncSample => {
    const key = `${variant}|${k.services}|${n}`;
    let s = samples.get(key);
    if (!s) samples.set(key, (s = { variant, flavor: k.flavor, kube: k.services, n, ms: [] }));
    return s;
  };
  for (const k of kubes) {
    const path = k.ns.path;
    const cleaners: NatBackend[] = [];
    const variants: Variant[] = [];
    const writeInput = (name: string, text: string) => {
      const f = join(tmp, `${k.ns.name}-${name}`);
      writeFileSync(f, text);
      return f;
    };
    if (k.flavor === 'legacy') {
      const ours = createBackend('iptables-legacy', 'ipv4', { netns: path });
      cleaners.push(ours);
      variants.push({ name: 'ours iptables-legacy', flavor: 'legacy', run: async (n) => timed(() => ours.sync(desiredSet(n))) });
      variants.push({ name: 'iptables-legacy-restore', flavor: 'legacy', run: async (n) => timeScript(k.ns, `iptables-legacy-restore -w --noflush < ${writeInput(`r${n}`, restoreInput(n))}`, 'iptables-legacy-restore') });
    } else {
      const oursNft = createBackend('iptables-nft', 'ipv4', { netns: path });
      const oursNftables = createBackend('nftables', 'ipv4', { netns: path });
      cleaners.push(oursNft, oursNftables);
      variants.push({ name: 'ours iptables-nft', flavor: 'nft', run: async (n) => timed(() => oursNft.sync(desiredSet(n))) });
      variants.push({ name: 'ours nftables', flavor: 'nft', run: async (n) => timed(() => oursNftables.sync(desiredSet(n))) });
      variants.push({ name: 'iptables-nft-restore', flavor: 'nft', run: async (n) => timeScript(k.ns, `iptables-nft-restore -w --noflush < ${writeInput(`r${n}`, restoreInput(n))}`, 'iptables-nft-restore') });
      variants.push({ name: 'nft -f', flavor: 'nft', run: async (n) => timeScript(k.ns, `nft -f ${writeInput(`f${n}`, nftInput(n))}`, 'nft -f') });
    }
    const pr: PerRuleSample = { flavor: k.flavor, kube: k.services, setupMs: [], perRuleMs: [], rulesDone: [] };
    perRule.push(pr);
    await cleanAll(cleaners);
    for (let round = 0; round < rounds; round++) {
      for (const n of sizes) {
        // Rotate the order of the variants every round and size (A B C, B C A, ...).
        const shift = (round + sizes.indexOf(n)) % variants.length;
        const order = [...variants.slice(shift), ...variants.slice(0, shift)];
        for (const v of order) {
          const ms = await v.run(n);
          const got = await countRules(k, v.name);
          if (got !== n + 1) throw new Error(`${v.name}: EDGE-MESH holds ${got} rules after a sync of ${n} (+1 catch-all expected)`);
          sample(v.name, k, n).ms.push(ms);
          await cleanAll(cleaners);
        }
      }
      // The per-rule method, once per round per table (its per-rule cost does not depend on N
      // while N is small next to the table; it is extrapolated to each N).
      const r = await perRuleRun(k, cap, tmp);
      pr.setupMs.push(r.setupMs);
      pr.perRuleMs.push(r.perRuleMs);
      pr.rulesDone.push(r.done);
      await cleanAll(cleaners);
      log(`full sync: ${k.flavor} on ${k.services} services, round ${round + 1}/${rounds} done`);
    }
  }
  return { samples: [...samples.values()], perRule, cap };
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function perRuleRun(k: KubeNs, cap: { rules: number; ms: number }, tmp: string): Promise<{ setupMs: number; perRuleMs: number; done: number }> {
  const stop = join(tmp, `${k.ns.name}-stop`);
  rmSync(stop, { force: true });
  let tB = NaN;
  let timer: NodeJS.Timeout | undefined;
  const r = await runMarked(k.ns, perRuleScript(`iptables-${k.flavor}`, cap.rules, stop), {
    timeoutMs: cap.ms + 60_000,
    onMark: (m, t) => {
      if (m === 'B') {
        tB = t;
        timer = setTimeout(() => writeFileSync(stop, ''), cap.ms);
      }
    },
  });
  clearTimeout(timer);
  rmSync(stop, { force: true });
  const S = r.marks.find((m) => m.mark === 'S');
  const rs = r.marks.filter((m) => m.mark === 'R');
  if (r.code !== 0 || !S || Number.isNaN(tB) || rs.length === 0) throw new Error(`per-rule iptables-${k.flavor} failed (exit ${r.code}): ${r.stderr.slice(0, 300)}`);
  return { setupMs: tB - S.t, perRuleMs: (rs[rs.length - 1]!.t - tB) / rs.length, done: rs.length };
}

/** The per-rule method's time for N rules: setup + N x per-rule (medians), extrapolated linearly. */
export function perRuleEstimate(p: PerRuleSample, n: number): number {
  return median(p.setupMs) + n * median(p.perRuleMs);
}

