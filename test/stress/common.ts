// Shared pieces of the stress suites: knobs, the services-dir churn with its oracle, canonical
// views of our chains per backend, kube-proxy writers, log statistics.
//
// Knobs: EDGEMESH_STRESS_SECONDS (concurrent writers, per backend; default 8, `npm run
// test:stress` 60), EDGEMESH_CRASH_KILLS (kill -9 per backend; default 10, test:stress 100),
// EDGEMESH_FUZZ_INPUTS (mutated inputs per seed; default 150, test:stress 1500).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Netns } from '../helpers/netns.js';
import { ServicesDir, serviceYaml, sliceYaml } from '../helpers/manifests.js';
import { IPTABLES_JUMPS_FIXTURE, IPTABLES_RESTORE_FIXTURE, readFixture } from '../helpers/fixtures.js';
import { loadableNftFixture } from '../helpers/nft-fixture.js';
import { compareIps } from '../../src/net.js';

const num = (name: string, dflt: number, min: number, max: number): number => {
  const v = Number(process.env[name] ?? dflt);
  if (!Number.isFinite(v) || v < min || v > max) throw new Error(`${name}=${process.env[name]}: expected a number in [${min}, ${max}]`);
  return v;
};
export const STRESS_SECONDS = num('EDGEMESH_STRESS_SECONDS', 8, 1, 3600);
export const CRASH_KILLS = Math.round(num('EDGEMESH_CRASH_KILLS', 10, 1, 10_000));
export const FUZZ_INPUTS = Math.round(num('EDGEMESH_FUZZ_INPUTS', 150, 1, 1_000_000));

export type BackendName = 'iptables-legacy' | 'iptables-nft' | 'nftables';
export const BACKENDS: readonly BackendName[] = ['iptables-legacy', 'iptables-nft', 'nftables'];

export const SERVICE_CIDR = '10.10.0.0/16';
export const PROXY = '169.254.96.16:40001';

/** Seeded PRNG (mulberry32): every run of a seed makes the same choices. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- the services dir and its oracle ----

export const STRESS_SERVICES = 40;
const HEADLESS_POOL = 8;

export interface DirState {
  /** noproxy=edgemesh on stress/svc-NN. */
  noproxy: boolean[];
  /** Endpoint addresses of the ignored headless service stress/hl (10.10.2.x). */
  endpoints: number[];
}

const svcIp = (i: number) => `10.10.1.${i + 1}`;
const pad = (i: number) => String(i).padStart(2, '0');

/** The canonical EDGE-MESH list the contract prescribes for a state (independent of src/intent/desired.ts). */
export function expectedEdgeMesh(s: DirState): string[] {
  const out = ['ignore 10.10.0.1 default/kubernetes', 'ignore 10.10.0.3 kube-system/coredns'];
  for (const e of [...s.endpoints].sort((a, b) => a - b)) out.push(`ignore 10.10.2.${e} stress/hl`);
  s.noproxy.forEach((on, i) => on && out.push(`ignore ${svcIp(i)} stress/svc-${pad(i)}`));
  out.push(`proxy ${SERVICE_CIDR}`);
  return out;
}

function stateYaml(s: DirState): string {
  const docs: string[] = [];
  docs.push(serviceYaml({ namespace: 'stress', name: 'hl', clusterIP: 'None', labels: { noproxy: 'edgemesh' } }));
  docs.push(sliceYaml('stress', 'hl', s.endpoints.map((e) => `10.10.2.${e}`)));
  s.noproxy.forEach((on, i) => docs.push(serviceYaml({ namespace: 'stress', name: `svc-${pad(i)}`, clusterIP: svcIp(i), labels: on ? { noproxy: 'edgemesh', app: `a${i}` } : { app: `a${i}` } })));
  return docs.join('---\n');
}

/**
 * Rewrites the services dir as fast as asked. Everything that changes lives in ONE file replaced
 * atomically (write + rename), so every scan sees a state that was written as a whole: the
 * recorded states are exactly the states the agent can have been asked for.
 */
export class Churn {
  readonly dir = new ServicesDir();
  /** Canonical EDGE-MESH list of every state written (joined by \n). */
  readonly seen = new Set<string>();
  writes = 0;
  state: DirState;
  private readonly random: () => number;
  private loop: Promise<void> | undefined;
  private stopFlag = false;

  constructor(seed: number) {
    this.random = rng(seed);
    this.dir.write('kubernetes.yaml', serviceYaml({ namespace: 'default', name: 'kubernetes', clusterIP: '10.10.0.1', ports: [{ name: 'https', port: 443, targetPort: 6443 }] }));
    this.dir.write('coredns.yaml', serviceYaml({ namespace: 'kube-system', name: 'coredns', clusterIP: '10.10.0.3', labels: { 'k8s-app': 'kube-dns' }, ports: [{ name: 'dns-tcp', port: 53 }] }));
    this.state = { noproxy: Array.from({ length: STRESS_SERVICES }, (_, i) => i % 3 === 0), endpoints: [1, 2] };
    this.write(this.state);
  }

  get expected(): string[] {
    return expectedEdgeMesh(this.state);
  }

  /** One step: flips a random number of noproxy labels (1..half) and redraws the headless endpoints. */
  step(): void {
    const noproxy = [...this.state.noproxy];
    const flips = 1 + Math.floor(this.random() * (STRESS_SERVICES / 2));
    for (let k = 0; k < flips; k++) {
      const i = Math.floor(this.random() * STRESS_SERVICES);
      noproxy[i] = !noproxy[i];
    }
    const endpoints = Array.from({ length: HEADLESS_POOL }, (_, i) => i + 1).filter(() => this.random() < 0.4);
    this.write({ noproxy, endpoints });
  }

  private write(s: DirState): void {
    this.seen.add(expectedEdgeMesh(s).join('\n'));
    this.dir.write('stress.yaml', stateYaml(s));
    this.state = s;
    this.writes++;
  }

  /** Steps every 0..maxGapMs (random) until stop(); bounded by `untilMs` from now. */
  start(maxGapMs: number, untilMs: number): void {
    if (this.loop) return;
    this.stopFlag = false;
    const end = Date.now() + untilMs;
    this.loop = (async () => {
      while (!this.stopFlag && Date.now() < end) {
        this.step();
        await sleep(Math.floor(this.random() * maxGapMs));
      }
    })();
  }

  async stop(): Promise<void> {
    this.stopFlag = true;
    await this.loop;
    this.loop = undefined;
  }

  destroy(): void {
    this.dir.destroy();
  }
}

// ---- canonical views of what we own ----

export interface Ours {
  /** EDGE-MESH rules canonical ("ignore IP ns/name", "proxy CIDR"), or undefined when the chain is missing. */
  edgeMesh: string[] | undefined;
  edgeMeshTcp: string[] | undefined;
  /** iptables: positions (1-based) of our jump in PREROUTING / OUTPUT and how many there are. nftables: the hook chains' rules. */
  jumps: { PREROUTING: number[]; OUTPUT: number[] };
}

const IPT_IGNORE = /^-A EDGE-MESH -d (\S+)\/32 -m comment --comment "ignore (\S+) service" -j RETURN$/;
const IPT_PROXY = /^-A EDGE-MESH -d (\S+) -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP$/;
const IPT_DNAT = /^-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination (\S+)$/;
const IPT_ROOT = '-m comment --comment "edgemesh root chain" -j EDGE-MESH';

/** Our chains as `iptables-save -t nat` shows them. */
export function oursFromSave(save: string): Ours {
  const lines = save.split('\n');
  const has = (c: string) => lines.some((l) => l.startsWith(`:${c} `));
  const edgeMesh = has('EDGE-MESH') ? [] as string[] : undefined;
  const edgeMeshTcp = has('EDGE-MESH-TCP') ? [] as string[] : undefined;
  const jumps = { PREROUTING: [] as number[], OUTPUT: [] as number[] };
  const pos = { PREROUTING: 0, OUTPUT: 0 };
  for (const l of lines) {
    for (const c of ['PREROUTING', 'OUTPUT'] as const) {
      if (l.startsWith(`-A ${c} `)) {
        pos[c]++;
        if (l === `-A ${c} ${IPT_ROOT}`) jumps[c].push(pos[c]);
      }
    }
    let m;
    if (l.startsWith('-A EDGE-MESH ')) {
      if ((m = IPT_IGNORE.exec(l))) edgeMesh?.push(`ignore ${m[1]} ${m[2]}`);
      else if ((m = IPT_PROXY.exec(l))) edgeMesh?.push(`proxy ${m[1]}`);
      else edgeMesh?.push(`? ${l}`);
    } else if (l.startsWith('-A EDGE-MESH-TCP ')) {
      const dnat = IPT_DNAT.exec(l);
      edgeMeshTcp?.push(dnat ? `dnat ${dnat[1]}` : `? ${l}`);
    }
  }
  return { edgeMesh, edgeMeshTcp, jumps };
}

/**
 * Our chains as `nft list table ip edgemesh` shows them (empty text: no table). The rule that
 * looks up the ignore set stands for the set's elements, "ignore IP ns/name" each, in the
 * desired state's order (by namespace, name, address).
 */
export function oursFromNft(text: string): Ours {
  const chains = new Map<string, string[]>();
  let cur: string[] | undefined;
  const set = /\tset ignored \{\n\t\ttype ipv4_addr\n\t\tcounter\n(?:\t\telements = \{ ([^}]*) \}\n)?\t\}/.exec(text);
  const elements = (set?.[1] ?? '')
    .split(/,\s+/)
    .filter((e) => e)
    .map((e) => {
      const m = /^(\S+) counter packets \d+ bytes \d+ comment "ignore (\S+)\/(\S+) service"$/.exec(e.trim());
      return m ? { ns: m[2]!, name: m[3]!, ip: m[1]!, text: `ignore ${m[1]} ${m[2]}/${m[3]}` } : { ns: '', name: '', ip: '', text: `? element ${e.trim()}` };
    })
    .sort((a, b) => (a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : compareIps(a.ip || '0.0.0.0', b.ip || '0.0.0.0')))
    .map((e) => e.text);
  for (const raw of text.split('\n')) {
    const l = raw.trim();
    const m = /^chain (\S+) \{$/.exec(l);
    if (m) {
      cur = [];
      chains.set(m[1]!, cur);
    } else if (l === '}') cur = undefined;
    else if (cur && l && !l.startsWith('type ')) cur.push(l.replace(/packets \d+ bytes \d+/, 'packets 0 bytes 0'));
  }
  const lookup = 'ip daddr @ignored counter packets 0 bytes 0 return comment "ignored services"';
  const canon = (l: string): string => {
    let m;
    if ((m = /^ip daddr (\S+) meta l4proto tcp counter packets 0 bytes 0 jump EDGE-MESH-TCP comment "tcp service proxy"$/.exec(l))) return `proxy ${m[1]}`;
    if ((m = /^meta l4proto tcp counter packets 0 bytes 0 dnat to (\S+) comment "edgemesh tcp proxy"$/.exec(l))) return `dnat ${m[1]}`;
    return `? ${l}`;
  };
  const root = 'counter packets 0 bytes 0 jump EDGE-MESH comment "edgemesh root chain"';
  const hook = (c: string) => (chains.get(c) ?? []).flatMap((l, i) => (l === root ? [i + 1] : []));
  return {
    edgeMesh: chains.get('EDGE-MESH')?.flatMap((l) => (l === lookup && set ? elements : [canon(l)])),
    edgeMeshTcp: chains.get('EDGE-MESH-TCP')?.map(canon),
    jumps: { PREROUTING: hook('prerouting'), OUTPUT: hook('output') },
  };
}

export interface Flavour {
  backend: BackendName;
  /** Full dump for before/after comparisons (normalised: no comments, counters zeroed). */
  dump(ns: Netns): Promise<string>;
  /** Our chains, and a check that the whole table parses (throws when it does not). */
  ours(ns: Netns): Promise<Ours>;
}

export function normalize(dump: string): string {
  return dump
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]').replace(/packets \d+ bytes \d+/g, 'packets 0 bytes 0'))
    .join('\n');
}

const iptFlavour = (backend: 'iptables-legacy' | 'iptables-nft', tool: 'legacy' | 'nft', env: () => NodeJS.ProcessEnv): Flavour => ({
  backend,
  dump: async (ns) => normalize((await ns.run(`iptables-${tool}-save`, [], { env: env() })).stdout),
  async ours(ns) {
    const save = await ns.run(`iptables-${tool}-save`, [], { env: env() }); // rejects on a nonzero exit
    // The whole dump must also parse back (all tables, every rule): --test builds without committing.
    await ns.run(`iptables-${tool}-restore`, ['--test', '-w', '5'], { input: save.stdout, env: env() });
    const nat = save.stdout.split('\n*').find((t) => t.startsWith('nat\n') || t.startsWith('*nat\n')) ?? '';
    return oursFromSave(nat);
  },
});

export function flavour(backend: BackendName, env: () => NodeJS.ProcessEnv = () => process.env): Flavour {
  if (backend === 'iptables-legacy') return iptFlavour(backend, 'legacy', env);
  if (backend === 'iptables-nft') return iptFlavour(backend, 'nft', env);
  return {
    backend,
    dump: async (ns) => normalize((await ns.run('nft', ['list', 'ruleset'])).stdout),
    async ours(ns) {
      await ns.run('nft', ['list', 'ruleset']); // the whole ruleset lists (rejects on a nonzero exit)
      const t = await ns.run('nft', ['list', 'table', 'ip', 'edgemesh'], { allowFail: true });
      if (t.code !== 0) return { edgeMesh: undefined, edgeMeshTcp: undefined, jumps: { PREROUTING: [], OUTPUT: [] } };
      await ns.run('nft', ['-c', '-f', '-'], { input: t.stdout }); // and our table parses back
      return oursFromNft(t.stdout);
    },
  };
}

/** Our chains exactly as desired for `expected`, jumps once each at rule 1. */
export function isDesired(o: Ours, expected: readonly string[]): boolean {
  return (
    JSON.stringify(o.edgeMesh) === JSON.stringify(expected) &&
    JSON.stringify(o.edgeMeshTcp) === JSON.stringify([`dnat ${PROXY}`]) &&
    JSON.stringify(o.jumps) === JSON.stringify({ PREROUTING: [1], OUTPUT: [1] })
  );
}

// ---- kube-proxy ----

/** A private xtables lock file for one suite: the agent and the kube-proxy writer contend on it, the host's lock is never touched. */
export function privateLock(): { env: NodeJS.ProcessEnv; path: string; destroy(): void } {
  const d = mkdtempSync(join(tmpdir(), 'edgemesh-lock-'));
  const path = join(d, 'xtables.lock');
  writeFileSync(path, '');
  return { env: { ...process.env, XTABLES_LOCKFILE: path }, path, destroy: () => rmSync(d, { recursive: true, force: true }) };
}

/** kube-proxy's full-sync restore input, generation k: the fixture plus one KUBE-SERVICES rule naming k. */
export function kubeRestoreVariant(k: number): string {
  const text = readFixture(IPTABLES_RESTORE_FIXTURE);
  const at = text.lastIndexOf('COMMIT'); // the nat table comes last in the fixture
  if (!/\*nat[\s\S]*$/.test(text.slice(0, at))) throw new Error('fixture layout: expected *nat last');
  const extra = `-A KUBE-SERVICES -d 172.30.9.${k + 1}/32 -p tcp -m comment --comment "stress generation ${k}" -m tcp --dport 80 -j KUBE-MARK-MASQ\n`;
  return text.slice(0, at) + extra + text.slice(at);
}
export const kubeJumps = (): string => readFixture(IPTABLES_JUMPS_FIXTURE);

/** kube-proxy (nftables mode) re-creating its table, generation k: one transaction. */
export function kubeNftVariant(k: number): string {
  return `add table ip kube-proxy\ndelete table ip kube-proxy\n${loadableNftFixture()}add chain ip kube-proxy stress-generation-${k}\n`;
}

/** kube-proxy's own objects in a dump: KUBE-* chain declarations and rules, every table; its jumps in built-in chains. */
export function kubeLines(save: string): string[] {
  return normalize(save)
    .split('\n')
    .filter((l) => /^(:KUBE-|-A KUBE-|\*)/.test(l) || (/^-A [A-Z]+ /.test(l) && / -j KUBE-/.test(l)));
}

// ---- agent logs ----

export interface SyncStats {
  writes: number;
  attempts: number;
  retries: number;
  lockWaitMs: number;
  maxLockWaitMs: number;
  orderRepairs: number;
  failures: number;
}

export function syncStats(logs: readonly Record<string, unknown>[]): SyncStats {
  const s: SyncStats = { writes: 0, attempts: 0, retries: 0, lockWaitMs: 0, maxLockWaitMs: 0, orderRepairs: 0, failures: 0 };
  for (const l of logs) {
    const msg = typeof l.msg === 'string' ? l.msg : '';
    if (msg.startsWith('sync failed')) s.failures++;
    const changes = l.changes as { attempts?: number; lockWaitMs?: number; orderRepairs?: number }[] | undefined;
    if (!msg.startsWith('sync (') || !Array.isArray(changes)) continue;
    for (const c of changes) {
      s.writes++;
      s.attempts += c.attempts ?? 1;
      s.retries += Math.max(0, (c.attempts ?? 1) - 1);
      s.lockWaitMs += c.lockWaitMs ?? 0;
      s.maxLockWaitMs = Math.max(s.maxLockWaitMs, c.lockWaitMs ?? 0);
      s.orderRepairs += c.orderRepairs ?? 0;
    }
  }
  s.lockWaitMs = Math.round(s.lockWaitMs);
  s.maxLockWaitMs = Math.round(s.maxLockWaitMs);
  return s;
}

/** One summary line per suite and backend, for the README's Reliability section. */
export function summary(suite: string, fields: Record<string, string | number | boolean | undefined>): void {
  const line = `[stress] ${suite}: ${Object.entries(fields).map(([k, v]) => `${k}=${v}`).join(' ')}`;
  process.stdout.write(`${line}\n`);
}
