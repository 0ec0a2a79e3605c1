// The relay section's results: its measurements' shape, its tables, targets and chart group.
// Pure (no I/O), so that the rendering is unit-tested (test/unit/bench-results.test.ts);
// bench/relay.ts measures, bench/run.ts puts this into the results.
import { fmt, median, target, type ChartGroup, type Table, type TargetResult } from './results.js';

export const RELAY_VARIANTS = ['ours direct tunnel', 'ours relay', 'haproxy relay chain'] as const;
export type RelayVariant = (typeof RELAY_VARIANTS)[number];

/** The three process roles: node A (dials), the relay, node B (the endpoint's node). */
export const RELAY_ROLES = ['dialler', 'relay', 'nodeB'] as const;
export type RelayRole = (typeof RELAY_ROLES)[number];
export type PerRole = Record<RelayRole, number[]>;

export const perRole = (): PerRole => ({ dialler: [], relay: [], nodeB: [] });

export interface RelayIperfSample {
  variant: RelayVariant;
  streams: number;
  gbps: number[];
  /** CPU seconds of each role's process per GB received by iperf3 (no relay process: empty). */
  cpuSPerGB: PerRole;
  why?: string;
}

export interface RelayConnSample {
  variant: RelayVariant;
  concurrency: number;
  perSec: number[];
  p50us: number[];
  p99us: number[];
  errors: number[];
  /** CPU microseconds of each role's process per completed connection. */
  cpuUsPerConn: PerRole;
  /** Ours: resumed / dialled tunnel connections of the run (dialler's counters). */
  resumedShare: number[];
  /** HAProxy: node B's SslFrontendSessionReuse_pct right after the run (its last-second rate). */
  haproxyReusePct: number[];
  why?: string;
}

export interface RelayCounters {
  /** TcpProxy.ktls() of the dialler. */
  ktls: { available: boolean; reason: string } | null;
  /** kTLS connections on the dialler and node B, whole section. */
  ktlsConns: number;
  /** Dialler, whole section (both of our variants). */
  dialed: number;
  dialOk: number;
  resumed: number;
  dialJoinOk: number;
  /** Relay, whole section. */
  relayJoinsOk: number;
  relayBytes: number;
  registered: number;
  /** Relay, whole section: pipes it created and reused for splice(2), and falls back to a user-space copy. */
  relayPipes?: { created: number; reused: number; spliceFallbacks: number };
  /** Node B, whole section. */
  dataConns: number;
  inAccepted: number;
  inOk: number;
  /** Refused joins, failed data connections, handshake failures, deaths (only nonzero counts). */
  problems: Record<string, number>;
  /** Connection ends other than a clean EOF, by role and reason/code. */
  ends: Record<string, number>;
  /** 2.5 s after the last run: open fds (before the section, after), live connections, joins waiting, node B's relay sessions. */
  after?: { fds: Record<RelayRole, [number | null, number | null]>; active: Record<RelayRole, number>; pendingJoins: number; sessions: string };
}

export interface RelayResult {
  iperf: RelayIperfSample[];
  conns: RelayConnSample[];
  params: { rounds: number; iperfSeconds: number; connMs: number; connMax: number; concurrency: number };
  counters: RelayCounters | null;
  haproxy: { version: string; openssl: string } | null;
  notes: string[];
}

const med = (xs: readonly number[] | undefined): number | null => (xs?.length ? median(xs) : null);
const ratio = (a: number | null, b: number | null): number | null => (a !== null && b !== null && b > 0 ? a / b : null);
const pct = (x: number | null): string => (x === null ? '—' : `${(x * 100).toFixed(x === 1 || x === 0 ? 0 : 1)} %`);

function iperfOf(r: RelayResult, v: RelayVariant, s: number): RelayIperfSample | undefined {
  return r.iperf.find((x) => x.variant === v && x.streams === s);
}

function connOf(r: RelayResult, v: RelayVariant): RelayConnSample | undefined {
  return r.conns.find((x) => x.variant === v && x.concurrency === r.params.concurrency);
}

/** Sum of the roles' CPU medians (roles without samples left out); null when none has one. */
function total(p: PerRole | undefined): number | null {
  const xs = RELAY_ROLES.map((k) => med(p?.[k])).filter((x): x is number => x !== null);
  return xs.length ? xs.reduce((a, b) => a + b, 0) : null;
}

export interface RelayRatios {
  /** ours relay / ours direct tunnel */
  vsDirect1: number | null;
  vsDirect4: number | null;
  vsDirectConn: number | null;
  /** ours relay / HAProxy relay chain */
  vsHaproxy1: number | null;
  vsHaproxy4: number | null;
  /** relay process CPU s/GB, ours / HAProxy's tcp relay */
  relayCpu1: number | null;
  relayCpu4: number | null;
  /** relay process CPU us/conn, ours / HAProxy's */
  relayCpuConn: number | null;
  connPerSec: number | null;
  p99: number | null;
  /** All roles' CPU s/GB at 1 stream, ours direct tunnel / ours relay: the throughput ratio to expect when the shared cores are the limit. */
  cpuBound1: number | null;
}

export function relayRatios(r: RelayResult): RelayRatios {
  const o = 'ours relay';
  const d = 'ours direct tunnel';
  const h = 'haproxy relay chain';
  return {
    vsDirect1: ratio(med(iperfOf(r, o, 1)?.gbps), med(iperfOf(r, d, 1)?.gbps)),
    vsDirect4: ratio(med(iperfOf(r, o, 4)?.gbps), med(iperfOf(r, d, 4)?.gbps)),
    vsDirectConn: ratio(med(connOf(r, o)?.perSec), med(connOf(r, d)?.perSec)),
    vsHaproxy1: ratio(med(iperfOf(r, o, 1)?.gbps), med(iperfOf(r, h, 1)?.gbps)),
    vsHaproxy4: ratio(med(iperfOf(r, o, 4)?.gbps), med(iperfOf(r, h, 4)?.gbps)),
    relayCpu1: ratio(med(iperfOf(r, o, 1)?.cpuSPerGB.relay), med(iperfOf(r, h, 1)?.cpuSPerGB.relay)),
    relayCpu4: ratio(med(iperfOf(r, o, 4)?.cpuSPerGB.relay), med(iperfOf(r, h, 4)?.cpuSPerGB.relay)),
    relayCpuConn: ratio(med(connOf(r, o)?.cpuUsPerConn.relay), med(connOf(r, h)?.cpuUsPerConn.relay)),
    connPerSec: ratio(med(connOf(r, o)?.perSec), med(connOf(r, h)?.perSec)),
    p99: ratio(med(connOf(r, o)?.p99us), med(connOf(r, h)?.p99us)),
    cpuBound1: ratio(total(iperfOf(r, d, 1)?.cpuSPerGB), total(iperfOf(r, o, 1)?.cpuSPerGB)),
  };
}

/** Which TLS path our agents ran. */
export function relayTlsPath(c: RelayCounters | null): string {
  if (!c) return 'not measured';
  if (c.ktlsConns > 0) return `kTLS on ${c.ktlsConns} tunnel connections`;
  return `user space (OpenSSL SSL_read/SSL_write in the dialler's and node B's threads; kTLS ${c.ktls ? (c.ktls.available ? 'available but unused' : `unavailable: ${c.ktls.reason}`) : 'state unknown'}); the relay runs no TLS at all on relayed connections`;
}

const list = (rec: Record<string, number>) => (Object.keys(rec).length ? Object.entries(rec).map(([k, n]) => `${k} ${n}`).join(', ') : 'none');

export function relayTables(r: RelayResult): Table[] {
  const rows: (string | number | null)[][] = [];
  for (const v of RELAY_VARIANTS) {
    const row: (string | number | null)[] = [v];
    let why: string | undefined;
    for (const s of [1, 4]) {
      const x = iperfOf(r, v, s);
      const g = med(x?.gbps);
      why ??= x?.why;
      row.push(g, ratio(g, med(iperfOf(r, 'ours direct tunnel', s)?.gbps)), med(x?.cpuSPerGB.dialler), med(x?.cpuSPerGB.relay), med(x?.cpuSPerGB.nodeB));
    }
    row.push(why && row.slice(1).every((c) => c === null) ? `not measured: ${why}` : (why ?? ''));
    rows.push(row);
  }
  const crow: (string | number | null)[][] = [];
  for (const v of RELAY_VARIANTS) {
    const x = connOf(r, v);
    const rate = med(x?.perSec);
    const reuse = v === 'haproxy relay chain' ? (med(x?.haproxyReusePct) === null ? '—' : `${med(x?.haproxyReusePct)!.toFixed(0)} % (node B, last second)`) : pct(med(x?.resumedShare));
    const why = x?.why;
    crow.push([v, rate, ratio(rate, med(connOf(r, 'ours direct tunnel')?.perSec)), med(x?.p50us), med(x?.p99us), med(x?.cpuUsPerConn.dialler), med(x?.cpuUsPerConn.relay), med(x?.cpuUsPerConn.nodeB), med(x?.errors), reuse, why && rate === null ? `not measured: ${why}` : (why ?? '')]);
  }
  const relayRows: (string | number | null)[][] = (['ours relay', 'haproxy relay chain'] as const).map((v) => [
    v === 'ours relay' ? 'ours (TcpProxy relay: join, splice)' : 'HAProxy (tcp mode, splice)',
    med(iperfOf(r, v, 1)?.cpuSPerGB.relay),
    med(iperfOf(r, v, 4)?.cpuSPerGB.relay),
    med(connOf(r, v)?.cpuUsPerConn.relay),
    total(iperfOf(r, v, 1)?.cpuSPerGB),
    total(connOf(r, v)?.cpuUsPerConn),
  ]);
  const q = relayRatios(r);
  const c = r.counters;
  const counterNotes = c
    ? [
        `TLS path: ${relayTlsPath(c)}.`,
        `Resumed handshakes, whole section: ${c.resumed} of ${c.dialed} tunnel connections dialled by node A (${pct(c.dialed ? c.resumed / c.dialed : null)}), ${c.dialOk} established, ${c.dialJoinOk} of them joined through the relay.`,
        `Relay, whole section: ${c.relayJoinsOk} joins spliced, ${fmt(c.relayBytes / 1e9)} GB of ciphertext spliced, ${c.registered} node(s) registered at the end${c.relayPipes ? `; splice(2) pipes created ${c.relayPipes.created}, reused ${c.relayPipes.reused}, falls back to copying ${c.relayPipes.spliceFallbacks}` : ''}. Node B opened ${c.dataConns} data connections for joins, its tunnel listener accepted ${c.inAccepted} connections (direct tunnel), and it served ${c.inOk} tunnel requests in all (direct and relayed).`,
        `Refused joins, failed data connections, handshake failures, deaths: ${list(c.problems)}.`,
        `Our processes' connection ends other than a clean EOF (whole section): ${list(c.ends)}.`,
        ...(c.after
          ? [
              `2.5 s after the last run: open fds (before the section -> after) dialler ${c.after.fds.dialler.map((x) => x ?? '?').join(' -> ')}, relay ${c.after.fds.relay.map((x) => x ?? '?').join(' -> ')}, node B ${c.after.fds.nodeB.map((x) => x ?? '?').join(' -> ')}; live connections dialler ${c.after.active.dialler}, relay ${c.after.active.relay}, node B ${c.after.active.nodeB}; joins waiting ${c.after.pendingJoins}; node B's relay session: ${c.after.sessions}.`,
            ]
          : []),
      ]
    : [];
  return [
    {
      title: `Relay: throughput, iperf3 (client pod -> node A -> relay -> node B -> server pod), ${r.params.iperfSeconds} s runs, median of ${r.params.rounds}`,
      columns: ['variant', '1 stream Gbit/s', 'ratio to ours direct tunnel', 'CPU s/GB dialler', 'relay', 'node B', '4 streams Gbit/s', 'ratio to ours direct tunnel', 'CPU s/GB dialler', 'relay', 'node B', 'note'],
      rows,
      notes: [
        'ours direct tunnel = node A dials node B\'s tunnel listener (mutual TLS 1.3), the relay namespace forwarding in the kernel (no relay process on the path); ours relay = node A asks the relay to join it to node B (registered there, no tunnel address needed), node B opens a data connection, TLS 1.3 end to end through the relay\'s splice; haproxy relay chain = HAProxy TLS client on node A -> HAProxy in tcp mode on the relay (forwards the TLS bytes, no termination) -> HAProxy TLS server on node B verifying client certificates -> server pod. Same EC certificates (src/tunnel/certs.ts) for all.',
        'CPU = utime+stime of each role\'s process over the run, per GB received by iperf3; — = no process of that role on the path.',
        ...counterNotes,
      ],
    },
    {
      title: `Relay: short connections (connect, 100 B, echo, close), concurrency ${r.params.concurrency}, ${r.params.connMs} ms runs (at most ${fmt(r.params.connMax)} connections), median of ${r.params.rounds}`,
      columns: ['variant', 'conn/s', 'ratio to ours direct tunnel', 'p50 us', 'p99 us', 'CPU us/conn dialler', 'relay', 'node B', 'errors', 'TLS resumed', 'note'],
      rows: crow,
      notes: [
        'Every client connection is its own TLS connection end to end on every variant (ours relayed: a join at the relay, a fresh data connection from node B, then the TLS handshake through the splice).',
        'TLS resumed: ours = resumed / dialled tunnel connections during the run (node A\'s counters); HAProxy = node B HAProxy\'s SslFrontendSessionReuse_pct read right after the run (a rate over its last second).',
      ],
    },
    {
      title: 'Relay: the relay process alone (CPU of the relay role; total = all three roles)',
      columns: ['relay', 'CPU s/GB 1 stream', 'CPU s/GB 4 streams', `CPU us/conn c${r.params.concurrency}`, 'total CPU s/GB 1 stream', 'total CPU us/conn'],
      rows: relayRows,
    },
    {
      title: 'Relay: ratios',
      columns: ['measure', 'ratio', 'wanted'],
      rows: [
        ['Gbit/s 1 stream, ours relay / ours direct tunnel', q.vsDirect1, '>= 0.9'],
        ['all roles\' CPU s/GB 1 stream, ours direct tunnel / ours relay (the throughput ratio to expect when the cores are the limit)', q.cpuBound1, ''],
        ['Gbit/s 4 streams, ours relay / ours direct tunnel', q.vsDirect4, ''],
        [`conn/s c${r.params.concurrency}, ours relay / ours direct tunnel`, q.vsDirectConn, ''],
        ['Gbit/s 1 stream, ours relay / HAProxy relay chain', q.vsHaproxy1, '>= 1.1'],
        ['Gbit/s 4 streams, ours relay / HAProxy relay chain', q.vsHaproxy4, '>= 1.1'],
        ['relay CPU s/GB 1 stream, ours / HAProxy', q.relayCpu1, '< 1'],
        ['relay CPU s/GB 4 streams, ours / HAProxy', q.relayCpu4, '< 1'],
        [`relay CPU us/conn c${r.params.concurrency}, ours / HAProxy`, q.relayCpuConn, ''],
        [`conn/s c${r.params.concurrency}, ours relay / HAProxy relay chain`, q.connPerSec, ''],
        [`p99 c${r.params.concurrency}, ours relay / HAProxy relay chain`, q.p99, ''],
      ],
      notes: r.notes,
    },
  ];
}

/** The section's targets; `skipped` is the why when the section did not run (r undefined). */
export function relayTargets(r: RelayResult | undefined, skipped: string): TargetResult[] {
  const q = r ? relayRatios(r) : undefined;
  const why = (a: RelayVariant, b: RelayVariant, s: number): string | undefined => (r ? (iperfOf(r, a, s)?.why ?? iperfOf(r, b, s)?.why) : skipped);
  return [
    target('relayed throughput ours relay / ours direct tunnel, 1 stream', q?.vsDirect1 ?? null, 'x', '>= 0.9', (v) => v >= 0.9, why('ours relay', 'ours direct tunnel', 1)),
    target('relayed throughput ours relay / HAProxy relay chain, 1 stream', q?.vsHaproxy1 ?? null, 'x', '>= 1.1', (v) => v >= 1.1, why('ours relay', 'haproxy relay chain', 1)),
    target('relayed throughput ours relay / HAProxy relay chain, 4 streams', q?.vsHaproxy4 ?? null, 'x', '>= 1.1', (v) => v >= 1.1, why('ours relay', 'haproxy relay chain', 4)),
    target('relay process CPU s/GB ours / HAProxy tcp relay, 1 stream', q?.relayCpu1 ?? null, 'x', '< 1', (v) => v < 1, why('ours relay', 'haproxy relay chain', 1)),
    target('relay process CPU s/GB ours / HAProxy tcp relay, 4 streams', q?.relayCpu4 ?? null, 'x', '< 1', (v) => v < 1, why('ours relay', 'haproxy relay chain', 4)),
  ];
}

export function relayChart(r: RelayResult): ChartGroup {
  const q = relayRatios(r);
  return {
    title: 'Relay: ours relay / ours direct tunnel and / HAProxy relay chain (CPU inverted: higher = ours better)',
    bars: [
      { label: 'Gbit/s 1 stream / ours direct tunnel', value: q.vsDirect1 },
      { label: 'Gbit/s 1 stream / HAProxy chain', value: q.vsHaproxy1 },
      { label: 'Gbit/s 4 streams / HAProxy chain', value: q.vsHaproxy4 },
      { label: 'HAProxy relay CPU s/GB / ours, 1 stream', value: q.relayCpu1 ? 1 / q.relayCpu1 : null },
      { label: 'HAProxy relay CPU s/GB / ours, 4 streams', value: q.relayCpu4 ? 1 / q.relayCpu4 : null },
      { label: `conn/s c${r.params.concurrency} / HAProxy chain`, value: q.connPerSec },
    ],
  };
}
