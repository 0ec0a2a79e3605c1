// The tunnel section's results: its measurements' shape, its tables, targets and chart group.
// Pure (no I/O), so that the rendering is unit-tested (test/unit/bench-results.test.ts);
// bench/tunnel.ts measures, bench/run.ts puts this into the results.
import { fmt, median, target, type ChartGroup, type Table, type TargetResult } from './results.js';

export const TUNNEL_VARIANTS = ['direct', 'ours direct path', 'ours tunnel', 'haproxy TLS hop'] as const;
export type TunnelVariant = (typeof TUNNEL_VARIANTS)[number];

export interface TunnelIperfSample {
  variant: TunnelVariant;
  streams: number;
  gbps: number[];
  /** Both proxies' CPU (cloud + edge node) per GB received. */
  cpuSPerGB: number[];
  cloudCpuSPerGB: number[];
  edgeCpuSPerGB: number[];
  why?: string;
}

export interface TunnelConnSample {
  variant: TunnelVariant;
  concurrency: number;
  perSec: number[];
  p50us: number[];
  p99us: number[];
  errors: number[];
  /** Both proxies' CPU per completed connection. */
  cpuUsPerConn: number[];
  /** Ours tunnel: resumed / dialled tunnel connections of the run (cloud proxy counters). */
  resumedShare: number[];
  /** HAProxy TLS hop: the edge HAProxy's SslFrontendSessionReuse_pct right after the run (its last-second rate). */
  haproxyReusePct: number[];
  why?: string;
}

export interface TunnelTls {
  /** TcpProxy.ktls() of the cloud proxy (whether the kernel can take TLS records). */
  ktls: { available: boolean; reason: string } | null;
  /** Cloud proxy, whole run: tunnel connections dialled, established, resumed, with kTLS. */
  dialed: number;
  dialOk: number;
  resumed: number;
  ktlsConns: number;
  /** Edge proxy, whole run: tunnel connections accepted, served, resumed. */
  inAccepted: number;
  inOk: number;
  inResumed: number;
  /** Handshake failures, refusals, failed dials, proxy deaths seen by either side (only nonzero counts). */
  problems: Record<string, number>;
  /** Connection ends other than a clean EOF, by side and reason/code (the proxies' 'failures' events). */
  ends?: Record<string, number>;
}

export interface TunnelResult {
  iperf: TunnelIperfSample[];
  conns: TunnelConnSample[];
  params: { rounds: number; iperfSeconds: number; connMs: number; connMax: number; concurrency: number };
  tls: TunnelTls | null;
  haproxy: { version: string; openssl: string } | null;
  notes: string[];
}

const med = (xs: readonly number[] | undefined): number | null => (xs?.length ? median(xs) : null);
const ratio = (a: number | null, b: number | null): number | null => (a !== null && b !== null && b > 0 ? a / b : null);
const pct = (x: number | null): string => (x === null ? '—' : `${(x * 100).toFixed(x === 1 || x === 0 ? 0 : 1)} %`);

function iperfOf(r: TunnelResult, v: TunnelVariant, s: number): TunnelIperfSample | undefined {
  return r.iperf.find((x) => x.variant === v && x.streams === s);
}

function connOf(r: TunnelResult, v: TunnelVariant): TunnelConnSample | undefined {
  return r.conns.find((x) => x.variant === v && x.concurrency === r.params.concurrency);
}

/** The ratios the targets ask for: ours tunnel / HAProxy TLS hop. */
export function tunnelRatios(r: TunnelResult): { gbps1: number | null; gbps4: number | null; cpu1: number | null; cpu4: number | null; connPerSec: number | null; p99: number | null } {
  const o = 'ours tunnel';
  const h = 'haproxy TLS hop';
  return {
    gbps1: ratio(med(iperfOf(r, o, 1)?.gbps), med(iperfOf(r, h, 1)?.gbps)),
    gbps4: ratio(med(iperfOf(r, o, 4)?.gbps), med(iperfOf(r, h, 4)?.gbps)),
    cpu1: ratio(med(iperfOf(r, o, 1)?.cpuSPerGB), med(iperfOf(r, h, 1)?.cpuSPerGB)),
    cpu4: ratio(med(iperfOf(r, o, 4)?.cpuSPerGB), med(iperfOf(r, h, 4)?.cpuSPerGB)),
    connPerSec: ratio(med(connOf(r, o)?.perSec), med(connOf(r, h)?.perSec)),
    p99: ratio(med(connOf(r, o)?.p99us), med(connOf(r, h)?.p99us)),
  };
}

/** "user space (...)" or "kTLS": which TLS path the tunnel ran. */
export function tlsPath(t: TunnelTls | null): string {
  if (!t) return 'not measured';
  if (t.ktlsConns > 0) return `kTLS on ${t.ktlsConns} of ${t.dialOk} tunnel connections`;
  return `user space (OpenSSL SSL_read/SSL_write in the relay threads; kTLS ${t.ktls ? (t.ktls.available ? 'available but unused' : `unavailable: ${t.ktls.reason}`) : 'state unknown'})`;
}

export function tunnelTables(r: TunnelResult): Table[] {
  const rows: (string | number | null)[][] = [];
  for (const v of TUNNEL_VARIANTS) {
    const row: (string | number | null)[] = [v];
    let why: string | undefined;
    for (const s of [1, 4]) {
      const x = iperfOf(r, v, s);
      const g = med(x?.gbps);
      why ??= x?.why;
      row.push(g, ratio(g, med(iperfOf(r, 'direct', s)?.gbps)), med(x?.cpuSPerGB));
    }
    const c1 = med(iperfOf(r, v, 1)?.cloudCpuSPerGB);
    const e1 = med(iperfOf(r, v, 1)?.edgeCpuSPerGB);
    row.push(c1 === null && e1 === null ? null : `${c1 === null ? '—' : c1.toFixed(3)} + ${e1 === null ? '—' : e1.toFixed(3)}`);
    row.push(why && row.slice(1).every((c) => c === null) ? `not measured: ${why}` : (why ?? ''));
    rows.push(row);
  }
  const crow: (string | number | null)[][] = [];
  for (const v of TUNNEL_VARIANTS) {
    const x = connOf(r, v);
    const rate = med(x?.perSec);
    const reuse = v === 'ours tunnel' ? pct(med(x?.resumedShare)) : v === 'haproxy TLS hop' ? (med(x?.haproxyReusePct) === null ? '—' : `${med(x?.haproxyReusePct)!.toFixed(0)} % (edge, last second)`) : '';
    const why = x?.why;
    crow.push([v, rate, ratio(rate, med(connOf(r, 'direct')?.perSec)), med(x?.p50us), med(x?.p99us), med(x?.cpuUsPerConn), med(x?.errors), reuse, why && rate === null ? `not measured: ${why}` : (why ?? '')]);
  }
  const q = tunnelRatios(r);
  const t = r.tls;
  const tlsNotes = t
    ? [
        `TLS path of the tunnel: ${tlsPath(t)}.`,
        `Resumed handshakes, whole section: ${t.resumed} of ${t.dialed} tunnel connections dialled by the cloud proxy (${pct(t.dialed ? t.resumed / t.dialed : null)}), ${t.dialOk} established; the edge proxy accepted ${t.inAccepted}, served ${t.inOk}, ${t.inResumed} resumed.`,
        `Tunnel handshake failures, refusals, failed dials: ${Object.keys(t.problems).length ? Object.entries(t.problems).map(([k, n]) => `${k} ${n}`).join(', ') : 'none'}.`,
        `Our proxies' connection ends other than a clean EOF (whole section, both of our variants, iperf3 and connload runs): ${Object.keys(t.ends ?? {}).length ? Object.entries(t.ends!).map(([k, n]) => `${k} ${n}`).join(', ') : 'none'}.`,
      ]
    : [];
  return [
    {
      title: `Tunnel: throughput, iperf3 (cloud pod -> cloud node -> edge node -> edge pod), ${r.params.iperfSeconds} s runs, median of ${r.params.rounds}`,
      columns: ['variant', '1 stream Gbit/s', 'ratio to direct', 'proxy CPU s/GB', '4 streams Gbit/s', 'ratio to direct', 'proxy CPU s/GB', 'CPU s/GB 1 stream: cloud + edge', 'note'],
      rows,
      notes: [
        'direct = the pod networks routed to each other over the underlay (routes added for this variant and ours direct path only); ours direct path = the cloud proxy dialling the edge pod (endpoint path direct); ours tunnel = cloud proxy -> mutual-TLS 1.3 tunnel -> edge proxy -> edge pod, no pod routes; haproxy TLS hop = HAProxy on the cloud node as TLS client (verify required, verifyhost edge) -> HAProxy on the edge node as TLS server verifying client certificates -> edge pod, no pod routes. Same EC certificates (src/tunnel/certs.ts) for both.',
        'proxy CPU = utime+stime of every proxy process of the variant (both nodes for the tunnel and the TLS hop) over the run, per GB received by iperf3.',
        ...tlsNotes,
      ],
    },
    {
      title: `Tunnel: short connections (connect, 100 B, echo, close), concurrency ${r.params.concurrency}, ${r.params.connMs} ms runs (at most ${fmt(r.params.connMax)} connections), median of ${r.params.rounds}`,
      columns: ['variant', 'conn/s', 'ratio to direct', 'p50 us', 'p99 us', 'proxy CPU us/conn', 'errors', 'TLS resumed', 'note'],
      rows: crow,
      notes: [
        'Every client connection is its own TLS connection on both TLS variants (ours: one tunnel connection per proxied connection, resuming the TLS session; HAProxy in tcp mode: one server connection per client connection, reusing its TLS session to the server by default).',
        'TLS resumed: ours = resumed / dialled tunnel connections during the run (cloud proxy counters); HAProxy = the edge HAProxy\'s SslFrontendSessionReuse_pct read right after the run (a rate over its last second).',
      ],
    },
    {
      title: 'Tunnel: ours tunnel / HAProxy TLS hop',
      columns: ['measure', 'ratio', 'wanted'],
      rows: [
        ['Gbit/s, 1 stream', q.gbps1, '>= 1.1'],
        ['Gbit/s, 4 streams', q.gbps4, '>= 1.1'],
        ['proxy CPU s/GB, 1 stream', q.cpu1, '< 1'],
        ['proxy CPU s/GB, 4 streams', q.cpu4, '< 1'],
        [`conn/s, c${r.params.concurrency}`, q.connPerSec, '>= 1'],
        [`p99, c${r.params.concurrency}`, q.p99, '<= 1'],
      ],
      notes: r.notes,
    },
  ];
}

/** The section's targets; `skipped` is the why when the section did not run (r undefined). */
export function tunnelTargets(r: TunnelResult | undefined, skipped: string): TargetResult[] {
  const q = r ? tunnelRatios(r) : undefined;
  const why = (kind: 'i' | 'c', s = 1): string | undefined => {
    if (!r) return skipped;
    if (kind === 'i') return iperfOf(r, 'ours tunnel', s)?.why ?? iperfOf(r, 'haproxy TLS hop', s)?.why;
    return connOf(r, 'ours tunnel')?.why ?? connOf(r, 'haproxy TLS hop')?.why;
  };
  const c = r?.params.concurrency ?? 16;
  return [
    target('tunnel throughput ours/HAProxy TLS hop, 1 stream', q?.gbps1 ?? null, 'x', '>= 1.1', (v) => v >= 1.1, why('i', 1)),
    target('tunnel throughput ours/HAProxy TLS hop, 4 streams', q?.gbps4 ?? null, 'x', '>= 1.1', (v) => v >= 1.1, why('i', 4)),
    target('tunnel proxy CPU s/GB ours / HAProxy TLS hop (both nodes), 1 stream', q?.cpu1 ?? null, 'x', '< 1', (v) => v < 1, why('i', 1)),
    target('tunnel proxy CPU s/GB ours / HAProxy TLS hop (both nodes), 4 streams', q?.cpu4 ?? null, 'x', '< 1', (v) => v < 1, why('i', 4)),
    target(`tunnel short connections/s ours/HAProxy TLS hop at concurrency ${c}`, q?.connPerSec ?? null, 'x', '>= 1', (v) => v >= 1, why('c')),
    target(`tunnel short connections p99 ours/HAProxy TLS hop at concurrency ${c}`, q?.p99 ?? null, 'x', '<= 1', (v) => v <= 1, why('c')),
  ];
}

export function tunnelChart(r: TunnelResult): ChartGroup {
  const q = tunnelRatios(r);
  return {
    title: 'Tunnel: ours / HAProxy TLS hop (CPU and p99 inverted: higher = ours better)',
    bars: [
      { label: 'Gbit/s, 1 stream', value: q.gbps1 },
      { label: 'Gbit/s, 4 streams', value: q.gbps4 },
      { label: 'HAProxy CPU s/GB / ours, 1 stream', value: q.cpu1 ? 1 / q.cpu1 : null },
      { label: 'HAProxy CPU s/GB / ours, 4 streams', value: q.cpu4 ? 1 / q.cpu4 : null },
      { label: `conn/s, c${r.params.concurrency}`, value: q.connPerSec },
      { label: `HAProxy p99 / ours, c${r.params.concurrency}`, value: q.p99 ? 1 / q.p99 : null },
    ],
  };
}
