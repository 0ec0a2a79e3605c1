// Data plane: iperf3 (1 and 4 streams) and short connections (C load generator, C epoll echo
// server) through each variant, in two topologies: "lo" (everything in one namespace) and
// "netns" (pod ns -> node ns -> backend ns over veth; proxies run in the node ns). Variants:
// direct (the limit), kernel DNAT in kube-proxy's shape (netns only), our proxy (EDGE-MESH DNAT
// by our own backend -> TcpProxy, when the proxy is in this tree), HAProxy tcp mode with
// splice, a Go io.Copy proxy, a Node socket.pipe proxy.
import { spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Netns, linkNetns } from '../src/dev/netns.js';
import { createBackend } from '../src/netfilter/factory.js';
import { kubeProxyRestore } from '../src/testing/kube-proxy-rules.js';
import { cpuSeconds, desiredSet, log, sleep } from './lib.js';
import { median } from './results.js';

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs as dist/bench/data.js). */
export const ROOT = resolve(here, '..', '..');
const PEERS = join(ROOT, 'bench', 'peers');

export type Topology = 'netns' | 'lo';
export const VARIANTS = ['direct', 'kernel DNAT', 'ours', 'haproxy', 'go io.Copy', 'node pipe'] as const;
export type VariantName = (typeof VARIANTS)[number];

export interface Tools {
  echo?: string;
  connload?: string;
  goproxy?: string;
  /** Why a peer cannot run, by variant. */
  missing: Partial<Record<VariantName | 'iperf3' | 'connload', string>>;
}

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' }).status === 0;
}

/** Compiles the C peers and the Go proxy into `tmp` (nothing is installed). */
export function buildTools(tmp: string, gocache: string): Tools {
  const tools: Tools = { missing: {} };
  const cc = which('cc') ? 'cc' : which('gcc') ? 'gcc' : undefined;
  if (!cc) {
    tools.missing.connload = 'no C compiler (cc) on this machine';
  } else {
    const e = spawnSync(cc, ['-O2', '-o', join(tmp, 'echo'), join(PEERS, 'echo.c')], { encoding: 'utf8' });
    const l = spawnSync(cc, ['-O2', '-pthread', '-o', join(tmp, 'connload'), join(PEERS, 'connload.c')], { encoding: 'utf8' });
    if (e.status === 0) tools.echo = join(tmp, 'echo');
    if (l.status === 0) tools.connload = join(tmp, 'connload');
    if (e.status !== 0 || l.status !== 0) tools.missing.connload = `C build failed: ${(e.stderr + l.stderr).slice(0, 300)}`;
  }
  if (!which('iperf3')) tools.missing.iperf3 = 'iperf3 is not installed (scripts/install.sh installs it)';
  if (!which('haproxy')) tools.missing.haproxy = 'haproxy is not installed (scripts/install.sh installs it)';
  if (!which('go')) {
    tools.missing['go io.Copy'] = 'go is not installed (apt-get install golang-go; scripts/install.sh installs it)';
  } else {
    mkdirSync(gocache, { recursive: true });
    const out = join(tmp, 'goproxy');
    const g = spawnSync('go', ['build', '-o', out, 'main.go'], { cwd: join(PEERS, 'goproxy'), encoding: 'utf8', env: { ...process.env, GOCACHE: gocache, GO111MODULE: 'off', CGO_ENABLED: '0' }, timeout: 300_000 });
    if (g.status === 0) tools.goproxy = out;
    else tools.missing['go io.Copy'] = `go build failed: ${(g.stderr || String(g.error)).slice(0, 300)}`;
  }
  return tools;
}

interface Endpoint {
  host: string;
  port: number;
}

interface TopoSetup {
  topo: Topology;
  client: Netns;
  /** Where the proxies run. */
  middle: Netns;
  namespaces: Netns[];
  /** Per variant: iperf3 target and echo target (undefined: not measured, with a reason). */
  targets: Map<VariantName, { iperf: Endpoint; echo: Endpoint; pid?: number } | { why: string }>;
}

const IPERF_PORT = 5201;
const ECHO_PORT = 7000;

function waitReady(child: ChildProcess, what: string, timeoutMs = 10_000): Promise<void> {
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

/** Waits until something listens on host:port in the namespace. */
async function waitListening(ns: Netns, port: number, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < timeoutMs) {
    const r = await ns.run('ss', ['-Hltn', `sport = :${port}`], { allowFail: true });
    if (r.stdout.trim()) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on port ${port} in ${ns.name} after ${timeoutMs} ms`);
}

async function sysctls(ns: Netns): Promise<void> {
  // Many short connections to one endpoint: let TIME_WAIT ports be reused, every variant alike.
  await ns.sh('sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"');
}

/** Our proxy in its own process (dist/bench/peers/oursproxy.js), when src/proxy is in this tree. */
export function oursAvailable(): string | undefined {
  const mod = join(ROOT, 'dist', 'src', 'proxy', 'proxy.js');
  return existsSync(mod) ? undefined : 'our proxy (src/proxy, branch proxy) is not in this tree yet';
}

async function startPeers(t: TopoSetup, tools: Tools, tmp: string, ips: { listen: string; backend: string }): Promise<void> {
  const { middle, topo } = t;
  const start = async (v: VariantName, child: ChildProcess, ports: [number, number], ready: 'stdout' | 'listen') => {
    try {
      if (ready === 'stdout') await waitReady(child, v);
      else for (const p of ports) await waitListening(middle, p);
      t.targets.set(v, { iperf: { host: ips.listen, port: ports[0] }, echo: { host: ips.listen, port: ports[1] }, pid: child.pid! });
    } catch (e) {
      t.targets.set(v, { why: `${v} did not start: ${(e as Error).message.slice(0, 200)}` });
    }
  };
  // HAProxy: tcp mode, splice both ways, as many threads as CPUs (its default).
  if (tools.missing.haproxy) t.targets.set('haproxy', { why: tools.missing.haproxy });
  else {
    const cfg = join(tmp, `haproxy-${topo}.cfg`);
    writeFileSync(
      cfg,
      `global\n  maxconn 7000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  option splice-request\n  option splice-response\n` +
        `listen iperf\n  bind ${ips.listen}:6001\n  server s ${ips.backend}:${IPERF_PORT}\nlisten echo\n  bind ${ips.listen}:6002\n  server s ${ips.backend}:${ECHO_PORT}\n`,
    );
    const hp = middle.spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
    await start('haproxy', hp, [6001, 6002], 'listen');
  }
  if (!tools.goproxy) t.targets.set('go io.Copy', { why: tools.missing['go io.Copy'] ?? 'go proxy not built' });
  else {
    // Two processes (iperf and echo backends); each is measured while the other idles.
    const g1 = middle.spawn(tools.goproxy, [`${ips.listen}:7001`, `${ips.backend}:${IPERF_PORT}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    const g2 = middle.spawn(tools.goproxy, [`${ips.listen}:7002`, `${ips.backend}:${ECHO_PORT}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await Promise.all([waitReady(g1, 'goproxy'), waitReady(g2, 'goproxy')]);
      t.targets.set('go io.Copy', { iperf: { host: ips.listen, port: 7001 }, echo: { host: ips.listen, port: 7002 }, pid: g1.pid! });
      goEchoPid.set(topo, g2.pid!);
    } catch (e) {
      t.targets.set('go io.Copy', { why: `go proxy did not start: ${(e as Error).message}` });
    }
  }
  {
    const np = join(ROOT, 'dist', 'bench', 'peers', 'nodeproxy.js');
    const n1 = middle.spawn(process.execPath, [np, ips.listen, '8001', ips.backend, String(IPERF_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const n2 = middle.spawn(process.execPath, [np, ips.listen, '8002', ips.backend, String(ECHO_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await Promise.all([waitReady(n1, 'nodeproxy'), waitReady(n2, 'nodeproxy')]);
      t.targets.set('node pipe', { iperf: { host: ips.listen, port: 8001 }, echo: { host: ips.listen, port: 8002 }, pid: n1.pid! });
      nodeEchoPid.set(topo, n2.pid!);
    } catch (e) {
      t.targets.set('node pipe', { why: `node proxy did not start: ${(e as Error).message}` });
    }
  }
  // Ours: EDGE-MESH written by our own backend (DNAT to 169.254.96.16:40001 on edgemesh0), the
  // proxy reading SO_ORIGINAL_DST and relaying to the endpoint. Clients use service addresses.
  const why = oursAvailable();
  if (why) t.targets.set('ours', { why });
  else {
    try {
      // As the proxy's own interface helper: a dummy link, or a bridge where the dummy module is missing.
      await middle.sh('(ip link add edgemesh0 type dummy 2>/dev/null || ip link add edgemesh0 type bridge) && ip addr add 169.254.96.16/32 dev edgemesh0 && ip link set edgemesh0 up');
      // Loopback: the service range is local, like every other address here, so the client's
      // leg to our proxy is a loopback path as the peers' legs are (MSS 32-64 KiB). Routed via
      // edgemesh0 (MTU 1500) instead, the client would pick MSS 1448 for a loopback
      // connection and pay for ~40x more segments and ACKs, which is no property of the proxy.
      if (topo === 'lo') await middle.sh('ip route add local 10.96.0.0/12 dev lo');
      // The kernel-DNAT variant's services (10.96.0.10, .11) stay with kube-proxy: ignored, as the agent would.
      await createBackend('iptables-legacy', 'ipv4', { netns: middle.path }).sync(desiredSet(11));
      const routes = [
        { ip: '10.96.0.20', port: IPERF_PORT, endpoints: [{ ip: ips.backend, port: IPERF_PORT }] },
        { ip: '10.96.0.21', port: ECHO_PORT, endpoints: [{ ip: ips.backend, port: ECHO_PORT }] },
      ];
      const op = middle.spawn(process.execPath, [join(ROOT, 'dist', 'bench', 'peers', 'oursproxy.js'), JSON.stringify({ address: '169.254.96.16', port: 40001, routes })], { stdio: ['ignore', 'pipe', 'pipe'] });
      await waitReady(op, 'our proxy');
      t.targets.set('ours', { iperf: { host: '10.96.0.20', port: IPERF_PORT }, echo: { host: '10.96.0.21', port: ECHO_PORT }, pid: op.pid! });
    } catch (e) {
      t.targets.set('ours', { why: `our proxy did not start: ${(e as Error).message.slice(0, 300)}` });
    }
  }
}

const goEchoPid = new Map<Topology, number>();
const nodeEchoPid = new Map<Topology, number>();

/** pid measured for the echo runs (the Go and Node peers run one process per backend). */
function echoPid(topo: Topology, v: VariantName, pid: number | undefined): number | undefined {
  if (v === 'go io.Copy') return goEchoPid.get(topo);
  if (v === 'node pipe') return nodeEchoPid.get(topo);
  return pid;
}

export async function setupTopology(topo: Topology, tools: Tools, tmp: string): Promise<TopoSetup> {
  const namespaces: Netns[] = [];
  try {
    let t: TopoSetup;
    let ips: { listen: string; backend: string };
    if (topo === 'netns') {
      const pod = await Netns.create('dpod');
      namespaces.push(pod);
      const node = await Netns.create('dnode');
      namespaces.push(node);
      const be = await Netns.create('dback');
      namespaces.push(be);
      await linkNetns(pod, '10.0.1.2/24', node, '10.0.1.1/24');
      await linkNetns(node, '10.0.2.1/24', be, '10.0.2.2/24');
      await pod.run('ip', ['route', 'add', 'default', 'via', '10.0.1.1']);
      await be.run('ip', ['route', 'add', 'default', 'via', '10.0.2.1']);
      await node.sh('sysctl -qw net.ipv4.ip_forward=1');
      for (const n of [pod, node]) await sysctls(n);
      t = { topo, client: pod, middle: node, namespaces, targets: new Map() };
      ips = { listen: '10.0.1.1', backend: '10.0.2.2' };
      await startServers(be, ips.backend, tools);
      t.targets.set('direct', { iperf: { host: ips.backend, port: IPERF_PORT }, echo: { host: ips.backend, port: ECHO_PORT } });
      // kube-proxy's path: KUBE-SERVICES -> KUBE-SVC -> KUBE-SEP DNAT in the node ns (iptables-legacy).
      const rules = kubeProxyRestore(
        [
          { namespace: 'bench', name: 'iperf', clusterIP: '10.96.0.10', port: IPERF_PORT, endpoints: [{ ip: ips.backend, port: IPERF_PORT }] },
          { namespace: 'bench', name: 'echo', clusterIP: '10.96.0.11', port: ECHO_PORT, endpoints: [{ ip: ips.backend, port: ECHO_PORT }] },
        ],
        { standalone: true },
      ).replace(/\nCOMMIT\n$/, '\n-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\nCOMMIT\n');
      await node.run('iptables-legacy-restore', ['-w', '--noflush'], { input: rules });
      t.targets.set('kernel DNAT', { iperf: { host: '10.96.0.10', port: IPERF_PORT }, echo: { host: '10.96.0.11', port: ECHO_PORT } });
    } else {
      const lo = await Netns.create('dlo');
      namespaces.push(lo);
      await sysctls(lo);
      t = { topo, client: lo, middle: lo, namespaces, targets: new Map() };
      ips = { listen: '127.0.0.1', backend: '127.0.0.1' };
      await startServers(lo, ips.backend, tools);
      t.targets.set('direct', { iperf: { host: ips.backend, port: IPERF_PORT }, echo: { host: ips.backend, port: ECHO_PORT } });
      t.targets.set('kernel DNAT', { why: 'not applicable on loopback (kube-proxy DNATs in PREROUTING/OUTPUT to pod addresses, not to 127.0.0.1)' });
    }
    await startPeers(t, tools, tmp, ips);
    return t;
  } catch (e) {
    for (const n of namespaces) await n.destroy();
    throw e;
  }
}

async function startServers(ns: Netns, addr: string, tools: Tools): Promise<void> {
  if (!tools.missing.iperf3) {
    ns.spawn('iperf3', ['-s', '-B', addr, '-p', String(IPERF_PORT)], { stdio: ['ignore', 'ignore', 'ignore'] });
    await waitListening(ns, IPERF_PORT);
  }
  if (tools.echo) {
    const e = ns.spawn(tools.echo, [addr, String(ECHO_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
    await waitReady(e, 'echo server');
  }
}

export interface IperfSample {
  topo: Topology;
  variant: VariantName;
  streams: number;
  gbps: number[];
  cpuSPerGB: number[];
  why?: string;
}

export interface ConnSample {
  topo: Topology;
  variant: VariantName;
  concurrency: number;
  perSec: number[];
  p50us: number[];
  p99us: number[];
  errors: number[];
  cpuUsPerConn: number[];
  why?: string;
}

export interface DataResult {
  iperf: IperfSample[];
  conns: ConnSample[];
  params: { iperfSeconds: number; connMs: number; connMax: number; rounds: number };
}

export async function measureDataPlane(topos: TopoSetup[], tools: Tools, p: { rounds: number; iperfSeconds: number; connMs: number; connMax: number }): Promise<DataResult> {
  const iperf: IperfSample[] = [];
  const conns: ConnSample[] = [];
  const ip = (topo: Topology, v: VariantName, streams: number) => {
    let s = iperf.find((x) => x.topo === topo && x.variant === v && x.streams === streams);
    if (!s) iperf.push((s = { topo, variant: v, streams, gbps: [], cpuSPerGB: [] }));
    return s;
  };
  const cs = (topo: Topology, v: VariantName, c: number) => {
    let s = conns.find((x) => x.topo === topo && x.variant === v && x.concurrency === c);
    if (!s) conns.push((s = { topo, variant: v, concurrency: c, perSec: [], p50us: [], p99us: [], errors: [], cpuUsPerConn: [] }));
    return s;
  };
  for (let round = 0; round < p.rounds; round++) {
    for (const t of topos) {
      const vs = VARIANTS.filter((v) => t.targets.has(v));
      for (const streams of [1, 4]) {
        const shift = (round + streams) % vs.length;
        for (const v of [...vs.slice(shift), ...vs.slice(0, shift)]) {
          const s = ip(t.topo, v, streams);
          const target = t.targets.get(v)!;
          if ('why' in target) {
            s.why = target.why;
            continue;
          }
          if (tools.missing.iperf3) {
            s.why = tools.missing.iperf3;
            continue;
          }
          let c0 = NaN;
          let c1 = NaN;
          let r = { stdout: '', stderr: '', code: 1 };
          // iperf3's server serves one test at a time and may still be closing the previous one.
          for (let attempt = 0; attempt < 4; attempt++) {
            c0 = target.pid ? cpuSeconds(target.pid) : NaN;
            r = await t.client.run('iperf3', ['-c', target.iperf.host, '-p', String(target.iperf.port), '-P', String(streams), '-t', String(p.iperfSeconds), '-J'], { allowFail: true, timeoutMs: (p.iperfSeconds + 20) * 1000 });
            c1 = target.pid ? cpuSeconds(target.pid) : NaN;
            if (!r.stdout.includes('server is busy')) break;
            await sleep(500);
          }
          try {
            const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number; bytes: number } }; error?: string };
            if (!j.end?.sum_received) throw new Error(j.error ?? 'no result');
            s.gbps.push(j.end.sum_received.bits_per_second / 1e9);
            if (target.pid) s.cpuSPerGB.push((c1 - c0) / (j.end.sum_received.bytes / 1e9));
          } catch (e) {
            s.why = `iperf3 failed: ${(e as Error).message.slice(0, 200)} ${r.stderr.slice(0, 200)}`;
          }
        }
      }
      for (const c of [1, 16]) {
        const shift = (round + c) % vs.length;
        for (const v of [...vs.slice(shift), ...vs.slice(0, shift)]) {
          const s = cs(t.topo, v, c);
          const target = t.targets.get(v)!;
          if ('why' in target) {
            s.why = target.why;
            continue;
          }
          if (!tools.connload || !tools.echo) {
            s.why = tools.missing.connload ?? 'no load generator';
            continue;
          }
          const pid = echoPid(t.topo, v, target.pid);
          const c0 = pid ? cpuSeconds(pid) : NaN;
          const r = await t.client.run(tools.connload, [target.echo.host, String(target.echo.port), String(c), String(p.connMs), String(p.connMax)], { allowFail: true, timeoutMs: p.connMs + 30_000 });
          const c1 = pid ? cpuSeconds(pid) : NaN;
          try {
            const j = JSON.parse(r.stdout) as { connections: number; errors: number; perSec: number; p50us: number; p99us: number };
            if (!j.connections) throw new Error(`no connection completed (${j.errors} errors)`);
            s.perSec.push(j.perSec);
            s.p50us.push(j.p50us);
            s.p99us.push(j.p99us);
            s.errors.push(j.errors);
            if (pid) s.cpuUsPerConn.push(((c1 - c0) * 1e6) / j.connections);
          } catch (e) {
            s.why = `connload failed: ${(e as Error).message.slice(0, 200)} ${r.stderr.slice(0, 200)}`;
          }
          // Let TIME_WAIT and the proxies settle a little between runs.
          await sleep(200);
        }
      }
    }
    log(`data plane: round ${round + 1}/${p.rounds} done`);
  }
  return { iperf, conns, params: { ...p } };
}

export const med = (xs: number[]): number | null => (xs.length ? median(xs) : null);
