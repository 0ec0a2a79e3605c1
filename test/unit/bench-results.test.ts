// The bench's results writer produces the documented shape of bench/results/latest.json: a
// `targets` array of { name, value, unit, target, met } (met null with a why when not measured),
// plus machine and date; and the Markdown and SVG beside it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { median, percentileSorted, renderMarkdown, renderSvg, renderTableMd, target, validateResults, writeResults, type BenchResults } from '../../bench/results.js';
import { tunnelChart, tunnelTables, tunnelTargets, type TunnelResult } from '../../bench/tunnel-report.js';
import { relayChart, relayTables, relayTargets, relayTlsPath, type PerRole, type RelayResult } from '../../bench/relay-report.js';

function sample(): BenchResults {
  return {
    schema: 1,
    date: '2026-01-01T00:00:00.000Z',
    mode: 'quick',
    machine: { nproc: 2, kernel: '6.1.0', cpu: 'test cpu', node: 'v20.0.0', tools: { iperf3: '3.12' } },
    durationS: 1,
    measurements: {},
    tables: [{ title: 'T', columns: ['a', 'b'], rows: [['x', 1.5], ['y', null]] }],
    chart: [{ title: 'G', bars: [{ label: 'ours', value: 1.3 }, { label: 'peer', value: null }] }],
    targets: [
      target('speed-up', 812.4, 'x', '>= 500', (v) => v >= 500),
      target('slow', 0.5, 'x', '>= 1', (v) => v >= 1),
      target('proxy', null, 'x', '>= 1.1', () => true, 'our proxy is not in this tree yet'),
    ],
    notes: [],
  };
}

describe('bench results', () => {
  it('targets carry name, value, unit, target and met; an unmeasured one says why', () => {
    const r = sample();
    expect(r.targets[0]).toEqual({ name: 'speed-up', value: 812.4, unit: 'x', target: '>= 500', met: true });
    expect(r.targets[1]!.met).toBe(false);
    expect(r.targets[2]).toEqual({ name: 'proxy', value: null, unit: 'x', target: '>= 1.1', met: null, why: 'our proxy is not in this tree yet' });
    expect(validateResults(r)).toEqual([]);
  });

  it('writes latest.json in the documented shape, with latest.md and latest.svg beside it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-results-'));
    try {
      const paths = writeResults(dir, sample());
      const json = JSON.parse(readFileSync(paths.json, 'utf8')) as BenchResults;
      expect(validateResults(json)).toEqual([]);
      for (const t of json.targets) expect(Object.keys(t).sort()).toEqual(expect.arrayContaining(['met', 'name', 'target', 'unit', 'value']));
      expect(json.machine.nproc).toBe(2);
      const md = readFileSync(paths.md, 'utf8');
      expect(md).toContain('2026-01-01T00:00:00.000Z');
      expect(md).toContain('| speed-up | 812 | x | >= 500 | MET |');
      expect(md).toContain('not measured: our proxy is not in this tree yet');
      const svg = readFileSync(paths.svg, 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg).toContain('not measured');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a met target without a value and an unmeasured one without a why', () => {
    const r = sample();
    r.targets.push({ name: 'bad', value: null, unit: 'x', target: '>= 1', met: true });
    r.targets.push({ name: 'bad2', value: null, unit: 'x', target: '>= 1', met: null });
    const p = validateResults(r);
    expect(p.some((x) => x.includes('cannot be met'))).toBe(true);
    expect(p.some((x) => x.includes('needs a why'))).toBe(true);
  });

  it('median and percentiles', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(percentileSorted([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99)).toBe(10);
    expect(percentileSorted([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50)).toBe(5);
  });
});

describe('bench results: the tunnel section', () => {
  const tunnel = (): TunnelResult => {
    const i = (variant: TunnelResult['iperf'][number]['variant'], streams: number, gbps: number[], cpu: number[], cloud: number[] = [], edge: number[] = []) => ({ variant, streams, gbps, cpuSPerGB: cpu, cloudCpuSPerGB: cloud, edgeCpuSPerGB: edge });
    const c = (variant: TunnelResult['conns'][number]['variant'], perSec: number[], p99us: number[], extra: Partial<TunnelResult['conns'][number]> = {}) => ({
      variant, concurrency: 16, perSec, p50us: p99us.map((x) => x / 2), p99us, errors: perSec.map(() => 0), cpuUsPerConn: [], resumedShare: [], haproxyReusePct: [], ...extra,
    });
    return {
      iperf: [
        i('direct', 1, [14, 13, 15], []),
        i('direct', 4, [26], []),
        i('ours direct path', 1, [5.6], [0.41], [0.41]),
        i('ours tunnel', 1, [4.4, 4.0, 4.2], [2.9, 3.0, 2.8], [1.8], [1.1]),
        i('ours tunnel', 4, [3.3], [3.1]),
        i('haproxy TLS hop', 1, [2.0], [4.0], [2.0], [2.0]),
        i('haproxy TLS hop', 4, [3.3], [3.0]),
      ],
      conns: [
        c('direct', [11000], [3000]),
        c('ours tunnel', [250], [120000], { resumedShare: [0.5] }),
        c('haproxy TLS hop', [200], [180000], { haproxyReusePct: [92] }),
        { ...c('ours direct path', [], []), why: 'our proxies did not start: boom' },
      ],
      params: { rounds: 3, iperfSeconds: 3, connMs: 2000, connMax: 40000, concurrency: 16 },
      tls: { ktls: { available: false, reason: 'kernel has no TLS ULP (CONFIG_TLS)' }, dialed: 200, dialOk: 200, resumed: 90, ktlsConns: 0, inAccepted: 200, inOk: 200, inResumed: 90, problems: {}, ends: { 'cloud reset/ECONNRESET': 2 } },
      haproxy: { version: '2.6.12', openssl: '3.0.19' },
      notes: ['a note'],
    };
  };

  it('renders the throughput, short-connection and ratio tables with the TLS path and the resumed share', () => {
    const r = tunnel();
    const [thr, conn, ratios] = tunnelTables(r);
    const thrMd = renderTableMd(thr!);
    expect(thrMd).toContain('### Tunnel: throughput, iperf3 (cloud pod -> cloud node -> edge node -> edge pod), 3 s runs, median of 3');
    // median 4.2 Gbit/s, 4.2/14 of direct, CPU median 2.9 s/GB, split cloud + edge
    expect(thrMd).toContain('| ours tunnel | 4.20 | 0.300 | 2.90 | 3.30 | 0.127 | 3.10 | 1.800 + 1.100 |  |');
    expect(thrMd).toContain('TLS path of the tunnel: user space (OpenSSL SSL_read/SSL_write in the relay threads; kTLS unavailable: kernel has no TLS ULP (CONFIG_TLS)).');
    expect(thrMd).toContain('Resumed handshakes, whole section: 90 of 200 tunnel connections dialled by the cloud proxy (45.0 %)');
    expect(thrMd).toContain('cloud reset/ECONNRESET 2');
    const connMd = renderTableMd(conn!);
    expect(connMd).toContain('| ours tunnel | 250 | 0.023 | 60 000 | 120 000 | — | 0.000 | 50.0 % |  |');
    expect(connMd).toContain('| haproxy TLS hop | 200 | 0.018 | 90 000 | 180 000 | — | 0.000 | 92 % (edge, last second) |  |');
    expect(connMd).toContain('| ours direct path | — | — | — | — | — | — |  | not measured: our proxies did not start: boom |');
    const ratioMd = renderTableMd(ratios!);
    expect(ratioMd).toContain('| Gbit/s, 1 stream | 2.10 | >= 1.1 |');
    expect(ratioMd).toContain('| proxy CPU s/GB, 4 streams | 1.03 | < 1 |');
    expect(ratioMd).toContain('| p99, c16 | 0.667 | <= 1 |');
  });

  it('declares its targets as met or missed, and not measured with a why when the section did not run', () => {
    const t = tunnelTargets(tunnel(), 'tunnel not run');
    expect(t.map((x) => [x.name, x.value, x.met])).toEqual([
      ['tunnel throughput ours/HAProxy TLS hop, 1 stream', 2.1, true],
      ['tunnel throughput ours/HAProxy TLS hop, 4 streams', 1, false],
      ['tunnel proxy CPU s/GB ours / HAProxy TLS hop (both nodes), 1 stream', 0.725, true],
      ['tunnel proxy CPU s/GB ours / HAProxy TLS hop (both nodes), 4 streams', 1.033, false],
      ['tunnel short connections/s ours/HAProxy TLS hop at concurrency 16', 1.25, true],
      ['tunnel short connections p99 ours/HAProxy TLS hop at concurrency 16', 0.66667, true],
    ]);
    const skipped = tunnelTargets(undefined, 'tunnel not run in this invocation (--only)');
    expect(skipped).toHaveLength(6);
    for (const x of skipped) expect(x).toMatchObject({ value: null, met: null, why: 'tunnel not run in this invocation (--only)' });
    const r = { ...sample(), targets: [...sample().targets, ...t], tables: tunnelTables(tunnel()), chart: [tunnelChart(tunnel())] };
    expect(validateResults(r)).toEqual([]);
    expect(renderMarkdown(r)).toContain('| tunnel throughput ours/HAProxy TLS hop, 1 stream | 2.10 | x | >= 1.1 | MET |');
    expect(renderSvg(r.chart, 'x')).toContain('HAProxy p99 / ours, c16');
  });
});

describe('bench results: the relay section', () => {
  const roles = (dialler: number[], relay: number[], nodeB: number[]): PerRole => ({ dialler, relay, nodeB });
  const relay = (): RelayResult => {
    const i = (variant: RelayResult['iperf'][number]['variant'], streams: number, gbps: number[], cpu: PerRole) => ({ variant, streams, gbps, cpuSPerGB: cpu });
    const c = (variant: RelayResult['conns'][number]['variant'], perSec: number[], p99us: number[], cpu: PerRole, extra: Partial<RelayResult['conns'][number]> = {}) => ({
      variant, concurrency: 16, perSec, p50us: p99us.map((x) => x / 2), p99us, errors: perSec.map(() => 0), cpuUsPerConn: cpu, resumedShare: [], haproxyReusePct: [], ...extra,
    });
    return {
      iperf: [
        i('ours direct tunnel', 1, [2.4, 2.0, 2.2], roles([1.0, 1.2, 1.1], [], [1.2])),
        i('ours relay', 1, [2.1], roles([1.4], [0.6], [1.2])),
        i('haproxy relay chain', 1, [1.5], roles([1.8], [0.8], [1.2])),
        i('ours direct tunnel', 4, [2.4], roles([1.5], [], [1.0])),
        i('ours relay', 4, [1.2], roles([1.7], [0.9], [1.4])),
        i('haproxy relay chain', 4, [2.0], roles([1.7], [0.6], [1.3])),
      ],
      conns: [
        c('ours direct tunnel', [450], [100000], roles([780], [], [1100]), { resumedShare: [0.8] }),
        c('ours relay', [350], [90000], roles([780], [500], [1200]), { resumedShare: [0.889] }),
        c('haproxy relay chain', [], [], roles([], [], []), { why: 'haproxy did not start: boom' }),
      ],
      params: { rounds: 3, iperfSeconds: 3, connMs: 2000, connMax: 40000, concurrency: 16 },
      counters: {
        ktls: { available: false, reason: 'kernel has no TLS ULP (CONFIG_TLS)' },
        ktlsConns: 0,
        dialed: 400,
        dialOk: 400,
        resumed: 340,
        dialJoinOk: 180,
        relayJoinsOk: 180,
        relayBytes: 2.5e9,
        registered: 1,
        relayPipes: { created: 4, reused: 176, spliceFallbacks: 0 },
        dataConns: 180,
        inAccepted: 220,
        inOk: 400,
        problems: {},
        ends: { 'relay reset/ECONNRESET': 3 },
        after: { fds: { dialler: [30, 31], relay: [25, 25], nodeB: [28, null] }, active: { dialler: 0, relay: 0, nodeB: 0 }, pendingJoins: 0, sessions: 'registered' },
      },
      haproxy: { version: '2.6.12', openssl: '3.0.19' },
      notes: ['a relay note'],
    };
  };

  it('renders throughput and short connections with CPU per role, the relay alone, the TLS path and the resumed share', () => {
    const [thr, conn, alone, ratios] = relayTables(relay());
    const thrMd = renderTableMd(thr!);
    expect(thrMd).toContain('### Relay: throughput, iperf3 (client pod -> node A -> relay -> node B -> server pod), 3 s runs, median of 3');
    expect(thrMd).toContain('| variant | 1 stream Gbit/s | ratio to ours direct tunnel | CPU s/GB dialler | relay | node B | 4 streams Gbit/s | ratio to ours direct tunnel | CPU s/GB dialler | relay | node B | note |');
    // medians: 2.2 Gbit/s, CPU 1.1 s/GB; no relay process on the direct tunnel's path
    expect(thrMd).toContain('| ours direct tunnel | 2.20 | 1.00 | 1.10 | — | 1.20 | 2.40 | 1.00 | 1.50 | — | 1.00 |  |');
    expect(thrMd).toContain('| ours relay | 2.10 | 0.955 | 1.40 | 0.600 | 1.20 | 1.20 | 0.500 | 1.70 | 0.900 | 1.40 |  |');
    expect(thrMd).toContain('TLS path: user space (OpenSSL SSL_read/SSL_write in the dialler\'s and node B\'s threads; kTLS unavailable: kernel has no TLS ULP (CONFIG_TLS)); the relay runs no TLS at all on relayed connections.');
    expect(thrMd).toContain('Resumed handshakes, whole section: 340 of 400 tunnel connections dialled by node A (85.0 %), 400 established, 180 of them joined through the relay.');
    expect(thrMd).toContain('180 joins spliced, 2.50 GB of ciphertext spliced, 1 node(s) registered at the end; splice(2) pipes created 4, reused 176, falls back to copying 0.');
    expect(thrMd).toContain('Refused joins, failed data connections, handshake failures, deaths: none.');
    expect(thrMd).toContain('relay reset/ECONNRESET 3');
    expect(thrMd).toContain('2.5 s after the last run: open fds (before the section -> after) dialler 30 -> 31, relay 25 -> 25, node B 28 -> ?; live connections dialler 0, relay 0, node B 0; joins waiting 0; node B\'s relay session: registered.');
    const connMd = renderTableMd(conn!);
    expect(connMd).toContain('| ours relay | 350 | 0.778 | 45 000 | 90 000 | 780 | 500 | 1 200 | 0.000 | 88.9 % |  |');
    expect(connMd).toContain('| haproxy relay chain | — | — | — | — | — | — | — | — | — | not measured: haproxy did not start: boom |');
    const aloneMd = renderTableMd(alone!);
    // total = the roles' medians summed: 1.4 + 0.6 + 1.2; 780 + 500 + 1200
    expect(aloneMd).toContain('| ours (TcpProxy relay: join, splice) | 0.600 | 0.900 | 500 | 3.20 | 2 480 |');
    expect(aloneMd).toContain('| HAProxy (tcp mode, splice) | 0.800 | 0.600 | — | 3.80 | — |');
    const ratioMd = renderTableMd(ratios!);
    expect(ratioMd).toContain('| Gbit/s 1 stream, ours relay / ours direct tunnel | 0.955 | >= 0.9 |');
    expect(ratioMd).toContain('| Gbit/s 1 stream, ours relay / HAProxy relay chain | 1.40 | >= 1.1 |');
    // (1.1 + 1.2) / (1.4 + 0.6 + 1.2)
    expect(ratioMd).toContain('| all roles\' CPU s/GB 1 stream, ours direct tunnel / ours relay (the throughput ratio to expect when the cores are the limit) | 0.719 |  |');
    expect(ratioMd).toContain('| relay CPU s/GB 4 streams, ours / HAProxy | 1.50 | < 1 |');
    expect(ratioMd).toContain('| conn/s c16, ours relay / HAProxy relay chain | — |  |');
    expect(ratioMd).toContain('- a relay note');
    expect(relayTlsPath({ ...relay().counters!, ktlsConns: 12 })).toBe('kTLS on 12 tunnel connections');
    expect(relayTlsPath(null)).toBe('not measured');
  });

  it('declares its targets as met or missed, and not measured with a why when the section did not run', () => {
    const t = relayTargets(relay(), 'relay not run');
    expect(t.map((x) => [x.name, x.value, x.target, x.met])).toEqual([
      ['relayed throughput ours relay / ours direct tunnel, 1 stream', 0.95455, '>= 0.9', true],
      ['relayed throughput ours relay / HAProxy relay chain, 1 stream', 1.4, '>= 1.1', true],
      ['relayed throughput ours relay / HAProxy relay chain, 4 streams', 0.6, '>= 1.1', false],
      ['relay process CPU s/GB ours / HAProxy tcp relay, 1 stream', 0.75, '< 1', true],
      ['relay process CPU s/GB ours / HAProxy tcp relay, 4 streams', 1.5, '< 1', false],
    ]);
    // HAProxy's iperf3 failed: its targets say why, with no value
    const r = relay();
    r.iperf = r.iperf.filter((x) => x.variant !== 'haproxy relay chain');
    r.iperf.push({ variant: 'haproxy relay chain', streams: 1, gbps: [], cpuSPerGB: roles([], [], []), why: 'iperf3 failed: boom' });
    expect(relayTargets(r, 'x')[1]).toMatchObject({ value: null, met: null, why: 'iperf3 failed: boom' });
    const skipped = relayTargets(undefined, 'relay not run in this invocation (--only)');
    expect(skipped).toHaveLength(5);
    for (const x of skipped) expect(x).toMatchObject({ value: null, met: null, why: 'relay not run in this invocation (--only)' });
    const res = { ...sample(), targets: [...sample().targets, ...t], tables: relayTables(relay()), chart: [relayChart(relay())] };
    expect(validateResults(res)).toEqual([]);
    expect(renderMarkdown(res)).toContain('| relayed throughput ours relay / HAProxy relay chain, 4 streams | 0.600 | x | >= 1.1 | MISSED |');
    const svg = renderSvg(res.chart, 'x');
    expect(svg).toContain('HAProxy relay CPU s/GB / ours, 1 stream');
    expect(svg).toContain('1.33'); // 1 / 0.75
  });
});
