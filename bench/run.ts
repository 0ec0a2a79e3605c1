// `npm run bench [-- --quick]`: the control plane and the data plane against the peers, in one
// run, in namespaces made here and always deleted (finally + SIGINT/SIGTERM). Installs nothing:
// a missing peer is "not measured: <why>". Prints the tables and the targets; writes
// bench/results/latest.{json,md,svg}; refreshes docs/benchmarks.md's results (between markers).
// Targets are asserted here, in the summary, never in tests; the exit code is 0 whether they are
// met or not (1 only when the bench itself failed).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { destroyAllNetns, type Netns } from '../src/dev/netns.js';
import type { BackendName } from '../src/netfilter/types.js';
import { kubeNamespace, measureFullSync, perRuleEstimate, type FullSyncResult, type KubeNs } from './control.js';
import { ServicesDir, idle, incrementalOnce, legacyDigestCpuMs, legacyWatchCost, nftablesOrderByConstruction, orderRepairOnce, sameSizeRepairOnce, startAgent, type AgentProc } from './agent.js';
import { ROOT, VARIANTS, buildTools, measureDataPlane, med, setupTopology, type DataResult, type Topology, type VariantName } from './data.js';
import { log, sleep } from './lib.js';
import { destroyTunnel, measureTunnel, setupTunnel, type TunnelSetup } from './tunnel.js';
import { tunnelChart, tunnelTables, tunnelTargets, type TunnelResult } from './tunnel-report.js';
import { destroyRelay, measureRelay, setupRelay, type RelaySetup } from './relay.js';
import { relayChart, relayTables, relayTargets, type RelayResult } from './relay-report.js';
import { measureFootprint, type FootprintResult } from './footprint.js';
import { machineLine, median, renderTableText, renderTargetsText, target, validateResults, writeResults, type BenchResults, type ChartGroup, type Table, type TargetResult } from './results.js';

const quick = process.argv.includes('--quick');
const onlyArg = process.argv.find((a) => a.startsWith('--only='));
const only = new Set((onlyArg?.slice(7) ?? 'control,agent,data,tunnel,relay,footprint').split(','));
const P = quick
  ? { kube: [1000], sizes: [10, 1000], rounds: 2, cap: { rules: 40, ms: 1500 }, agentKube: 1000, agentRounds: 2, settleMs: 5_000, idleMs: 10_000, dataRounds: 1, iperfSeconds: 1, connMs: 500, connMax: 20_000, tunnelRounds: 1, relayRounds: 1, footprintSizes: [0, 1000], footprintSettleMs: 8_000 }
  : { kube: [1000, 10_000], sizes: [10, 100, 1000, 10_000], rounds: 3, cap: { rules: 100, ms: 4000 }, agentKube: 10_000, agentRounds: 3, settleMs: 45_000, idleMs: 30_000, dataRounds: 3, iperfSeconds: 3, connMs: 2000, connMax: 40_000, tunnelRounds: 3, relayRounds: 3, footprintSizes: [0, 1000, 10_000], footprintSettleMs: 20_000 };
const IGNORED = P.agentKube / 10; // N = 1 000 ignore rules on 10 000 services (quick: 100 on 1 000)
const BACKENDS: BackendName[] = ['iptables-legacy', 'iptables-nft', 'nftables'];

const tmp = mkdtempSync(join(tmpdir(), 'edgemesh-bench-'));
// Our own xtables lock: the bench never waits on (or holds up) other users of /run/xtables.lock.
process.env.XTABLES_LOCKFILE = join(tmp, 'xtables.lock');
const dirs: ServicesDir[] = [];
const agents: AgentProc[] = [];

async function teardown(): Promise<void> {
  for (const a of agents) await a.stop().catch(() => undefined);
  await destroyAllNetns();
  for (const d of dirs) d.destroy();
  rmSync(tmp, { recursive: true, force: true });
}

let tearingDown = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (tearingDown) process.exit(130);
    tearingDown = true;
    log(`${sig}: deleting the namespaces`);
    void teardown().finally(() => process.exit(130));
  });
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim().split('\n')[0]!;
  } catch {
    return 'not installed';
  }
}

function machine(): BenchResults['machine'] {
  return {
    nproc: cpus().length,
    kernel: readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(),
    cpu: cpus()[0]?.model.trim() ?? 'unknown',
    node: process.version,
    tools: {
      iptables: sh('iptables-legacy', ['--version']).replace(/^iptables\s*/, ''),
      nft: sh('nft', ['--version']).replace(/^nftables\s*/, ''),
      iperf3: sh('iperf3', ['--version']).split(' ').slice(1, 2).join(''),
      haproxy: sh('haproxy', ['-v']).split(' ').slice(2, 3).join(''),
      go: sh('go', ['version']).split(' ').slice(2, 3).join(''),
    },
  };
}

interface AgentResults {
  kube: number;
  rows: { backend: BackendName; startupMs: number; incrementalMs: number[]; orderRepairMs: number[]; sameSizeRepairMs: number[]; foreignCmdMs: number[]; settleCpuPct: number | null; idleCpuPct: number | null; rssMiB: number | null; why?: string }[];
  /** CPU ms of one digest of the legacy built-in chains on this table. */
  legacyDigestCpuMs?: number;
  /** The legacy watchdog's token polled alone for idleMs: CPU % of one core, digests, polls. */
  legacyWatch?: { cpuPct: number; basePct: number; addedPct: number; digests: number; polls: number };
  nftOrder?: { ok: boolean; detail: string };
  footprint: { services: number; backend: BackendName; startupMs: number; rssMiB: number }[];
  idleMs: number;
  settleMs: number;
}

async function agentPhase(byFlavor: Map<string, KubeNs>, kube: number): Promise<AgentResults> {
  const out: AgentResults = { kube, rows: [], footprint: [], idleMs: P.idleMs, settleMs: P.settleMs };
  // One namespace per agent: the nftables agent gets its own kube-proxy (iptables-nft) table so
  // that its commits are the only ones its namespace sees.
  const nsFor = new Map<BackendName, Netns>([
    ['iptables-legacy', byFlavor.get(`legacy/${kube}`)!.ns],
    ['iptables-nft', byFlavor.get(`nft/${kube}`)!.ns],
    ['nftables', (await kubeNamespace('kt', 'nft', kube)).ns],
  ]);
  const started: AgentProc[] = [];
  for (const b of BACKENDS) {
    const dir = new ServicesDir(tmp, kube, IGNORED);
    dirs.push(dir);
    const a = await startAgent(nsFor.get(b)!, b, dir);
    agents.push(a);
    started.push(a);
    out.rows.push({ backend: b, startupMs: a.startupMs, incrementalMs: [], orderRepairMs: [], sameSizeRepairMs: [], foreignCmdMs: [], settleCpuPct: null, idleCpuPct: null, rssMiB: null });
    (a as AgentProc & { dir?: ServicesDir }).dir = dir;
    log(`agent ${b}: first sync ${Math.round(a.startupMs)} ms after spawn (${kube} services, ${IGNORED} ignored)`);
  }
  const rowOf = (b: BackendName) => out.rows.find((r) => r.backend === b)!;
  for (let round = 0; round < P.agentRounds; round++) {
    const order = [...started.slice(round % 3), ...started.slice(0, round % 3)];
    for (const a of order) {
      await sleep(1300); // past min-sync-period since the last sync
      const ms = await incrementalOnce(nsFor.get(a.backend)!, a, (a as AgentProc & { dir: ServicesDir }).dir, IGNORED + 10 + round);
      rowOf(a.backend).incrementalMs.push(ms);
    }
    for (const a of order.filter((x) => x.backend !== 'nftables')) {
      await sleep(1300);
      const r = await orderRepairOnce(nsFor.get(a.backend)!, a);
      rowOf(a.backend).orderRepairMs.push(r.ms);
      rowOf(a.backend).foreignCmdMs.push(r.foreignCmdMs);
      await sleep(1300);
      rowOf(a.backend).sameSizeRepairMs.push(await sameSizeRepairOnce(nsFor.get(a.backend)!, a));
    }
    log(`agents: incremental and order repair round ${round + 1}/${P.agentRounds} done`);
  }
  out.nftOrder = await nftablesOrderByConstruction(nsFor.get('nftables')!);
  out.legacyDigestCpuMs = await legacyDigestCpuMs(nsFor.get('iptables-legacy')!);
  // The garbage of the changes above is collected in the next tens of seconds (V8's memory
  // reducer runs a full GC once allocation stops): measured and shown, but not counted as idle.
  log(`agents: settling for ${P.settleMs / 1000} s after the last change`);
  for (const r of await idle(started, P.settleMs)) rowOf(r.backend).settleCpuPct = r.cpuPct;
  log(`agents: idle for ${P.idleMs / 1000} s`);
  for (const r of await idle(started, P.idleMs)) {
    rowOf(r.backend).idleCpuPct = r.cpuPct;
    rowOf(r.backend).rssMiB = r.rssMiB;
    out.footprint.push({ services: kube, backend: r.backend, startupMs: rowOf(r.backend).startupMs, rssMiB: r.rssMiB });
  }
  for (const a of started) await a.stop();
  agents.length = 0;
  log(`agents: the legacy watchdog's change detection alone for ${P.idleMs / 1000} s`);
  out.legacyWatch = await legacyWatchCost(nsFor.get('iptables-legacy')!, P.idleMs);
  await nsFor.get('nftables')!.destroy();
  // Footprint with 1 000 services (full run; the quick run's agents already have 1 000).
  if (kube !== 1000 && byFlavor.has('legacy/1000')) {
    const dir = new ServicesDir(tmp, 1000, 100);
    dirs.push(dir);
    const a = await startAgent(byFlavor.get('legacy/1000')!.ns, 'iptables-legacy', dir);
    agents.push(a);
    await sleep(3000);
    const [r] = await idle([a], 2000);
    out.footprint.unshift({ services: 1000, backend: 'iptables-legacy', startupMs: a.startupMs, rssMiB: r!.rssMiB });
    await a.stop();
    agents.length = 0;
  }
  return out;
}

const fmtN = (n: number) => n.toLocaleString('en-US').replace(/,/g, ' ');

function controlTables(fs: FullSyncResult): { tables: Table[]; med: (variant: string, kube: number, n: number) => number | null; perRule: (flavor: 'legacy' | 'nft', kube: number, n: number) => number | null } {
  const medOf = (variant: string, kube: number, n: number) => {
    const s = fs.samples.find((x) => x.variant === variant && x.kube === kube && x.n === n);
    return s?.ms.length ? median(s.ms) : null;
  };
  const perRule = (flavor: 'legacy' | 'nft', kube: number, n: number) => {
    const p = fs.perRule.find((x) => x.flavor === flavor && x.kube === kube);
    return p?.perRuleMs.length ? perRuleEstimate(p, n) : null;
  };
  const kubes = [...new Set(fs.samples.map((s) => s.kube))];
  const ns = [...new Set(fs.samples.map((s) => s.n))].sort((a, b) => a - b);
  const rows: (string | number | null)[][] = [];
  const ratioRows: (string | number | null)[][] = [];
  const div = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? a / b : null);
  for (const k of kubes) {
    for (const n of ns) {
      const L = medOf('ours iptables-legacy', k, n);
      const LR = medOf('iptables-legacy-restore', k, n);
      const LP = perRule('legacy', k, n);
      const N = medOf('ours iptables-nft', k, n);
      const T = medOf('ours nftables', k, n);
      const NR = medOf('iptables-nft-restore', k, n);
      const NF = medOf('nft -f', k, n);
      const NP = perRule('nft', k, n);
      rows.push([fmtN(k), fmtN(n), L, LR, LP, N, T, NR, NF, NP]);
      ratioRows.push([fmtN(k), fmtN(n), div(LR, L), div(LP, L), div(NR, N), div(NP, N), div(NR, T), div(NF, T), div(NP, T)]);
    }
  }
  const caps = fs.perRule.map((p) => `${p.flavor} on ${fmtN(p.kube)} services: ${median(p.rulesDone)} rules done per run, ${median(p.perRuleMs).toFixed(1)} ms per rule, setup ${median(p.setupMs).toFixed(0)} ms`);
  return {
    med: medOf,
    perRule,
    tables: [
      {
        title: 'Full sync of N ignore rules into a nat table holding kube-proxy rules, ms (median)',
        columns: ['kube-proxy services', 'N', 'ours legacy', 'iptables-legacy-restore', 'per-rule legacy*', 'ours iptables-nft', 'ours nftables', 'iptables-nft-restore', 'nft -f', 'per-rule nft*'],
        rows,
        notes: [
          `* per-rule = one iptables process per rule with -C first; capped at ${fs.cap.rules} rules or ${fs.cap.ms / 1000} s per run, extrapolated linearly to N (setup + N x per-rule cost), measured once per round per table. The table grows as rules are added, so the extrapolation understates the per-rule method at large N.`,
          ...caps,
          'ours = our backend sync() in-process against the namespace (read, diff, one transaction); peers timed inside the namespace (no `ip netns exec` start-up). Same end state for every variant, checked after each; the table is cleaned between runs (not timed).',
        ],
      },
      {
        title: 'Full sync: peer time / our time (higher = ours faster)',
        columns: ['kube-proxy services', 'N', 'legacy: restore/ours', 'legacy: per-rule/ours', 'ipt-nft: restore/ours', 'ipt-nft: per-rule/ours', 'nftables: ipt-nft-restore/ours', 'nftables: nft -f/ours', 'nftables: per-rule(nft)/ours'],
        rows: ratioRows,
      },
    ],
  };
}

function agentTables(a: AgentResults): Table[] {
  const m = (xs: number[]) => (xs.length ? median(xs) : null);
  return [
    {
      title: `The agent process on ${fmtN(a.kube)} kube-proxy services (${fmtN(IGNORED)} ignored)`,
      columns: ['backend', 'start-up to first sync ms', 'incremental change ms (median)', 'samples', 'order repair ms (median)', 'samples', 'repair after a same-size rewrite ms (worst)', 'samples', 'CPU % after the last change', 'idle CPU % of one core', 'RSS MiB'],
      rows: a.rows.map((r) => [
        r.backend,
        r.startupMs,
        m(r.incrementalMs),
        r.incrementalMs.map((x) => x.toFixed(0)).join(' '),
        r.backend === 'nftables' ? 'not needed' : m(r.orderRepairMs),
        r.orderRepairMs.map((x) => x.toFixed(0)).join(' '),
        r.backend === 'nftables' ? 'not needed' : r.sameSizeRepairMs.length ? Math.max(...r.sameSizeRepairMs) : null,
        r.sameSizeRepairMs.map((x) => x.toFixed(0)).join(' '),
        r.settleCpuPct,
        r.idleCpuPct,
        r.rssMiB,
      ]),
      notes: [
        'incremental: from the manifest rename (one service gains noproxy=edgemesh) to the table change token moving (legacy IPT_SO_GET_INFO, nft generation), confirmed by the rule being there; default settings (min-sync-period 1s, debounce 100 ms).',
        'order repair: from the foreign `iptables -I PREROUTING 1 -p udp --dport 9 -j KUBE-SERVICES` reaching the kernel (first token change) to the agent log line of its repairing sync (written right after its commit), confirmed by reading the order; the foreign command own duration is not counted.',
        `same-size rewrite: kube-proxy's jump deleted and re-inserted at rule 1 in one \`restore --noflush\` (size and entry count unchanged); from the foreign commit (legacy: the built-in chains' digest, recomputed after xtables lock activity, moving; nft: the generation) to the agent's repair log line.${a.legacyDigestCpuMs !== undefined ? ` One legacy digest (partial IPT_SO_GET_ENTRIES: the kernel still sums every entry's counters) costs ${a.legacyDigestCpuMs.toFixed(1)} ms of CPU on this table; while the xtables lock file stays quiet the agent recomputes it only on a period scaled to that cost (0.1 % of a core, at most 60 s), and idle CPU includes it.` : ''}${a.legacyWatch ? ` The legacy change detection alone (polled every 250 ms for ${a.idleMs / 1000} s with nothing writing, from the otherwise idle bench process): ${a.legacyWatch.cpuPct.toFixed(3)} % of one core with ${a.legacyWatch.digests} digests in ${a.legacyWatch.polls} polls, against ${a.legacyWatch.basePct.toFixed(3)} % for size and entry count alone: ${a.legacyWatch.addedPct.toFixed(3)} % added for seeing same-size rewrites.` : ''}`,
        `after the last change: utime+stime over the ${a.settleMs / 1000} s that follow the last incremental change or order repair (the garbage collection those changes leave, V8's memory reducer among it); idle: utime+stime from /proc/PID/stat over the ${a.idleMs / 1000} s after that, with nothing changing (a periodic resync every 60 s may fall in it).`,
        ...(a.nftOrder ? [`nftables order: ${a.nftOrder.detail}`] : []),
      ],
    },
    {
      title: 'Footprint: agent idle RSS and start-up to the first completed sync',
      columns: ['services', 'backend', 'start-up ms', 'RSS MiB'],
      rows: a.footprint.map((f) => [fmtN(f.services), f.backend, f.startupMs, f.rssMiB]),
    },
  ];
}

function dataTables(d: DataResult): Table[] {
  const tables: Table[] = [];
  const it = (topo: Topology, v: VariantName, s: number) => d.iperf.find((x) => x.topo === topo && x.variant === v && x.streams === s);
  const ct = (topo: Topology, v: VariantName, c: number) => d.conns.find((x) => x.topo === topo && x.variant === v && x.concurrency === c);
  for (const topo of ['netns', 'lo'] as Topology[]) {
    const rows: (string | number | null)[][] = [];
    for (const v of VARIANTS) {
      const row: (string | number | null)[] = [v];
      let why: string | undefined;
      for (const s of [1, 4]) {
        const x = it(topo, v, s);
        const dir = med(it(topo, 'direct', s)?.gbps ?? []);
        const g = med(x?.gbps ?? []);
        why ??= x?.why;
        row.push(g, g !== null && dir ? g / dir : null, med(x?.cpuSPerGB ?? []));
      }
      row.push(why && row.slice(1).every((c) => c === null) ? `not measured: ${why}` : why ?? '');
      rows.push(row);
    }
    tables.push({
      title: `Throughput, iperf3 (${topo === 'netns' ? 'pod ns -> node ns -> backend ns over veth' : 'loopback, one namespace'}), ${d.params.iperfSeconds} s runs, median of ${d.params.rounds}`,
      columns: ['variant', '1 stream Gbit/s', 'ratio to direct', 'proxy CPU s/GB', '4 streams Gbit/s', 'ratio to direct', 'proxy CPU s/GB', 'note'],
      rows,
    });
    const crow: (string | number | null)[][] = [];
    for (const v of VARIANTS) {
      const row: (string | number | null)[] = [v];
      let why: string | undefined;
      for (const c of [1, 16]) {
        const x = ct(topo, v, c);
        const dir = med(ct(topo, 'direct', c)?.perSec ?? []);
        const r = med(x?.perSec ?? []);
        why ??= x?.why;
        row.push(r, r !== null && dir ? r / dir : null, med(x?.p50us ?? []), med(x?.p99us ?? []));
      }
      row.push(med(ct(topo, v, 16)?.cpuUsPerConn ?? []), med(ct(topo, v, 16)?.errors ?? []));
      row.push(why && row.slice(1).every((c) => c === null) ? `not measured: ${why}` : why ?? '');
      crow.push(row);
    }
    tables.push({
      title: `Short connections (connect, 100 B, echo, close), ${topo}, ${d.params.connMs} ms runs (at most ${fmtN(d.params.connMax)} connections), median of ${d.params.rounds}`,
      columns: ['variant', 'c1 conn/s', 'ratio', 'c1 p50 us', 'c1 p99 us', 'c16 conn/s', 'ratio', 'c16 p50 us', 'c16 p99 us', 'proxy CPU us/conn (c16)', 'errors (c16)', 'note'],
      rows: crow,
    });
    // Ours against each peer.
    const prow: (string | number | null)[][] = [];
    for (const peer of ['haproxy', 'go io.Copy', 'node pipe', 'kernel DNAT'] as VariantName[]) {
      const r = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? a / b : null);
      prow.push([
        peer,
        r(med(it(topo, 'ours', 1)?.gbps ?? []), med(it(topo, peer, 1)?.gbps ?? [])),
        r(med(it(topo, 'ours', 4)?.gbps ?? []), med(it(topo, peer, 4)?.gbps ?? [])),
        r(med(it(topo, 'ours', 1)?.cpuSPerGB ?? []), med(it(topo, peer, 1)?.cpuSPerGB ?? [])),
        r(med(it(topo, 'ours', 4)?.cpuSPerGB ?? []), med(it(topo, peer, 4)?.cpuSPerGB ?? [])),
        r(med(ct(topo, 'ours', 16)?.perSec ?? []), med(ct(topo, peer, 16)?.perSec ?? [])),
        r(med(ct(topo, 'ours', 16)?.p99us ?? []), med(ct(topo, peer, 16)?.p99us ?? [])),
      ]);
    }
    tables.push({ title: `Ours / peer (${topo})`, columns: ['peer', 'Gbit/s 1 stream', 'Gbit/s 4 streams', 'CPU s/GB 1 stream', 'CPU s/GB 4 streams', 'conn/s c16', 'p99 c16'], rows: prow });
  }
  return tables;
}

function buildTargets(fs: FullSyncResult | undefined, ctl: ReturnType<typeof controlTables> | undefined, ag: AgentResults | undefined, d: DataResult | undefined, tun: TunnelResult | undefined, rel: RelayResult | undefined, readmeOk: boolean | null): TargetResult[] {
  const t: TargetResult[] = [];
  const skipped = (what: string) => `${what} not run in this invocation (--only)`;
  const bigKube = fs ? Math.max(...fs.samples.map((s) => s.kube)) : 0;
  const flavorOf = (b: BackendName) => (b === 'iptables-legacy' ? 'legacy' : 'nft');
  const restoreOf = (b: BackendName) => (b === 'iptables-legacy' ? 'iptables-legacy-restore' : 'iptables-nft-restore');
  const kubes = fs ? [...new Set(fs.samples.map((s) => s.kube))] : [1000, 10_000];
  for (const b of BACKENDS) {
    for (const k of kubes) {
      const ours = ctl?.med(`ours ${b}`, k, 1000) ?? null;
      const pr = ctl?.perRule(flavorOf(b), k, 1000) ?? null;
      t.push(target(`full sync N=1000 on ${fmtN(k)} kube-proxy services, ${b}: speed-up vs one iptables process per rule`, ours && pr ? pr / ours : null, 'x', '>= 500', (v) => v >= 500, fs ? (ours && pr ? 'per-rule time extrapolated from a capped run' : 'not measured') : skipped('control')));
    }
  }
  for (const b of BACKENDS) {
    let worst: number | null = null;
    let where = '';
    for (const s of fs?.samples.filter((x) => x.variant === `ours ${b}`) ?? []) {
      const ours = ctl!.med(`ours ${b}`, s.kube, s.n);
      const r = ctl!.med(restoreOf(b), s.kube, s.n);
      if (ours && r && (worst === null || r / ours < worst)) {
        worst = r / ours;
        where = `worst at N=${fmtN(s.n)} on ${fmtN(s.kube)} services`;
      }
    }
    t.push(target(`full sync, ${b}: no slower than one ${restoreOf(b)} at every N (worst restore/ours)`, worst, 'x', '>= 1', (v) => v >= 1, fs ? where || 'not measured' : skipped('control')));
  }
  void bigKube;
  const m = (xs: number[] | undefined) => (xs?.length ? median(xs) : null);
  for (const b of BACKENDS) {
    const r = ag?.rows.find((x) => x.backend === b);
    t.push(target(`incremental change visible in the kernel, N=${fmtN(IGNORED)} on ${fmtN(ag?.kube ?? P.agentKube)} kube-proxy services, ${b} (median)`, m(r?.incrementalMs), 'ms', '<= 1100', (v) => v <= 1100, ag ? undefined : skipped('agent')));
  }
  for (const b of ['iptables-legacy', 'iptables-nft'] as BackendName[]) {
    const r = ag?.rows.find((x) => x.backend === b);
    t.push(target(`order repair after a foreign iptables -I PREROUTING 1, ${b} (median)`, m(r?.orderRepairMs), 'ms', '<= 1100', (v) => v <= 1100, ag ? undefined : skipped('agent')));
    t.push(
      target(
        `order repair after a same-size rewrite (jump deleted and re-inserted at rule 1 in one restore), ${b} (worst)`,
        r?.sameSizeRepairMs.length ? Math.max(...r.sameSizeRepairMs) : null,
        'ms',
        '<= 1100',
        (v) => v <= 1100,
        ag ? (r?.sameSizeRepairMs.length ? undefined : 'not measured') : skipped('agent'),
      ),
    );
  }
  t.push(
    target(
      'order repair not needed with nftables (base chains at priority -101 before dstnat -100, untouched by a foreign insert)',
      ag?.nftOrder ? (ag.nftOrder.ok ? 1 : 0) : null,
      'verified (1/0)',
      '= 1',
      (v) => v === 1,
      ag?.nftOrder ? ag.nftOrder.detail : ag ? 'not measured' : skipped('agent'),
    ),
  );
  t.push(
    target(
      `idle CPU of the iptables-legacy change detection that sees same-size rewrites, alone, on ${fmtN(ag?.kube ?? P.agentKube)} kube-proxy services`,
      ag?.legacyWatch?.cpuPct ?? null,
      '% of one core',
      '< 1',
      (v) => v < 1,
      ag ? (ag.legacyWatch ? `${ag.legacyWatch.digests} digests in ${ag.legacyWatch.polls} polls over ${ag.idleMs / 1000} s; ${ag.legacyWatch.cpuPct.toFixed(3)} % vs ${ag.legacyWatch.basePct.toFixed(3)} %` : 'not measured') : skipped('agent'),
    ),
  );
  for (const b of BACKENDS) {
    const r = ag?.rows.find((x) => x.backend === b);
    t.push(target(`idle CPU on ${fmtN(ag?.kube ?? P.agentKube)} kube-proxy services, ${b}`, r?.idleCpuPct ?? null, '% of one core', '< 1', (v) => v < 1, ag ? `over ${ag.idleMs / 1000} s` : skipped('agent')));
  }
  const it = (topo: Topology, v: VariantName, s: number) => d?.iperf.find((x) => x.topo === topo && x.variant === v && x.streams === s);
  const ct = (topo: Topology, v: VariantName, c: number) => d?.conns.find((x) => x.topo === topo && x.variant === v && x.concurrency === c);
  const why = (topo: Topology, v: VariantName, peer: VariantName, kind: 'i' | 'c', n: number) =>
    !d ? skipped('data') : (kind === 'i' ? it(topo, v, n)?.why ?? it(topo, peer, n)?.why : ct(topo, v, n)?.why ?? ct(topo, peer, n)?.why) ?? undefined;
  const ratio = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? a / b : null);
  for (const topo of ['netns', 'lo'] as Topology[]) {
    for (const peer of ['haproxy', 'go io.Copy'] as VariantName[]) {
      for (const s of [1, 4]) {
        t.push(target(`proxy throughput ours/${peer}, ${topo}, ${s} stream${s > 1 ? 's' : ''}`, ratio(med(it(topo, 'ours', s)?.gbps ?? []), med(it(topo, peer, s)?.gbps ?? [])), 'x', '>= 1.1', (v) => v >= 1.1, why(topo, 'ours', peer, 'i', s)));
      }
    }
    for (const s of [1, 4]) {
      const ours = med(it(topo, 'ours', s)?.cpuSPerGB ?? []);
      const peers = (['haproxy', 'go io.Copy'] as VariantName[]).map((p) => med(it(topo, p, s)?.cpuSPerGB ?? [])).filter((x): x is number => x !== null);
      t.push(target(`proxy CPU s/GB ours / best of HAProxy and Go, ${topo}, ${s} stream${s > 1 ? 's' : ''}`, peers.length === 2 ? ratio(ours, Math.min(...peers)) : null, 'x', '< 1', (v) => v < 1, why(topo, 'ours', 'haproxy', 'i', s)));
    }
    t.push(target(`short connections/s ours/HAProxy at concurrency 16, ${topo}`, ratio(med(ct(topo, 'ours', 16)?.perSec ?? []), med(ct(topo, 'haproxy', 16)?.perSec ?? [])), 'x', '>= 1', (v) => v >= 1, why(topo, 'ours', 'haproxy', 'c', 16)));
    t.push(target(`short connections p99 ours/HAProxy at concurrency 16, ${topo}`, ratio(med(ct(topo, 'ours', 16)?.p99us ?? []), med(ct(topo, 'haproxy', 16)?.p99us ?? [])), 'x', '<= 1', (v) => v <= 1, why(topo, 'ours', 'haproxy', 'c', 16)));
  }
  t.push(...tunnelTargets(tun, skipped('tunnel')));
  t.push(...relayTargets(rel, skipped('relay')));
  t.push(target('docs/benchmarks.md shows the latest table and chart with machine and date', readmeOk === null ? null : readmeOk ? 1 : 0, 'present (1/0)', '= 1', (v) => v === 1, readmeOk === null ? 'docs/benchmarks.md has no bench markers' : 'docs/benchmarks.md results rewritten from this run'));
  return t;
}

function footprintTables(fp: FootprintResult): Table[] {
  const f = (v: number | null, digits = 1) => (v === null ? null : Number(v.toFixed(digits)));
  return [
    {
      title: `Footprint: edgemesh-agent run (iptables-legacy) beside kube-proxy's rules for the same services, ${fp.settleMs / 1000} s after the first sync`,
      columns: ['source', 'services', 'start to first sync ms', 'RSS MiB', 'peak MiB', 'anon MiB', 'file MiB', 'V8 heap used MiB', 'V8 heap committed MiB', 'malloc in use MiB', 'idle CPU % of one core'],
      rows: fp.rows.map((r) => [r.source, fmtN(r.services), f(r.startupMs, 0), f(r.rssMiB), f(r.peakMiB), f(r.anonMiB), f(r.fileMiB), f(r.heapUsedMiB), f(r.heapCommittedMiB), f(r.mallocMiB), f(r.idleCpuPct, 2)]),
      notes: [
        `The agent as \`edgemesh-agent run\` starts it: node ${fp.nodeFlags} (the bin's first line; the image's entry point). Kubernetes API = the in-test list/watch server inside the namespace on 127.0.0.1:10550, as KubeEdge's MetaServer serves an edge node. One in ten services is labelled noproxy=edgemesh.`,
        'file = file-backed resident pages, mostly the node binary (a bare `node -e` idles at about 40 MiB RSS, 33 of them file-backed).',
        ...fp.rows.filter((r) => r.why).map((r) => `${r.source} ${fmtN(r.services)}: not measured: ${r.why}`),
      ],
    },
  ];
}

function footprintTargets(fp: FootprintResult | undefined): TargetResult[] {
  const t: TargetResult[] = [];
  const why = fp ? undefined : 'footprint section not run (--only)';
  for (const source of ['services-dir', 'kubernetes-api'] as const) {
    const r1 = fp?.rows.find((r) => r.source === source && r.services === 1000);
    const r10 = fp?.rows.find((r) => r.source === source && r.services === 10_000);
    t.push(target(`RSS 20 s after the first sync, 1 000 services, ${source}`, r1?.rssMiB ?? null, 'MiB', '<= 60', (v) => v <= 60, r1?.why ?? why));
    t.push(target(`peak RSS, 1 000 services, ${source}`, r1?.peakMiB ?? null, 'MiB', '<= 80', (v) => v <= 80, r1?.why ?? why));
    t.push(target(`start to first sync, 1 000 services, ${source}`, r1?.startupMs ?? null, 'ms', '<= 1000', (v) => v <= 1000, r1?.why ?? why));
    t.push(target(`RSS 20 s after the first sync, 10 000 services, ${source}`, r10?.rssMiB ?? null, 'MiB', '<= 110', (v) => v <= 110, r10?.why ?? why ?? (quick ? 'full run only' : undefined)));
    t.push(target(`start to first sync, 10 000 services, ${source}`, r10?.startupMs ?? null, 'ms', '<= 4000', (v) => v <= 4000, r10?.why ?? why ?? (quick ? 'full run only' : undefined)));
    t.push(target(`idle CPU, 10 000 services, ${source}`, r10?.idleCpuPct ?? null, '% of one core', '< 1', (v) => v < 1, r10?.why ?? why ?? (quick ? 'full run only' : undefined)));
  }
  return t;
}

function chart(ctl: ReturnType<typeof controlTables> | undefined, fs: FullSyncResult | undefined, d: DataResult | undefined, tun: TunnelResult | undefined, rel: RelayResult | undefined): ChartGroup[] {
  const groups: ChartGroup[] = [];
  if (ctl && fs) {
    const k = Math.max(...fs.samples.map((s) => s.kube));
    const r = (a: number | null, b: number | null) => (a !== null && b !== null && b > 0 ? a / b : null);
    groups.push({
      title: `Full sync N=1 000 on ${fmtN(k)} kube-proxy services: iptables-restore time / ours`,
      bars: [
        { label: 'iptables-legacy', value: r(ctl.med('iptables-legacy-restore', k, 1000), ctl.med('ours iptables-legacy', k, 1000)) },
        { label: 'iptables-nft', value: r(ctl.med('iptables-nft-restore', k, 1000), ctl.med('ours iptables-nft', k, 1000)) },
        { label: 'nftables (vs iptables-nft-restore)', value: r(ctl.med('iptables-nft-restore', k, 1000), ctl.med('ours nftables', k, 1000)) },
        { label: 'nftables (vs nft -f)', value: r(ctl.med('nft -f', k, 1000), ctl.med('ours nftables', k, 1000)) },
      ],
    });
    groups.push({
      title: `Full sync N=1 000 on ${fmtN(k)} services: per-rule iptables (extrapolated) / ours`,
      bars: [
        { label: 'iptables-legacy', value: r(ctl.perRule('legacy', k, 1000), ctl.med('ours iptables-legacy', k, 1000)) },
        { label: 'iptables-nft', value: r(ctl.perRule('nft', k, 1000), ctl.med('ours iptables-nft', k, 1000)) },
        { label: 'nftables', value: r(ctl.perRule('nft', k, 1000), ctl.med('ours nftables', k, 1000)) },
      ],
    });
  }
  if (d) {
    for (const [s, topo] of [
      [1, 'netns'],
      [4, 'netns'],
    ] as [number, Topology][]) {
      const dir = med(d.iperf.find((x) => x.topo === topo && x.variant === 'direct' && x.streams === s)?.gbps ?? []);
      groups.push({
        title: `Throughput ${topo}, ${s} stream${s > 1 ? 's' : ''}: ratio to direct`,
        bars: VARIANTS.filter((v) => v !== 'direct').map((v) => {
          const g = med(d.iperf.find((x) => x.topo === topo && x.variant === v && x.streams === s)?.gbps ?? []);
          return { label: v, value: g !== null && dir ? g / dir : null };
        }),
      });
    }
    const dir = med(d.conns.find((x) => x.topo === 'netns' && x.variant === 'direct' && x.concurrency === 16)?.perSec ?? []);
    groups.push({
      title: 'Short connections netns, concurrency 16: conn/s ratio to direct',
      bars: VARIANTS.filter((v) => v !== 'direct').map((v) => {
        const g = med(d.conns.find((x) => x.topo === 'netns' && x.variant === v && x.concurrency === 16)?.perSec ?? []);
        return { label: v, value: g !== null && dir ? g / dir : null };
      }),
    });
  }
  if (tun) groups.push(tunnelChart(tun));
  if (rel) groups.push(relayChart(rel));
  return groups;
}

const README_START = '<!-- bench:start -->';
const README_END = '<!-- bench:end -->';

/** Rewrites docs/benchmarks.md's results (between the markers) from this run; null when there are no markers. */
function updateReadme(r: BenchResults, md: string): boolean | null {
  const path = join(ROOT, 'docs', 'benchmarks.md');
  if (!existsSync(path)) return null;
  const text = readFileSync(path, 'utf8');
  const a = text.indexOf(README_START);
  const b = text.indexOf(README_END);
  if (a < 0 || b < a) return null;
  const body = md.replace(/^# .*\n/, '').replace(/\]\(latest\.svg\)/g, '](../bench/results/latest.svg)');
  const section = `${README_START}\n<!-- written by npm run bench (${r.mode}, ${r.date}); do not edit by hand -->\n${body}\n${README_END}`;
  writeFileSync(path, text.slice(0, a) + section + text.slice(b + README_END.length));
  return readFileSync(path, 'utf8').includes(r.date);
}

async function main(): Promise<void> {
  const t0 = performance.now();
  const date = new Date().toISOString();
  const mach = machine();
  log(`${quick ? 'quick' : 'full'} run; ${mach.nproc} CPUs (${mach.cpu}), kernel ${mach.kernel}; temp ${tmp}`);
  const notes: string[] = [];
  const tools = buildTools(tmp, join(tmpdir(), 'edgemesh-bench-gocache'));
  for (const [k, v] of Object.entries(tools.missing)) notes.push(`${k}: not measured: ${v}`);

  let fs: FullSyncResult | undefined;
  let ctl: ReturnType<typeof controlTables> | undefined;
  let ag: AgentResults | undefined;
  let d: DataResult | undefined;
  let tun: TunnelResult | undefined;
  let rel: RelayResult | undefined;
  const kubeNs: KubeNs[] = [];
  if (only.has('control') || only.has('agent')) {
    for (const k of P.kube) for (const f of ['legacy', 'nft'] as const) kubeNs.push(await kubeNamespace(`k${f.slice(0, 1)}${k / 1000}`, f, k));
    notes.push(`kube-proxy tables loaded in ${kubeNs.map((k) => `${k.flavor}/${fmtN(k.services)}: ${(k.loadMs / 1000).toFixed(1)} s`).join(', ')} (iptables-restore --noflush, 1 000 services per input)`);
  }
  if (only.has('control')) {
    fs = await measureFullSync(kubeNs, P.sizes, P.rounds, P.cap, tmp);
    ctl = controlTables(fs);
  }
  if (only.has('agent')) {
    const byFlavor = new Map(kubeNs.map((k) => [`${k.flavor}/${k.services}`, k]));
    ag = await agentPhase(byFlavor, P.agentKube);
  }
  for (const k of kubeNs) await k.ns.destroy();
  if (only.has('data')) {
    const topos = [];
    try {
      for (const topo of ['netns', 'lo'] as Topology[]) topos.push(await setupTopology(topo, tools, tmp));
      d = await measureDataPlane(topos, tools, { rounds: P.dataRounds, iperfSeconds: P.iperfSeconds, connMs: P.connMs, connMax: P.connMax });
    } finally {
      for (const t of topos) for (const n of t.namespaces) await n.destroy();
    }
  }
  if (only.has('tunnel')) {
    let ts: TunnelSetup | undefined;
    try {
      ts = await setupTunnel(tools, tmp);
      tun = await measureTunnel(ts, tools, { rounds: P.tunnelRounds, iperfSeconds: P.iperfSeconds, connMs: P.connMs, connMax: P.connMax });
    } finally {
      await destroyTunnel(ts);
    }
  }
  if (only.has('relay')) {
    let rs: RelaySetup | undefined;
    try {
      rs = await setupRelay(tools, tmp);
      rel = await measureRelay(rs, tools, { rounds: P.relayRounds, iperfSeconds: P.iperfSeconds, connMs: P.connMs, connMax: P.connMax });
    } finally {
      await destroyRelay(rs);
    }
  }

  let fp: FootprintResult | undefined;
  if (only.has('footprint')) {
    fp = await measureFootprint(tmp, P.footprintSizes, P.footprintSettleMs, (a) => {
      agents.length = 0;
      if (a) agents.push(a);
    });
  }

  const tables = [...(ctl?.tables ?? []), ...(ag ? agentTables(ag) : []), ...(d ? dataTables(d) : []), ...(tun ? tunnelTables(tun) : []), ...(rel ? relayTables(rel) : []), ...(fp ? footprintTables(fp) : [])];
  const results: BenchResults = {
    schema: 1,
    date,
    mode: quick ? 'quick' : 'full',
    machine: mach,
    durationS: (performance.now() - t0) / 1000,
    measurements: { fullSync: fs ?? null, agent: ag ?? null, dataPlane: d ?? null, tunnel: tun ?? null, relay: rel ?? null, footprint: fp ?? null, params: P },
    tables,
    chart: chart(ctl, fs, d, tun, rel),
    targets: [],
    notes: [
      ...notes,
      'Interleaved variants (order rotated every round), medians; only ratios within this run mean anything on a shared 2-core machine.',
      'Data plane: the proxies run in the node namespace; HAProxy (tcp mode, splice-request/response, its default threads), Go io.Copy (GOMAXPROCS default), Node socket.pipe; ours is reached the real way (service address -> EDGE-MESH DNAT written by our backend -> proxy reads SO_ORIGINAL_DST), the peers by their listen address.',
      'Loopback topology: the service range is a local route on lo (ip route add local 10.96.0.0/12 dev lo), so that every client leg is a loopback path with the same MSS; until 2026-11-26 it was routed via edgemesh0 (MTU 1500), which gave our client leg MSS 1448 against 32-64 KiB for the peers and cost ours ~13 % on loopback throughput (measured: HAProxy reached through the same DNAT and route lost the same).',
    ],
  };
  // The docs target needs docs/benchmarks.md rewritten from the finished results: targets first without it, then again.
  results.targets = [...buildTargets(fs, ctl, ag, d, tun, rel, null), ...footprintTargets(fp)];
  const mdProbe = (await import('./results.js')).renderMarkdown(results, 'latest.svg');
  const readmeOk = updateReadme(results, mdProbe);
  results.targets = [...buildTargets(fs, ctl, ag, d, tun, rel, readmeOk), ...footprintTargets(fp)];
  if (readmeOk !== null) updateReadme(results, (await import('./results.js')).renderMarkdown(results, 'latest.svg'));
  const problems = validateResults(results);
  if (problems.length) throw new Error(`results do not have the documented shape: ${problems.join('; ')}`);
  const dir = join(ROOT, 'bench', 'results');
  const paths = writeResults(dir, results);
  for (const t of tables) process.stdout.write(renderTableText(t) + '\n\n');
  process.stdout.write(renderTargetsText(results.targets) + '\n\n');
  const met = results.targets.filter((x) => x.met === true).length;
  const missed = results.targets.filter((x) => x.met === false).length;
  const nm = results.targets.filter((x) => x.met === null).length;
  process.stdout.write(`${machineLine(results)}\ntargets: ${met} met, ${missed} missed, ${nm} not measured\nwrote ${paths.json}, ${paths.md}, ${paths.svg}\n`);
}

main()
  .then(() => teardown())
  .catch(async (e: unknown) => {
    process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
    await teardown();
    process.exitCode = 1;
  });
