// Control plane, part 2, and footprint: the real agent process (dist/src/cli.js run
// --services-dir) in a namespace that holds kube-proxy's table: start-up to the first completed
// sync, an incremental change end to end (manifest written -> rule in the kernel), order repair
// after a foreign `iptables -I PREROUTING 1`, idle CPU and RSS.
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createBackend } from '../src/netfilter/factory.js';
import { LegacyIptablesTable } from '../src/netfilter/iptables/iptables-legacy.js';
import { NftIptablesTable } from '../src/netfilter/iptables/iptables-nft.js';
import type { BackendName, NatBackend } from '../src/netfilter/types.js';
import type { Netns } from '../src/dev/netns.js';
import { native } from '../src/native/load.js';
import { NODE_FLAGS } from '../src/node-flags.js';
import { PROXY_ADDR, PROXY_PORT, SERVICE_CIDR, cpuSeconds, ignoreRule, log, rssMiB, serviceIp, sleep, svcName, svcNamespace } from './lib.js';

const here = dirname(fileURLToPath(import.meta.url));
/** dist/src/cli.js (this file runs as dist/bench/agent.js). */
export const CLI = resolve(here, '..', 'src', 'cli.js');
/** dist/src/bin.js: what `edgemesh-agent` runs (re-executes `run` with the daemon's V8 flags). */
export const BIN = resolve(here, '..', 'src', 'bin.js');
const PER_FILE = 100;

function serviceDoc(i: number, ignored: boolean): string {
  return `apiVersion: v1
kind: Service
metadata:
  name: ${svcName(i)}
  namespace: ${svcNamespace(i)}
${ignored ? '  labels:\n    noproxy: edgemesh\n' : ''}spec:
  clusterIP: ${serviceIp(i)}
  ports:
  - port: 80
    protocol: TCP
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${svcName(i)}-bench
  namespace: ${svcNamespace(i)}
  labels:
    kubernetes.io/service-name: ${svcName(i)}
addressType: IPv4
ports:
- port: 8080
  protocol: TCP
endpoints:
- addresses: ["10.${200 + ((i >> 14) & 15)}.${(i >> 6) & 255}.${(i & 63) << 2}"]
  conditions:
    ready: true
`;
}

/** A --services-dir of `count` services (Service + EndpointSlice each), 100 per file; the first `ignored` carry noproxy=edgemesh. */
export class ServicesDir {
  readonly path: string;
  private readonly ignored = new Set<number>();
  private seq = 0;
  constructor(
    tmp: string,
    readonly count: number,
    ignored: number,
  ) {
    this.path = mkdtempSync(join(tmp, 'svc-'));
    for (let i = 0; i < ignored; i++) this.ignored.add(i);
    for (let f = 0; f * PER_FILE < count; f++) this.writeFile(f);
  }
  private writeFile(f: number): void {
    const docs: string[] = [];
    for (let i = f * PER_FILE; i < Math.min(this.count, (f + 1) * PER_FILE); i++) docs.push(serviceDoc(i, this.ignored.has(i)));
    const tmp = join(this.path, `.f${f}.${this.seq++}.tmp`);
    writeFileSync(tmp, docs.join('---\n'));
    renameSync(tmp, join(this.path, `services-${String(f).padStart(4, '0')}.yaml`));
  }
  /** Labels service i noproxy=edgemesh: rewrites its file atomically (write + rename), as tools do. */
  ignore(i: number): void {
    this.ignored.add(i);
    this.writeFile(Math.floor(i / PER_FILE));
  }
  destroy(): void {
    rmSync(this.path, { recursive: true, force: true });
  }
}

export interface AgentProc {
  backend: BackendName;
  child: ChildProcess;
  pid: number;
  /** ms from spawn to the log line of the first completed sync. */
  startupMs: number;
  lines: string[];
  /** Resolves with the time (performance.now()) of the next log line matching `re`. */
  nextLine(re: RegExp, timeoutMs: number): Promise<number>;
  stop(): Promise<void>;
}

export async function startAgent(ns: Netns, backend: BackendName, dir: ServicesDir | undefined, extra: string[] = [], entry = CLI): Promise<AgentProc> {
  if (!existsSync(entry)) throw new Error(`${entry} is missing: build first (npm run build)`);
  const source = dir ? ['--services-dir', dir.path] : [];
  // `extra` may name its own listeners; by default the agent opens none.
  const listeners = ['--metrics-addr', 'off', '--healthz-addr', 'off'].filter((_, i, a) => !extra.includes(a[i - (i % 2)]!));
  // BIN as its first line runs it: node with the daemon's flags (no re-execution).
  const args = [...(entry === BIN ? NODE_FLAGS : []), entry, 'run', '--backend', backend, ...source, '--service-cidr', SERVICE_CIDR, '--proxy-addr', `${PROXY_ADDR}:${PROXY_PORT}`, ...listeners, '--log-level', 'info', ...extra];
  const t0 = performance.now();
  const child = ns.spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: process.env });
  const lines: string[] = [];
  const waiters: { re: RegExp; done: (t: number) => void }[] = [];
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const startupMs = await new Promise<number>((resolveP, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`agent ${backend}: no first sync within 120 s; last lines: ${lines.slice(-5).join(' | ')} ${stderr}`)), 120_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`agent ${backend} exited ${code}: ${stderr.slice(-800)} ${lines.slice(-5).join(' | ')}`));
    });
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        lines.push(line);
        if (lines.length > 5000) lines.shift();
        const t = performance.now();
        for (let w = waiters.length - 1; w >= 0; w--) {
          if (waiters[w]!.re.test(line)) {
            waiters[w]!.done(t);
            waiters.splice(w, 1);
          }
        }
        if (/"msg":"sync \((initial|retry)\) wrote/.test(line)) {
          clearTimeout(timer);
          resolveP(performance.now() - t0);
        }
      }
    });
  });
  child.removeAllListeners('exit');
  const pid = child.pid!;
  return {
    backend,
    child,
    pid,
    startupMs,
    lines,
    nextLine(re, timeoutMs) {
      return new Promise((resolveP, reject) => {
        const timer = setTimeout(() => {
          const i = waiters.findIndex((w) => w.done === done);
          if (i >= 0) waiters.splice(i, 1);
          const recent = lines.filter((l) => l.includes('sync')).slice(-6);
          reject(new Error(`agent ${backend}: no log line ${re} within ${timeoutMs} ms; its last sync lines:\n${recent.join('\n')}`));
        }, timeoutMs);
        const done = (t: number) => {
          clearTimeout(timer);
          resolveP(t);
        };
        waiters.push({ re, done });
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      process.kill(pid, 'SIGTERM');
      const t = setTimeout(() => {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }, 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/**
 * Our own cheap change detector for a namespace's table: legacy IPT_SO_GET_INFO (size and entry
 * count; enough for writes that change them), nft generation.
 */
export function tokenReader(backend: BackendName, nsPath: string): () => Promise<string> {
  if (backend === 'iptables-legacy') {
    return async () => {
      const i = await native().iptcInfo('ipv4', nsPath, false);
      return `${i.size}/${i.entries}`;
    };
  }
  const t = new NftIptablesTable('ipv4', { netns: nsPath });
  return async () => (await t.info()).token;
}

async function hasIgnoreRule(ns: Netns, backend: BackendName, i: number): Promise<boolean> {
  const r = ignoreRule(i);
  if (backend === 'nftables') {
    const out = await ns.run('nft', ['get', 'element', 'ip', 'edgemesh', 'ignored', `{ ${r.dst!.replace(/\/32$/, '')} }`], { allowFail: true, timeoutMs: 30_000 });
    return out.code === 0 && out.stdout.includes(`"${r.comment}"`);
  }
  const bin = backend === 'iptables-legacy' ? 'iptables-legacy' : 'iptables-nft';
  const out = await ns.run(bin, ['-w', '-t', 'nat', '-C', 'EDGE-MESH', '-d', r.dst!, '-m', 'comment', '--comment', r.comment!, '-j', 'RETURN'], { allowFail: true, timeoutMs: 30_000 });
  return out.code === 0;
}

/**
 * Incremental change: service `i` gains noproxy=edgemesh; ms from the manifest rename to the
 * table's change token moving (a commit), confirmed by the rule being there. Polls every ~2 ms.
 */
export async function incrementalOnce(ns: Netns, agent: AgentProc, dir: ServicesDir, i: number, timeoutMs = 10_000): Promise<number> {
  const token = tokenReader(agent.backend, ns.path);
  let last = await token();
  const t0 = performance.now();
  dir.ignore(i);
  while (performance.now() - t0 < timeoutMs) {
    const now = await token();
    if (now !== last) {
      const t = performance.now() - t0;
      if (await hasIgnoreRule(ns, agent.backend, i)) return t;
      last = now;
    }
    await sleep(2);
  }
  throw new Error(`incremental change (${agent.backend}): rule for service ${i} not in the kernel within ${timeoutMs} ms`);
}

// The agent's log line of a sync that put our jump back in front. Usually the watchdog's own
// ("sync (order)"); when the foreign write lands while a sync is between its read and its commit,
// that sync's batch is refused (the generation changed), it plans again on the new table and the
// repair is its own ("sync (change)"): the same repair, as early or earlier.
const REPAIR_LINE = /"msg":"sync \([a-z]+\) wrote[^"]*order-repairs/;

/**
 * Order repair: a foreign `iptables -I PREROUTING 1 ... -j KUBE-SERVICES`; ms from the foreign commit (first token
 * change) to our repair (the next token change after which our jump is rule 1 again).
 */
export async function orderRepairOnce(ns: Netns, agent: AgentProc, timeoutMs = 10_000): Promise<{ ms: number; foreignCmdMs: number }> {
  // The repair moves our jump back: same size and entry count, so the legacy token cannot see
  // it. The end is the agent's own log line of the repairing sync (written right after its
  // commit), confirmed by reading the order; the start is the foreign commit (token change).
  const bin = agent.backend === 'iptables-legacy' ? 'iptables-legacy' : 'iptables-nft';
  const backend = createBackend(agent.backend, 'ipv4', { netns: ns.path });
  const token = tokenReader(agent.backend, ns.path);
  const base = await token();
  // A jump to a chain that DNATs Service traffic: only those are repaired (a foreign rule of
  // another kind may stay above ours: the ordering policy).
  const foreign = ['-w', '-t', 'nat', '-I', 'PREROUTING', '1', '-p', 'udp', '--dport', '9', '-m', 'comment', '--comment', 'foreign bench rule', '-j', 'KUBE-SERVICES'];
  const repaired = agent.nextLine(REPAIR_LINE, timeoutMs);
  repaired.catch(() => undefined);
  const tc = performance.now();
  let cmdDone = NaN;
  const cmd = ns.run(bin, foreign, { timeoutMs: 30_000 }).then(() => (cmdDone = performance.now()));
  let tForeign = NaN;
  while (performance.now() - tc < timeoutMs) {
    if ((await token()) !== base) {
      tForeign = performance.now();
      break;
    }
    await sleep(1);
  }
  await cmd;
  try {
    if (Number.isNaN(tForeign)) throw new Error(`order repair (${agent.backend}): the foreign insert never showed in the table token`);
    const tRepair = await repaired;
    const order = await backend.checkOrder();
    if (!order.ok) throw new Error(`order repair (${agent.backend}): the agent logged a repair but our jump is not first (${JSON.stringify(order.positions)})`);
    return { ms: tRepair - tForeign, foreignCmdMs: cmdDone - tc };
  } finally {
    await ns.run(bin, ['-w', '-t', 'nat', '-D', 'PREROUTING', ...foreign.slice(6)], { timeoutMs: 30_000 });
  }
}

/**
 * Order repair after a rewrite that keeps the table's size and entry count: kube-proxy's jump
 * deleted and re-inserted at rule 1 of PREROUTING in one `restore --noflush` (what a kube-proxy
 * restart or an administrator's script does). ms from the foreign commit to the agent's repairing
 * commit (its log line). The foreign commit is seen the way the agent sees it: legacy, the
 * digest of the built-in chains recomputed after xtables lock activity (LegacyIptablesTable
 * watchToken, polled every 2 ms; the same lock file as the agent); nft, the generation.
 */
export async function sameSizeRepairOnce(ns: Netns, agent: AgentProc, timeoutMs = 10_000): Promise<number> {
  const legacy = agent.backend === 'iptables-legacy';
  const restore = legacy ? 'iptables-legacy-restore' : 'iptables-nft-restore';
  const watch = legacy ? new LegacyIptablesTable({ family: 'ipv4', netns: ns.path }) : undefined;
  const token = watch ? () => watch.watchToken() : tokenReader(agent.backend, ns.path);
  try {
    const base = await token();
    const jump = '-m comment --comment "kubernetes service portals" -j KUBE-SERVICES';
    const repaired = agent.nextLine(REPAIR_LINE, timeoutMs);
    repaired.catch(() => undefined);
    const tc = performance.now();
    const cmd = ns.run(restore, ['-w', '--noflush'], { input: `*nat\n-D PREROUTING ${jump}\n-I PREROUTING 1 ${jump}\nCOMMIT\n`, timeoutMs: 60_000 });
    let tForeign = NaN;
    while (performance.now() - tc < timeoutMs) {
      if ((await token()) !== base) {
        tForeign = performance.now();
        break;
      }
      await sleep(2);
    }
    await cmd;
    if (Number.isNaN(tForeign)) throw new Error(`same-size rewrite (${agent.backend}): the foreign restore never showed in the table token`);
    const tRepair = await repaired;
    const order = await createBackend(agent.backend, 'ipv4', { netns: ns.path }).checkOrder();
    if (!order.ok) throw new Error(`same-size rewrite (${agent.backend}): the agent logged a repair but our jump is not ahead of KUBE-SERVICES (${JSON.stringify(order.positions)})`);
    return Math.max(0, tRepair - tForeign);
  } finally {
    watch?.close();
  }
}

/** CPU ms of one digest of the legacy built-in chains (partial IPT_SO_GET_ENTRIES), median of `n`. */
export async function legacyDigestCpuMs(ns: Netns, n = 5): Promise<number> {
  const xs: number[] = [];
  for (let i = 0; i < n; i++) xs.push((await native().iptcInfo('ipv4', ns.path, true)).digestCpuMs ?? NaN);
  xs.sort((a, b) => a - b);
  return xs[Math.floor(xs.length / 2)]!;
}

/**
 * The legacy watchdog's own cost on this table while nothing writes, against the detection it
 * replaced: for `ms` each, polled every 250 ms from this (otherwise idle) process, (a) size and
 * entry count only (IPT_SO_GET_INFO: blind to same-size rewrites), (b) the change token the agent
 * polls now (LegacyIptablesTable.watchToken: IPT_SO_GET_INFO, the lock file's events, the digest
 * on its cost-scaled period). CPU as % of one core; `addedPct` = (b) - (a). From outside the
 * namespace every call also enters it and comes back (setns), which the agent, running inside,
 * does not pay: (a) and (b) pay it alike.
 */
export async function legacyWatchCost(ns: Netns, ms: number): Promise<{ cpuPct: number; basePct: number; addedPct: number; digests: number; polls: number }> {
  const t = new LegacyIptablesTable({ family: 'ipv4', netns: ns.path });
  const run = async (poll: () => Promise<unknown>): Promise<{ pct: number; polls: number }> => {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let polls = 0;
    while (performance.now() - t0 < ms && polls < 100_000) {
      await poll();
      polls++;
      await sleep(250);
    }
    const cu = process.cpuUsage(c0);
    return { pct: ((cu.user + cu.system) / 1000 / (performance.now() - t0)) * 100, polls };
  };
  try {
    const base = await run(() => native().iptcInfo('ipv4', ns.path, false));
    await t.watchToken(); // the first one digests (as the agent's first poll after its first sync)
    const d0 = t.digests;
    const now = await run(() => t.watchToken());
    return { cpuPct: now.pct, basePct: base.pct, addedPct: now.pct - base.pct, digests: t.digests - d0, polls: now.polls };
  } finally {
    t.close();
  }
}

/** nftables: our base chains sit at priority -101 (before dstnat -100) on both hooks, and a foreign iptables-nft insert does not touch them. */
export async function nftablesOrderByConstruction(ns: Netns): Promise<{ ok: boolean; detail: string }> {
  const before = await ns.run('nft', ['-j', 'list', 'chains', 'ip'], { timeoutMs: 60_000 });
  const chains = (JSON.parse(before.stdout) as { nftables: { chain?: { table: string; name: string; hook?: string; prio?: number; type?: string } }[] }).nftables.flatMap((o) => (o.chain ? [o.chain] : []));
  const ours = chains.filter((c) => c.table === 'edgemesh' && c.hook);
  const theirs = chains.filter((c) => c.table !== 'edgemesh' && c.type === 'nat' && (c.hook === 'prerouting' || c.hook === 'output'));
  const hooksOk = ['prerouting', 'output'].every((h) => ours.some((c) => c.hook === h && c.prio === -101 && c.type === 'nat'));
  const before100 = theirs.every((t) => (t.prio ?? 0) > -101);
  await ns.run('iptables-nft', ['-w', '-t', 'nat', '-I', 'PREROUTING', '1', '-p', 'udp', '--dport', '9', '-j', 'ACCEPT'], { timeoutMs: 30_000 });
  const b = createBackend('nftables', 'ipv4', { netns: ns.path });
  const order = await b.checkOrder();
  await ns.run('iptables-nft', ['-w', '-t', 'nat', '-D', 'PREROUTING', '-p', 'udp', '--dport', '9', '-j', 'ACCEPT'], { timeoutMs: 30_000 });
  const detail = `our hooks ${ours.map((c) => `${c.name}@${c.hook}:${c.prio}`).join(', ')}; other nat hook chains ${theirs.map((c) => `${c.table}/${c.name}:${c.prio}`).join(', ') || 'none'}; after a foreign iptables-nft -I PREROUTING 1 our order ${order.ok ? 'still ok' : 'NOT ok'}`;
  return { ok: hooksOk && before100 && order.ok, detail };
}

/** CPU seconds of the agent over `ms` with nothing changing, as % of one core; RSS at the end. */
export async function idle(agents: AgentProc[], ms: number): Promise<{ backend: BackendName; cpuPct: number; rssMiB: number }[]> {
  const c0 = agents.map((a) => cpuSeconds(a.pid));
  const t0 = performance.now();
  await sleep(ms);
  const dt = (performance.now() - t0) / 1000;
  return agents.map((a, i) => ({ backend: a.backend, cpuPct: ((cpuSeconds(a.pid) - c0[i]!) / dt) * 100, rssMiB: rssMiB(a.pid) }));
}

export type { NatBackend };
export { log };
