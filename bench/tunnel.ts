// The agent-to-agent tunnel in the data plane: iperf3 (1 and 4 streams) and short connections
// (C load generator at concurrency 16, C epoll echo server) from a cloud pod to an edge pod, on
// test/helpers/tunnel-topology.ts's two-node layout (built here with the bench's own Netns):
//
//   cloud pod 10.244.1.10 --- 10.244.1.1 cloud node 192.168.50.1 ---underlay--- 192.168.50.2 edge node 10.244.2.1 --- edge pod 10.244.2.10
//
// Variants: direct (pod routes added over the underlay: the limit), ours direct path (the cloud
// proxy dials the edge pod over those routes), ours tunnel (cloud proxy -> mutual-TLS tunnel ->
// edge proxy -> edge pod; no pod routes), HAProxy TLS hop (cloud HAProxy as TLS client -> edge
// HAProxy as TLS server verifying client certificates -> edge pod; no pod routes). The pod routes
// are added and deleted between runs (in the nodes' namespaces) so that each variant sees its own.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Netns, linkNetns } from '../src/dev/netns.js';
import { createBackend } from '../src/netfilter/factory.js';
import { initCa, issueNodeCert } from '../src/tunnel/certs.js';
import type { Tools } from './data.js';
import { ROOT } from './data.js';
import { cpuSeconds, desiredSet, log, sleep } from './lib.js';
import { TUNNEL_VARIANTS, type TunnelConnSample, type TunnelIperfSample, type TunnelResult, type TunnelTls, type TunnelVariant } from './tunnel-report.js';

const IPERF_PORT = 5201;
const ECHO_PORT = 7000;
const TUNNEL_PORT = 20006;
const CONCURRENCY = 16;
const EDGE_POD = '10.244.2.10';
const CLOUD_UL = '192.168.50.1';
const EDGE_UL = '192.168.50.2';
const PROXY_ADDR = '169.254.96.16';
const PROXY_PORT = 40001;

interface Endpoint {
  host: string;
  port: number;
}

type Target = { iperf: Endpoint; echo: Endpoint; pids: { cloud?: number; edge?: number }; podRoutes: boolean } | { why: string };

/** A line-oriented child: "ready ..." first, then one "stats {...}" line per "stats" request. */
export class LineChild {
  private waiters: { prefix: string; resolve: (line: string) => void }[] = [];
  private lines: string[] = [];
  stderr = '';
  /** How it ended, when it did ("exit 1", "SIGSEGV"). */
  ended: string | undefined;
  constructor(readonly child: ChildProcess) {
    child.on('exit', (code, signal) => (this.ended = signal ?? `exit ${code}`));
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      const w = this.waiters.findIndex((x) => line.startsWith(x.prefix));
      if (w >= 0) this.waiters.splice(w, 1)[0]!.resolve(line);
      else this.lines.push(line);
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
  }

  next(prefix: string, timeoutMs: number, what: string): Promise<string> {
    const i = this.lines.findIndex((l) => l.startsWith(prefix));
    if (i >= 0) return Promise.resolve(this.lines.splice(i, 1)[0]!);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: no "${prefix}" line within ${timeoutMs} ms: ${this.stderr.slice(-400)}`)), timeoutMs);
      const onExit = (code: number | null) => {
        clearTimeout(timer);
        reject(new Error(`${what} exited ${code}: ${this.stderr.slice(-400)}`));
      };
      this.child.once('exit', onExit);
      this.waiters.push({
        prefix,
        resolve: (l) => {
          clearTimeout(timer);
          this.child.off('exit', onExit);
          resolve(l);
        },
      });
    });
  }

  async stats(): Promise<ProxyReport> {
    if (this.ended) throw new Error(`proxy ended (${this.ended})`);
    this.child.stdin!.write('stats\n');
    return JSON.parse((await this.next('stats ', 5000, 'proxy stats')).slice(6)) as ProxyReport;
  }
}

export interface ProxyReport {
  stats: {
    relayed: number;
    tunnel: {
      dialed: number;
      dialOk: number;
      inAccepted: number;
      inOk: number;
      resumed: number;
      ktls: number;
      dialConnectFailed: number;
      dialHandshakeFailures: Record<string, number>;
      inHandshakeFailures: Record<string, number>;
      dialRefused: Record<string, number>;
      inRefused: Record<string, number>;
    };
  };
  ktls: { available: boolean; reason: string } | null;
  failures: Record<string, number>;
}

export interface TunnelSetup {
  namespaces: Netns[];
  cloudNode: Netns;
  edgeNode: Netns;
  cloudPod: Netns;
  targets: Map<TunnelVariant, Target>;
  cloudProxy?: LineChild;
  edgeProxy?: LineChild;
  haproxy?: { version: string; openssl: string; edgeSocket: string };
  podRoutes: boolean;
}

export function waitReady(child: ChildProcess, what: string, timeoutMs = 10_000): Promise<void> {
  return new Promise((resolveP, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`${what}: not ready within ${timeoutMs} ms: ${err.slice(-300)}`)), timeoutMs);
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready')) {
        clearTimeout(timer);
        resolveP();
      }
    });
    child.stderr?.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited ${code}: ${err.slice(-300)}`));
    });
  });
}

export async function waitListening(ns: Netns, port: number, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const r = await ns.run('ss', ['-Hltn', `sport = :${port}`], { allowFail: true });
    if (r.stdout.trim()) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on port ${port} in ${ns.name} after ${timeoutMs} ms`);
}

/** Adds (or deletes) the routes joining the two pod networks over the underlay. */
async function setPodRoutes(t: TunnelSetup, on: boolean): Promise<void> {
  if (t.podRoutes === on) return;
  const verb = on ? 'replace' : 'del';
  await t.cloudNode.run('ip', ['route', verb, '10.244.2.0/24', 'via', EDGE_UL]);
  await t.edgeNode.run('ip', ['route', verb, '10.244.1.0/24', 'via', CLOUD_UL]);
  t.podRoutes = on;
}

export function haproxyVersion(): { version: string; openssl: string } {
  const out = spawnSync('haproxy', ['-vv'], { encoding: 'utf8' }).stdout ?? '';
  const version = /HAProxy version (\S+)/.exec(out)?.[1] ?? 'unknown';
  const openssl = /Running on OpenSSL version : (?:OpenSSL )?(.*)/.exec(out)?.[1]?.trim() ?? 'unknown';
  return { version, openssl };
}

/** `show info` field of an HAProxy stats socket (a unix socket in the file system: no network). */
export function haproxyInfo(socket: string, field: string, timeoutMs = 2000): Promise<number | null> {
  return new Promise((resolve) => {
    let out = '';
    const s = createConnection(socket);
    const timer = setTimeout(() => {
      s.destroy();
      resolve(null);
    }, timeoutMs);
    s.on('connect', () => s.end('show info\n'));
    s.on('data', (d: Buffer) => (out += d.toString()));
    s.on('error', () => {
      clearTimeout(timer);
      resolve(null);
    });
    s.on('close', () => {
      clearTimeout(timer);
      const m = new RegExp(`^${field}: (\\S+)`, 'm').exec(out);
      resolve(m ? Number(m[1]) : null);
    });
  });
}

export async function setupTunnel(tools: Tools, tmp: string): Promise<TunnelSetup> {
  const namespaces: Netns[] = [];
  const mk = async (label: string) => {
    const ns = await Netns.create(label);
    namespaces.push(ns);
    return ns;
  };
  try {
    const cloudNode = await mk('tbcn');
    const edgeNode = await mk('tben');
    const cloudPod = await mk('tbcp');
    const edgePod = await mk('tbep');
    await linkNetns(cloudNode, `${CLOUD_UL}/24`, edgeNode, `${EDGE_UL}/24`);
    await linkNetns(cloudNode, '10.244.1.1/24', cloudPod, '10.244.1.10/24');
    await linkNetns(edgeNode, '10.244.2.1/24', edgePod, `${EDGE_POD}/24`);
    await cloudPod.run('ip', ['route', 'add', 'default', 'via', '10.244.1.1']);
    await edgePod.run('ip', ['route', 'add', 'default', 'via', '10.244.2.1']);
    for (const n of [cloudNode, edgeNode]) await n.sh('sysctl -qw net.ipv4.ip_forward=1');
    // Many short connections to one endpoint: let TIME_WAIT ports be reused, every variant alike.
    for (const n of [cloudPod, cloudNode, edgeNode]) await n.sh('sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"');
    const t: TunnelSetup = { namespaces, cloudNode, edgeNode, cloudPod, targets: new Map(), podRoutes: false };

    // Servers in the edge pod.
    if (!tools.missing.iperf3) {
      edgePod.spawn('iperf3', ['-s', '-B', EDGE_POD, '-p', String(IPERF_PORT)], { stdio: ['ignore', 'ignore', 'ignore'] });
      await waitListening(edgePod, IPERF_PORT);
    }
    if (tools.echo) await waitReady(edgePod.spawn(tools.echo, [EDGE_POD, String(ECHO_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] }), 'echo server');

    // The same EC certificates for our proxies and HAProxy.
    const certs = join(tmp, 'tunnel-certs');
    await initCa(certs);
    for (const n of ['cloud', 'edge']) {
      await issueNodeCert(certs, n);
      writeFileSync(join(certs, `${n}-combined.pem`), readFileSync(join(certs, `${n}.pem`), 'utf8') + readFileSync(join(certs, `${n}.key`), 'utf8'), { mode: 0o600 });
    }
    const creds = (n: string) => ({ ca: join(certs, 'ca.pem'), cert: join(certs, `${n}.pem`), key: join(certs, `${n}.key`) });

    t.targets.set('direct', { iperf: { host: EDGE_POD, port: IPERF_PORT }, echo: { host: EDGE_POD, port: ECHO_PORT }, pids: {}, podRoutes: true });

    // Ours: EDGE-MESH written by our own backend in the cloud node (DNAT to the proxy on
    // edgemesh0); the cloud proxy routes 10.96.0.20/.21 direct and 10.96.0.30/.31 through the
    // tunnel; the edge proxy serves the tunnel and dials its pod.
    try {
      await cloudNode.sh(`(ip link add edgemesh0 type dummy 2>/dev/null || ip link add edgemesh0 type bridge) && ip addr add ${PROXY_ADDR}/32 dev edgemesh0 && ip link set edgemesh0 up`);
      await createBackend('iptables-legacy', 'ipv4', { netns: cloudNode.path }).sync(desiredSet(11));
      const peer = join(ROOT, 'dist', 'bench', 'peers', 'tunnelproxy.js');
      const tunnel = { address: EDGE_UL, port: TUNNEL_PORT };
      const ep = (port: number, path: 'direct' | 'tunnel') => ({ ip: EDGE_POD, port, path, node: 'edge', ...(path === 'tunnel' ? { tunnel } : {}) });
      const routes = [
        { ip: '10.96.0.20', port: IPERF_PORT, service: 'bench/iperf-direct', endpoints: [ep(IPERF_PORT, 'direct')] },
        { ip: '10.96.0.21', port: ECHO_PORT, service: 'bench/echo-direct', endpoints: [ep(ECHO_PORT, 'direct')] },
        { ip: '10.96.0.30', port: IPERF_PORT, service: 'bench/iperf', endpoints: [ep(IPERF_PORT, 'tunnel')] },
        { ip: '10.96.0.31', port: ECHO_PORT, service: 'bench/echo', endpoints: [ep(ECHO_PORT, 'tunnel')] },
      ];
      const serve = [
        { service: 'bench/iperf', port: IPERF_PORT, endpoints: [{ ip: EDGE_POD, port: IPERF_PORT }] },
        { service: 'bench/echo', port: ECHO_PORT, endpoints: [{ ip: EDGE_POD, port: ECHO_PORT }] },
      ];
      const edge = new LineChild(edgeNode.spawn(process.execPath, [peer, JSON.stringify({ address: '127.0.0.1', port: 0, tunnelAddress: EDGE_UL, tunnelPort: TUNNEL_PORT, creds: creds('edge'), routes: [], serve })], { stdio: ['pipe', 'pipe', 'pipe'] }));
      await edge.next('ready', 10_000, 'edge proxy');
      const cloud = new LineChild(cloudNode.spawn(process.execPath, [peer, JSON.stringify({ address: PROXY_ADDR, port: PROXY_PORT, creds: creds('cloud'), routes, serve: [] })], { stdio: ['pipe', 'pipe', 'pipe'] }));
      await cloud.next('ready', 10_000, 'cloud proxy');
      t.cloudProxy = cloud;
      t.edgeProxy = edge;
      t.targets.set('ours direct path', { iperf: { host: '10.96.0.20', port: IPERF_PORT }, echo: { host: '10.96.0.21', port: ECHO_PORT }, pids: { cloud: cloud.child.pid! }, podRoutes: true });
      t.targets.set('ours tunnel', { iperf: { host: '10.96.0.30', port: IPERF_PORT }, echo: { host: '10.96.0.31', port: ECHO_PORT }, pids: { cloud: cloud.child.pid!, edge: edge.child.pid! }, podRoutes: false });
    } catch (e) {
      const why = `our proxies did not start: ${(e as Error).message.slice(0, 300)}`;
      t.targets.set('ours direct path', { why });
      t.targets.set('ours tunnel', { why });
    }

    // HAProxy: TLS client on the cloud node, TLS server verifying client certificates on the
    // edge node; TLS 1.3; its defaults otherwise (threads, server-side TLS session reuse).
    if (tools.missing.haproxy) t.targets.set('haproxy TLS hop', { why: tools.missing.haproxy });
    else {
      try {
        const ca = join(certs, 'ca.pem');
        const defaults = 'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n';
        const edgeSocket = join(tmp, 'haproxy-edge.sock');
        const edgeCfg = join(tmp, 'haproxy-tls-edge.cfg');
        writeFileSync(
          edgeCfg,
          `global\n  maxconn 7000\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n  stats socket ${edgeSocket} mode 600 level user\n${defaults}` +
            `listen iperf\n  bind ${EDGE_UL}:6441 ssl crt ${join(certs, 'edge-combined.pem')} ca-file ${ca} verify required\n  server s ${EDGE_POD}:${IPERF_PORT}\n` +
            `listen echo\n  bind ${EDGE_UL}:6442 ssl crt ${join(certs, 'edge-combined.pem')} ca-file ${ca} verify required\n  server s ${EDGE_POD}:${ECHO_PORT}\n`,
        );
        const cloudCfg = join(tmp, 'haproxy-tls-cloud.cfg');
        const srv = (port: number) => `server s ${EDGE_UL}:${port} ssl crt ${join(certs, 'cloud-combined.pem')} ca-file ${ca} verify required verifyhost edge`;
        writeFileSync(
          cloudCfg,
          `global\n  maxconn 7000\n  ssl-default-server-options ssl-min-ver TLSv1.3\n${defaults}` +
            `listen iperf\n  bind 10.244.1.1:6001\n  ${srv(6441)}\n` +
            `listen echo\n  bind 10.244.1.1:6002\n  ${srv(6442)}\n`,
        );
        for (const [ns, cfg] of [[edgeNode, edgeCfg], [cloudNode, cloudCfg]] as const) {
          const chk = await ns.run('haproxy', ['-c', '-f', cfg], { allowFail: true });
          if (chk.code !== 0) throw new Error(`haproxy -c ${cfg}: ${(chk.stderr + chk.stdout).trim().slice(0, 300)}`);
        }
        const he = edgeNode.spawn('haproxy', ['-db', '-f', edgeCfg], { stdio: ['ignore', 'pipe', 'pipe'] });
        const hc = cloudNode.spawn('haproxy', ['-db', '-f', cloudCfg], { stdio: ['ignore', 'pipe', 'pipe'] });
        for (const c of [he, hc]) {
          c.stdout?.resume();
          c.stderr?.resume();
        }
        await waitListening(edgeNode, 6441);
        await waitListening(edgeNode, 6442);
        await waitListening(cloudNode, 6001);
        await waitListening(cloudNode, 6002);
        t.haproxy = { ...haproxyVersion(), edgeSocket };
        t.targets.set('haproxy TLS hop', { iperf: { host: '10.244.1.1', port: 6001 }, echo: { host: '10.244.1.1', port: 6002 }, pids: { cloud: hc.pid!, edge: he.pid! }, podRoutes: false });
      } catch (e) {
        t.targets.set('haproxy TLS hop', { why: `haproxy did not start: ${(e as Error).message.slice(0, 300)}` });
      }
    }
    return t;
  } catch (e) {
    for (const n of namespaces.reverse()) await n.destroy();
    throw e;
  }
}

function cpu(pids: { cloud?: number; edge?: number }): { cloud: number; edge: number } {
  return { cloud: pids.cloud ? cpuSeconds(pids.cloud) : NaN, edge: pids.edge ? cpuSeconds(pids.edge) : NaN };
}

function tunnelTls(cloud: ProxyReport, edge: ProxyReport): TunnelTls {
  const problems: Record<string, number> = {};
  const add = (side: string, rec: Record<string, number>) => {
    for (const [k, n] of Object.entries(rec)) if (n) problems[`${side} ${k}`] = (problems[`${side} ${k}`] ?? 0) + n;
  };
  const c = cloud.stats.tunnel;
  const e = edge.stats.tunnel;
  add('cloud dial handshake', c.dialHandshakeFailures);
  add('cloud dial refused', c.dialRefused);
  if (c.dialConnectFailed) problems['cloud dial connect failed'] = c.dialConnectFailed;
  add('edge accept handshake', e.inHandshakeFailures);
  add('edge refused', e.inRefused);
  const ends: Record<string, number> = {};
  for (const [side, r] of [['cloud', cloud], ['edge', edge]] as const) for (const [k, n] of Object.entries(r.failures)) ends[`${side} ${k}`] = n;
  return { ktls: cloud.ktls, dialed: c.dialed, dialOk: c.dialOk, resumed: c.resumed, ktlsConns: c.ktls + e.ktls, inAccepted: e.inAccepted, inOk: e.inOk, inResumed: e.resumed, problems, ends };
}

export async function measureTunnel(t: TunnelSetup, tools: Tools, p: { rounds: number; iperfSeconds: number; connMs: number; connMax: number }): Promise<TunnelResult> {
  const iperf: TunnelIperfSample[] = [];
  const conns: TunnelConnSample[] = [];
  const ip = (v: TunnelVariant, streams: number) => {
    let s = iperf.find((x) => x.variant === v && x.streams === streams);
    if (!s) iperf.push((s = { variant: v, streams, gbps: [], cpuSPerGB: [], cloudCpuSPerGB: [], edgeCpuSPerGB: [] }));
    return s;
  };
  const cs = (v: TunnelVariant) => {
    let s = conns.find((x) => x.variant === v);
    if (!s) conns.push((s = { variant: v, concurrency: CONCURRENCY, perSec: [], p50us: [], p99us: [], errors: [], cpuUsPerConn: [], resumedShare: [], haproxyReusePct: [] }));
    return s;
  };
  const vs = TUNNEL_VARIANTS.filter((v) => t.targets.has(v));
  const deaths: string[] = [];
  // A proxy that died takes its variants with it (reported, never restarted: a crash is a finding).
  const checkProxies = (during: string) => {
    for (const [name, child, variants] of [['cloud', t.cloudProxy, ['ours direct path', 'ours tunnel']], ['edge', t.edgeProxy, ['ours tunnel']]] as const) {
      if (!child?.ended || deaths.some((d) => d.startsWith(`${name} `))) continue;
      const why = `${name} proxy died (${child.ended}) during ${during}${child.stderr ? `: ${child.stderr.trim().slice(-200)}` : ''}`;
      deaths.push(why);
      log(`tunnel: ${why}`);
      for (const v of variants) t.targets.set(v, { why });
    }
  };
  const statsOf = async (c: LineChild | undefined) => (c && !c.ended ? await c.stats().catch(() => undefined) : undefined);
  for (let round = 0; round < p.rounds; round++) {
    for (const streams of [1, 4]) {
      const shift = (round + streams) % vs.length;
      for (const v of [...vs.slice(shift), ...vs.slice(0, shift)]) {
        const s = ip(v, streams);
        const target = t.targets.get(v)!;
        if ('why' in target) {
          s.why = target.why;
          continue;
        }
        if (tools.missing.iperf3) {
          s.why = tools.missing.iperf3;
          continue;
        }
        await setPodRoutes(t, target.podRoutes);
        let c0 = cpu(target.pids);
        let c1 = c0;
        let r = { stdout: '', stderr: '', code: 1 };
        // iperf3's server serves one test at a time and may still be closing the previous one.
        for (let attempt = 0; attempt < 4; attempt++) {
          c0 = cpu(target.pids);
          r = await t.cloudPod.run('iperf3', ['-c', target.iperf.host, '-p', String(target.iperf.port), '-P', String(streams), '-t', String(p.iperfSeconds), '-J'], { allowFail: true, timeoutMs: (p.iperfSeconds + 20) * 1000 });
          c1 = cpu(target.pids);
          if (!r.stdout.includes('server is busy')) break;
          await sleep(500);
        }
        try {
          const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number; bytes: number } }; error?: string };
          if (!j.end?.sum_received) throw new Error(j.error ?? 'no result');
          s.gbps.push(j.end.sum_received.bits_per_second / 1e9);
          const gb = j.end.sum_received.bytes / 1e9;
          const dc = c1.cloud - c0.cloud;
          const de = c1.edge - c0.edge;
          if (target.pids.cloud) s.cloudCpuSPerGB.push(dc / gb);
          if (target.pids.edge) s.edgeCpuSPerGB.push(de / gb);
          if (target.pids.cloud || target.pids.edge) s.cpuSPerGB.push(((target.pids.cloud ? dc : 0) + (target.pids.edge ? de : 0)) / gb);
        } catch (e) {
          s.why = `iperf3 failed: ${(e as Error).message.slice(0, 200)} ${r.stderr.slice(0, 200)}`;
        }
        checkProxies(`${v} iperf3 -P ${streams}`);
        const now = t.targets.get(v)!;
        if ('why' in now) s.why = now.why;
      }
    }
    const shift = round % vs.length;
    for (const v of [...vs.slice(shift), ...vs.slice(0, shift)]) {
      const s = cs(v);
      const target = t.targets.get(v)!;
      if ('why' in target) {
        s.why = target.why;
        continue;
      }
      if (!tools.connload || !tools.echo) {
        s.why = tools.missing.connload ?? 'no load generator';
        continue;
      }
      await setPodRoutes(t, target.podRoutes);
      const before = v === 'ours tunnel' ? await statsOf(t.cloudProxy) : undefined;
      const c0 = cpu(target.pids);
      const r = await t.cloudPod.run(tools.connload, [target.echo.host, String(target.echo.port), String(CONCURRENCY), String(p.connMs), String(p.connMax)], { allowFail: true, timeoutMs: p.connMs + 30_000 });
      const c1 = cpu(target.pids);
      if (v === 'haproxy TLS hop' && t.haproxy) {
        const pct = await haproxyInfo(t.haproxy.edgeSocket, 'SslFrontendSessionReuse_pct');
        if (pct !== null) s.haproxyReusePct.push(pct);
      }
      checkProxies(`${v} connload`);
      const after = before ? await statsOf(t.cloudProxy) : undefined;
      if (before && after) {
        const dialed = after.stats.tunnel.dialed - before.stats.tunnel.dialed;
        if (dialed > 0) s.resumedShare.push((after.stats.tunnel.resumed - before.stats.tunnel.resumed) / dialed);
      }
      try {
        const j = JSON.parse(r.stdout) as { connections: number; errors: number; perSec: number; p50us: number; p99us: number };
        if (!j.connections) throw new Error(`no connection completed (${j.errors} errors)`);
        s.perSec.push(j.perSec);
        s.p50us.push(j.p50us);
        s.p99us.push(j.p99us);
        s.errors.push(j.errors);
        if (target.pids.cloud || target.pids.edge) s.cpuUsPerConn.push((((target.pids.cloud ? c1.cloud - c0.cloud : 0) + (target.pids.edge ? c1.edge - c0.edge : 0)) * 1e6) / j.connections);
      } catch (e) {
        s.why = `connload failed: ${(e as Error).message.slice(0, 200)} ${r.stderr.slice(0, 200)}`;
      }
      const now = t.targets.get(v)!;
      if ('why' in now) s.why = now.why;
      // Let TIME_WAIT and the proxies settle a little between runs.
      await sleep(200);
    }
    log(`tunnel: round ${round + 1}/${p.rounds} done`);
  }
  let tls: TunnelTls | null = null;
  const cs1 = await statsOf(t.cloudProxy);
  const es1 = await statsOf(t.edgeProxy);
  if (cs1 && es1) tls = tunnelTls(cs1, es1);
  if (tls) for (const d of deaths) tls.problems[d] = 1;
  const notes = [
    `Two nodes as test/helpers/tunnel-topology.ts: pods 10.244.1.10 and ${EDGE_POD}, nodes on the underlay ${CLOUD_UL} and ${EDGE_UL}; iperf3 server and the C echo server in the edge pod, iperf3 client and connload in the cloud pod.`,
    'Ours: two TcpProxy processes (dist/bench/peers/tunnelproxy.js, events "failures" as the agent, default threads), credentials from src/tunnel/certs.ts; the client reaches the cloud proxy the real way (ClusterIP -> EDGE-MESH DNAT by our backend -> SO_ORIGINAL_DST); the edge proxy\'s tunnel listener serves its pod (setLocalServe). HAProxy is reached at its listen address on the cloud node.',
  ];
  notes.push(...deaths.map((d) => `Not measured further: ${d}.`));
  if (t.haproxy) notes.push(`HAProxy ${t.haproxy.version} on OpenSSL ${t.haproxy.openssl}: tcp mode, ssl-min-ver TLSv1.3, default threads; it reuses its TLS session to the server by default (no no-ssl-reuse), as our tunnel resumes its sessions; tcp mode never reuses a server connection, so each client connection is one TLS connection there as with ours; no splice (one side is TLS).`);
  return { iperf, conns, params: { ...p, concurrency: CONCURRENCY }, tls, haproxy: t.haproxy ? { version: t.haproxy.version, openssl: t.haproxy.openssl } : null, notes };
}

export async function destroyTunnel(t: TunnelSetup | undefined): Promise<void> {
  if (!t) return;
  for (const n of [...t.namespaces].reverse()) await n.destroy();
}
