// Relayed connections in the data plane: iperf3 (1 and 4 streams) and short connections (C load
// generator at concurrency 16, C epoll echo server) from a client pod to a server pod on a node
// that is reached through a relay:
//
//   client pod 10.245.1.10 -- 10.245.1.1 node A 192.168.60.1 -- 192.168.60.2 relay 192.168.61.1 -- 192.168.61.2 node B 10.245.2.1 -- server pod 10.245.2.10
//
// The relay namespace routes between its two links (ip_forward), so node A can also reach node B's
// tunnel listener directly: every variant crosses the same veths. Variants: ours direct tunnel
// (A's proxy dials B's tunnel listener; the relay namespace only forwards in the kernel), ours
// relay (A's proxy asks the relay proxy to join it to B, which is registered there with a session
// of its own; B opens a data connection, TLS end to end through the relay's splice), HAProxy relay
// chain (HAProxy TLS client on A -> HAProxy tcp relay on the relay, forwarding the TLS bytes ->
// HAProxy TLS server on B verifying client certificates -> server pod). No pod routes anywhere.
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Netns, linkNetns } from '../src/dev/netns.js';
import { createBackend } from '../src/netfilter/factory.js';
import { initCa, issueNodeCert } from '../src/tunnel/certs.js';
import type { Tools } from './data.js';
import { ROOT } from './data.js';
import { cpuSeconds, desiredSet, log, sleep } from './lib.js';
import { LineChild, haproxyInfo, haproxyVersion, waitListening, waitReady } from './tunnel.js';
import { RELAY_VARIANTS, perRole, type PerRole, type RelayConnSample, type RelayCounters, type RelayIperfSample, type RelayResult, type RelayRole, type RelayVariant } from './relay-report.js';

const IPERF_PORT = 5201;
const ECHO_PORT = 7000;
const TUNNEL_PORT = 20006;
const RELAY_PORT = 20007;
const CONCURRENCY = 16;
const SERVER_POD = '10.245.2.10';
const A_UL = '192.168.60.1';
const R_UL_A = '192.168.60.2';
const R_UL_B = '192.168.61.1';
const B_UL = '192.168.61.2';
const PROXY_ADDR = '169.254.96.16';
const PROXY_PORT = 40001;

interface Endpoint {
  host: string;
  port: number;
}

type Pids = Partial<Record<RelayRole, number>>;
type Target = { iperf: Endpoint; echo: Endpoint; pids: Pids } | { why: string };

interface Report {
  stats: {
    active: number;
    pipes: { created: number; reused: number; spliceFallbacks: number };
    tunnel: {
      dialed: number;
      dialOk: number;
      resumed: number;
      ktls: number;
      inAccepted: number;
      inOk: number;
      dialConnectFailed: number;
      dialHandshakeFailures: Record<string, number>;
      inHandshakeFailures: Record<string, number>;
      dialRefused: Record<string, number>;
      inRefused: Record<string, number>;
      relayJoinsOk: number;
      pendingJoins: number;
      relayJoinsRefused: Record<string, number>;
      relayUnknownToken: number;
      relayRateLimited: number;
      relayBytes: number;
      registered: number;
      dialJoinOk: number;
      dialJoinRefused: Record<string, number>;
      dataConns: number;
      dataConnsFailed: number;
    };
  };
  ktls: { available: boolean; reason: string } | null;
  sessions: { relay: string; state: string; lastError: string; failures: number }[];
  registrations: { node: string }[];
  failures: Record<string, number>;
}

export interface RelaySetup {
  namespaces: Netns[];
  clientPod: Netns;
  targets: Map<RelayVariant, Target>;
  ours?: Record<RelayRole, LineChild>;
  haproxy?: { version: string; openssl: string; bSocket: string };
}

const report = async (c: LineChild | undefined): Promise<Report | undefined> => (c && !c.ended ? ((await c.stats().catch(() => undefined)) as unknown as Report | undefined) : undefined);

export async function setupRelay(tools: Tools, tmp: string): Promise<RelaySetup> {
  const namespaces: Netns[] = [];
  const mk = async (label: string) => {
    const ns = await Netns.create(label);
    namespaces.push(ns);
    return ns;
  };
  try {
    const nodeA = await mk('rbna');
    const relay = await mk('rbrl');
    const nodeB = await mk('rbnb');
    const clientPod = await mk('rbcp');
    const serverPod = await mk('rbsp');
    await linkNetns(nodeA, `${A_UL}/24`, relay, `${R_UL_A}/24`);
    await linkNetns(relay, `${R_UL_B}/24`, nodeB, `${B_UL}/24`);
    await linkNetns(nodeA, '10.245.1.1/24', clientPod, '10.245.1.10/24');
    await linkNetns(nodeB, '10.245.2.1/24', serverPod, `${SERVER_POD}/24`);
    await clientPod.run('ip', ['route', 'add', 'default', 'via', '10.245.1.1']);
    await serverPod.run('ip', ['route', 'add', 'default', 'via', '10.245.2.1']);
    await nodeA.run('ip', ['route', 'add', '192.168.61.0/24', 'via', R_UL_A]);
    await nodeB.run('ip', ['route', 'add', '192.168.60.0/24', 'via', R_UL_B]);
    await relay.sh('sysctl -qw net.ipv4.ip_forward=1');
    for (const n of [clientPod, nodeA, relay, nodeB]) await n.sh('sysctl -qw net.ipv4.tcp_tw_reuse=1 net.ipv4.ip_local_port_range="1024 65000"');
    const t: RelaySetup = { namespaces, clientPod, targets: new Map() };

    if (!tools.missing.iperf3) {
      serverPod.spawn('iperf3', ['-s', '-B', SERVER_POD, '-p', String(IPERF_PORT)], { stdio: ['ignore', 'ignore', 'ignore'] });
      await waitListening(serverPod, IPERF_PORT);
    }
    if (tools.echo) await waitReady(serverPod.spawn(tools.echo, [SERVER_POD, String(ECHO_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] }), 'echo server');

    const certs = join(tmp, 'relay-certs');
    await initCa(certs);
    for (const n of ['nodea', 'relay', 'edge']) {
      await issueNodeCert(certs, n);
      writeFileSync(join(certs, `${n}-combined.pem`), readFileSync(join(certs, `${n}.pem`), 'utf8') + readFileSync(join(certs, `${n}.key`), 'utf8'), { mode: 0o600 });
    }
    const creds = (n: string) => ({ ca: join(certs, 'ca.pem'), cert: join(certs, `${n}.pem`), key: join(certs, `${n}.key`) });

    // Ours: node A's proxy behind EDGE-MESH DNAT (our backend), routes 10.96.0.30/.31 through
    // node B's tunnel listener and 10.96.0.40/.41 through the relay; the relay is a TcpProxy with
    // a tunnel listener and nothing else; node B keeps a session with the relay (registered as
    // "edge", its certificate's name) and also has its own tunnel listener for the direct variant.
    try {
      await nodeA.sh(`(ip link add edgemesh0 type dummy 2>/dev/null || ip link add edgemesh0 type bridge) && ip addr add ${PROXY_ADDR}/32 dev edgemesh0 && ip link set edgemesh0 up`);
      await createBackend('iptables-legacy', 'ipv4', { netns: nodeA.path }).sync(desiredSet(11));
      const peer = join(ROOT, 'dist', 'bench', 'peers', 'tunnelproxy.js');
      const relays = [{ address: R_UL_A, port: RELAY_PORT }];
      const ep = (port: number, path: 'tunnel' | 'relay') => ({ ip: SERVER_POD, port, path, node: 'edge', ...(path === 'tunnel' ? { tunnel: { address: B_UL, port: TUNNEL_PORT } } : { relays }) });
      const routes = [
        { ip: '10.96.0.30', port: IPERF_PORT, service: 'bench/iperf', endpoints: [ep(IPERF_PORT, 'tunnel')] },
        { ip: '10.96.0.31', port: ECHO_PORT, service: 'bench/echo', endpoints: [ep(ECHO_PORT, 'tunnel')] },
        { ip: '10.96.0.40', port: IPERF_PORT, service: 'bench/iperf', endpoints: [ep(IPERF_PORT, 'relay')] },
        { ip: '10.96.0.41', port: ECHO_PORT, service: 'bench/echo', endpoints: [ep(ECHO_PORT, 'relay')] },
      ];
      const serve = [
        { service: 'bench/iperf', port: IPERF_PORT, endpoints: [{ ip: SERVER_POD, port: IPERF_PORT }] },
        { service: 'bench/echo', port: ECHO_PORT, endpoints: [{ ip: SERVER_POD, port: ECHO_PORT }] },
      ];
      const spawn = (ns: Netns, o: object) => new LineChild(ns.spawn(process.execPath, [peer, JSON.stringify(o)], { stdio: ['pipe', 'pipe', 'pipe'] }));
      const r = spawn(relay, { address: '127.0.0.1', port: 0, tunnelAddress: R_UL_A, tunnelPort: RELAY_PORT, creds: creds('relay'), routes: [], serve: [] });
      await r.next('ready', 10_000, 'relay proxy');
      const b = spawn(nodeB, { address: '127.0.0.1', port: 0, tunnelAddress: B_UL, tunnelPort: TUNNEL_PORT, creds: creds('edge'), routes: [], serve, relays });
      await b.next('ready', 10_000, 'node B proxy');
      const a = spawn(nodeA, { address: PROXY_ADDR, port: PROXY_PORT, creds: creds('nodea'), routes, serve: [] });
      await a.next('ready', 10_000, 'node A proxy');
      t.ours = { dialler: a, relay: r, nodeB: b };
      // Node B registered at the relay, both sides agreeing.
      const t0 = Date.now();
      for (;;) {
        const [rs, bs] = [await report(r), await report(b)];
        if (rs?.registrations.some((x) => x.node === 'edge') && bs?.sessions.some((s) => s.state === 'registered')) break;
        if (Date.now() - t0 > 10_000) throw new Error(`node B not registered at the relay after 10 s: sessions ${JSON.stringify(bs?.sessions ?? null)}, registrations ${JSON.stringify(rs?.registrations ?? null)}`);
        await sleep(100);
      }
      t.targets.set('ours direct tunnel', { iperf: { host: '10.96.0.30', port: IPERF_PORT }, echo: { host: '10.96.0.31', port: ECHO_PORT }, pids: { dialler: a.child.pid!, nodeB: b.child.pid! } });
      t.targets.set('ours relay', { iperf: { host: '10.96.0.40', port: IPERF_PORT }, echo: { host: '10.96.0.41', port: ECHO_PORT }, pids: { dialler: a.child.pid!, relay: r.child.pid!, nodeB: b.child.pid! } });
    } catch (e) {
      const why = `our proxies did not start: ${(e as Error).message.slice(0, 300)}`;
      t.targets.set('ours direct tunnel', { why });
      t.targets.set('ours relay', { why });
    }

    // HAProxy: TLS client on node A, tcp relay (splice, no TLS) on the relay, TLS server verifying
    // client certificates on node B; TLS 1.3; its defaults otherwise.
    if (tools.missing.haproxy) t.targets.set('haproxy relay chain', { why: tools.missing.haproxy });
    else {
      try {
        const ca = join(certs, 'ca.pem');
        const defaults = 'defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n';
        const bSocket = join(tmp, 'haproxy-relay-b.sock');
        const bCfg = join(tmp, 'haproxy-relay-b.cfg');
        const bind = (port: number) => `bind ${B_UL}:${port} ssl crt ${join(certs, 'edge-combined.pem')} ca-file ${ca} verify required`;
        writeFileSync(
          bCfg,
          `global\n  maxconn 7000\n  ssl-default-bind-options ssl-min-ver TLSv1.3\n  stats socket ${bSocket} mode 600 level user\n${defaults}` +
            `listen iperf\n  ${bind(6441)}\n  server s ${SERVER_POD}:${IPERF_PORT}\n` +
            `listen echo\n  ${bind(6442)}\n  server s ${SERVER_POD}:${ECHO_PORT}\n`,
        );
        const rCfg = join(tmp, 'haproxy-relay-r.cfg');
        writeFileSync(
          rCfg,
          `global\n  maxconn 7000\n${defaults}  option splice-request\n  option splice-response\n` +
            `listen iperf\n  bind ${R_UL_A}:6541\n  server s ${B_UL}:6441\n` +
            `listen echo\n  bind ${R_UL_A}:6542\n  server s ${B_UL}:6442\n`,
        );
        const aCfg = join(tmp, 'haproxy-relay-a.cfg');
        const srv = (port: number) => `server s ${R_UL_A}:${port} ssl crt ${join(certs, 'nodea-combined.pem')} ca-file ${ca} verify required verifyhost edge`;
        writeFileSync(aCfg, `global\n  maxconn 7000\n  ssl-default-server-options ssl-min-ver TLSv1.3\n${defaults}` + `listen iperf\n  bind 10.245.1.1:6001\n  ${srv(6541)}\n` + `listen echo\n  bind 10.245.1.1:6002\n  ${srv(6542)}\n`);
        for (const [ns, cfg] of [[nodeB, bCfg], [relay, rCfg], [nodeA, aCfg]] as const) {
          const chk = await ns.run('haproxy', ['-c', '-f', cfg], { allowFail: true });
          if (chk.code !== 0) throw new Error(`haproxy -c ${cfg}: ${(chk.stderr + chk.stdout).trim().slice(0, 300)}`);
        }
        const pids: Pids = {};
        for (const [role, ns, cfg] of [['nodeB', nodeB, bCfg], ['relay', relay, rCfg], ['dialler', nodeA, aCfg]] as const) {
          const c = ns.spawn('haproxy', ['-db', '-f', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
          c.stdout?.resume();
          c.stderr?.resume();
          pids[role] = c.pid!;
        }
        await waitListening(nodeB, 6441);
        await waitListening(nodeB, 6442);
        await waitListening(relay, 6541);
        await waitListening(relay, 6542);
        await waitListening(nodeA, 6001);
        await waitListening(nodeA, 6002);
        t.haproxy = { ...haproxyVersion(), bSocket };
        t.targets.set('haproxy relay chain', { iperf: { host: '10.245.1.1', port: 6001 }, echo: { host: '10.245.1.1', port: 6002 }, pids });
      } catch (e) {
        t.targets.set('haproxy relay chain', { why: `haproxy did not start: ${(e as Error).message.slice(0, 300)}` });
      }
    }
    return t;
  } catch (e) {
    for (const n of namespaces.reverse()) await n.destroy();
    throw e;
  }
}

function cpu(pids: Pids): Partial<Record<RelayRole, number>> {
  const out: Partial<Record<RelayRole, number>> = {};
  for (const [k, pid] of Object.entries(pids) as [RelayRole, number][]) out[k] = cpuSeconds(pid);
  return out;
}

function pushPerRole(into: PerRole, pids: Pids, c0: Partial<Record<RelayRole, number>>, c1: Partial<Record<RelayRole, number>>, scale: number): void {
  for (const k of Object.keys(pids) as RelayRole[]) into[k].push((c1[k]! - c0[k]!) * scale);
}

function fdCount(pid: number | undefined): number | null {
  try {
    return pid ? readdirSync(`/proc/${pid}/fd`).length : null;
  } catch {
    return null;
  }
}

function counters(a: Report, r: Report, b: Report, deaths: string[]): RelayCounters {
  const problems: Record<string, number> = {};
  const add = (label: string, rec: Record<string, number>) => {
    for (const [k, n] of Object.entries(rec)) if (n) problems[`${label} ${k}`] = (problems[`${label} ${k}`] ?? 0) + n;
  };
  const [ta, tr, tb] = [a.stats.tunnel, r.stats.tunnel, b.stats.tunnel];
  add('dialler join refused', ta.dialJoinRefused);
  add('dialler handshake', ta.dialHandshakeFailures);
  add('dialler refused', ta.dialRefused);
  add('relay join refused', tr.relayJoinsRefused);
  add('relay handshake', tr.inHandshakeFailures);
  add('node B handshake', tb.inHandshakeFailures);
  add('node B refused', tb.inRefused);
  if (ta.dialConnectFailed) problems['dialler connect failed'] = ta.dialConnectFailed;
  if (tr.relayUnknownToken) problems['relay unknown token'] = tr.relayUnknownToken;
  if (tr.relayRateLimited) problems['relay rate limited'] = tr.relayRateLimited;
  if (tb.dataConnsFailed) problems['node B data connections failed'] = tb.dataConnsFailed;
  const sessionFailures = b.sessions.reduce((s, x) => s + x.failures, 0);
  if (sessionFailures) problems['node B relay session failures'] = sessionFailures;
  for (const d of deaths) problems[d] = 1;
  const ends: Record<string, number> = {};
  for (const [side, x] of [['dialler', a], ['relay', r], ['node B', b]] as const) for (const [k, n] of Object.entries(x.failures)) ends[`${side} ${k}`] = n;
  return {
    ktls: a.ktls,
    ktlsConns: ta.ktls + tb.ktls,
    dialed: ta.dialed,
    dialOk: ta.dialOk,
    resumed: ta.resumed,
    dialJoinOk: ta.dialJoinOk,
    relayJoinsOk: tr.relayJoinsOk,
    relayBytes: tr.relayBytes,
    registered: tr.registered,
    relayPipes: { created: r.stats.pipes.created, reused: r.stats.pipes.reused, spliceFallbacks: r.stats.pipes.spliceFallbacks },
    dataConns: tb.dataConns,
    inAccepted: tb.inAccepted,
    inOk: tb.inOk,
    problems,
    ends,
  };
}

export async function measureRelay(t: RelaySetup, tools: Tools, p: { rounds: number; iperfSeconds: number; connMs: number; connMax: number }): Promise<RelayResult> {
  const iperf: RelayIperfSample[] = [];
  const conns: RelayConnSample[] = [];
  const ip = (v: RelayVariant, streams: number) => {
    let s = iperf.find((x) => x.variant === v && x.streams === streams);
    if (!s) iperf.push((s = { variant: v, streams, gbps: [], cpuSPerGB: perRole() }));
    return s;
  };
  const cs = (v: RelayVariant) => {
    let s = conns.find((x) => x.variant === v);
    if (!s) conns.push((s = { variant: v, concurrency: CONCURRENCY, perSec: [], p50us: [], p99us: [], errors: [], cpuUsPerConn: perRole(), resumedShare: [], haproxyReusePct: [] }));
    return s;
  };
  const vs = RELAY_VARIANTS.filter((v) => t.targets.has(v));
  const deaths: string[] = [];
  const fdsBefore = t.ours ? { dialler: fdCount(t.ours.dialler.child.pid), relay: fdCount(t.ours.relay.child.pid), nodeB: fdCount(t.ours.nodeB.child.pid) } : null;
  // A process of ours that died takes its variants with it (reported, never restarted).
  const checkOurs = (during: string) => {
    if (!t.ours) return;
    for (const role of ['dialler', 'relay', 'nodeB'] as const) {
      const child = t.ours[role];
      if (!child.ended || deaths.some((d) => d.startsWith(`${role} `))) continue;
      const why = `${role} proxy died (${child.ended}) during ${during}${child.stderr ? `: ${child.stderr.trim().slice(-200)}` : ''}`;
      deaths.push(why);
      log(`relay: ${why}`);
      const hit: RelayVariant[] = role === 'relay' ? ['ours relay'] : ['ours direct tunnel', 'ours relay'];
      for (const v of hit) t.targets.set(v, { why });
    }
  };
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
        let c0 = cpu(target.pids);
        let c1 = c0;
        let r = { stdout: '', stderr: '', code: 1 };
        for (let attempt = 0; attempt < 4; attempt++) {
          c0 = cpu(target.pids);
          r = await t.clientPod.run('iperf3', ['-c', target.iperf.host, '-p', String(target.iperf.port), '-P', String(streams), '-t', String(p.iperfSeconds), '-J'], { allowFail: true, timeoutMs: (p.iperfSeconds + 20) * 1000 });
          c1 = cpu(target.pids);
          if (!r.stdout.includes('server is busy')) break;
          await sleep(500);
        }
        try {
          const j = JSON.parse(r.stdout) as { end?: { sum_received?: { bits_per_second: number; bytes: number } }; error?: string };
          if (!j.end?.sum_received) throw new Error(j.error ?? 'no result');
          s.gbps.push(j.end.sum_received.bits_per_second / 1e9);
          pushPerRole(s.cpuSPerGB, target.pids, c0, c1, 1e9 / j.end.sum_received.bytes);
        } catch (e) {
          s.why = `iperf3 failed: ${(e as Error).message.slice(0, 200)} ${r.stderr.slice(0, 200)}`;
        }
        checkOurs(`${v} iperf3 -P ${streams}`);
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
      const ours = v !== 'haproxy relay chain';
      const before = ours ? await report(t.ours?.dialler) : undefined;
      const c0 = cpu(target.pids);
      const r = await t.clientPod.run(tools.connload, [target.echo.host, String(target.echo.port), String(CONCURRENCY), String(p.connMs), String(p.connMax)], { allowFail: true, timeoutMs: p.connMs + 30_000 });
      const c1 = cpu(target.pids);
      if (!ours && t.haproxy) {
        const pct = await haproxyInfo(t.haproxy.bSocket, 'SslFrontendSessionReuse_pct');
        if (pct !== null) s.haproxyReusePct.push(pct);
      }
      checkOurs(`${v} connload`);
      const after = before ? await report(t.ours?.dialler) : undefined;
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
        pushPerRole(s.cpuUsPerConn, target.pids, c0, c1, 1e6 / j.connections);
      } catch (e) {
        s.why = `connload failed: ${(e as Error).message.slice(0, 200)} ${r.stderr.slice(0, 200)}`;
      }
      const now = t.targets.get(v)!;
      if ('why' in now) s.why = now.why;
      await sleep(200);
    }
    log(`relay: round ${round + 1}/${p.rounds} done`);
  }
  // Past the pipe pool's idle time (2 s): what our processes hold once the load is gone.
  if (t.ours) await sleep(2500);
  const [a, r, b] = [await report(t.ours?.dialler), await report(t.ours?.relay), await report(t.ours?.nodeB)];
  const c = a && r && b ? counters(a, r, b, deaths) : null;
  if (c && t.ours && fdsBefore) {
    c.after = {
      fds: {
        dialler: [fdsBefore.dialler, fdCount(t.ours.dialler.child.pid)],
        relay: [fdsBefore.relay, fdCount(t.ours.relay.child.pid)],
        nodeB: [fdsBefore.nodeB, fdCount(t.ours.nodeB.child.pid)],
      },
      active: { dialler: a!.stats.active, relay: r!.stats.active, nodeB: b!.stats.active },
      pendingJoins: r!.stats.tunnel.pendingJoins,
      sessions: b!.sessions.map((x) => x.state).join(', ') || 'none',
    };
  }
  const notes = [
    `Five namespaces: client pod 10.245.1.10 -> node A ${A_UL} -> relay ${R_UL_A} / ${R_UL_B} -> node B ${B_UL} -> server pod ${SERVER_POD}; iperf3 server and the C echo server in the server pod, iperf3 client and connload in the client pod. The relay namespace forwards between its links, so node A reaches node B directly for the direct-tunnel variant over the same veths.`,
    'Ours: three TcpProxy processes (dist/bench/peers/tunnelproxy.js, events "failures" as the agent, default threads): node A dials (reached the real way: ClusterIP -> EDGE-MESH DNAT by our backend -> SO_ORIGINAL_DST), the relay is a TcpProxy with a tunnel listener only, node B registers with the relay (setRelays) and also has a tunnel listener for the direct variant; certificates from src/tunnel/certs.ts (nodea, relay, edge).',
  ];
  notes.push(...deaths.map((d) => `Not measured further: ${d}.`));
  if (t.haproxy) notes.push(`HAProxy ${t.haproxy.version} on OpenSSL ${t.haproxy.openssl}: tcp mode, ssl-min-ver TLSv1.3, default threads; node A's HAProxy verifies node B's certificate (verifyhost edge) through the relay and reuses its TLS session by default; the relay HAProxy forwards the TLS bytes with splice-request/response; node B's verifies client certificates.`);
  return { iperf, conns, params: { ...p, concurrency: CONCURRENCY }, counters: c, haproxy: t.haproxy ? { version: t.haproxy.version, openssl: t.haproxy.openssl } : null, notes };
}

export async function destroyRelay(t: RelaySetup | undefined): Promise<void> {
  if (!t) return;
  for (const n of [...t.namespaces].reverse()) await n.destroy();
}
