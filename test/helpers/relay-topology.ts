// Nodes behind NAT, for the relay tests: two cloud nodes with tunnel addresses (relays) and two
// edge nodes, each behind its own NAT router, on one underlay. Everything lives in namespaces
// created here and is removed by destroy(), also when creation fails half-way.
//
//   cloud pod 10.244.1.10 -- cloud   10.244.1.1 | 192.168.50.1  --+
//                            cloud-2               192.168.50.3  --+-- br0 (namespace "wan")
//   edge-1 pod 10.244.2.10 -- edge-1 10.244.2.1 | 10.0.1.2 -- 10.0.1.1 | router-1 | 192.168.50.11 --+
//   edge-2 pod 10.244.3.10 -- edge-2 10.244.3.1 | 10.0.2.2 -- 10.0.2.1 | router-2 | 192.168.50.12 --+
//
// The routers MASQUERADE what leaves through their WAN side and drop new connections coming in
// through it. The cloud node has routes to the edge LANs through the routers, so that what keeps
// it from dialling an edge node is the NAT, not a missing route. Nothing routes any pod network
// to another: the routers know only their LAN and the underlay. The edge Nodes carry no
// `edgemesh.io/tunnel-address`; the cloud Nodes do. Certificates come from `edgemesh-agent certs`.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Netns, linkNetns, type RunResult } from './netns.js';
import { CLI, assertBuilt, eventually, startAgent, type AgentProcess } from './agent.js';
import { ServicesDir } from './manifests.js';
import { SERVICE_CIDR, TUNNEL_DRIVERS, TUNNEL_PORT, metricSum, nodeYaml, parseMetrics, startPodServers, tunnelServiceYaml, type Curl, type ServerHandle } from './tunnel-topology.js';

const execFileP = promisify(execFile);

export { SERVICE_CIDR, TUNNEL_DRIVERS, TUNNEL_PORT, metricSum };

const PROBE = `
const s = require('node:net').connect({ host: process.argv[1], port: Number(process.argv[2]) });
const out = (w) => { process.stdout.write(w); process.exit(0); };
const t = setTimeout(() => out('timeout'), Number(process.argv[3]));
s.on('connect', () => out('open'));
s.on('error', (e) => out(e.code === 'ECONNREFUSED' ? 'refused' : ['EHOSTUNREACH', 'ENETUNREACH'].includes(e.code) ? 'unreachable' : e.code));
`;

export type RelayNodeName = 'cloud' | 'cloud-2' | 'edge-1' | 'edge-2';

export interface RelayNode {
  name: RelayNodeName;
  node: Netns;
  /** The pod namespace (cloud-2 has none). */
  pod?: Netns;
  /** The node's underlay-facing interface (cloud nodes: on the bridge; edges: towards their router). */
  uplinkIf: string;
  /** The node's end of the pod link, and the pod's end. */
  nodePodIf?: string;
  podIf?: string;
  /** The node's own address (cloud: underlay; edge: its router's LAN). */
  nodeIp: string;
  podIp?: string;
  /** "IP:PORT" announced in the Node (cloud nodes only). */
  tunnelAddress?: string;
  dir: ServicesDir;
  certFile: string;
  keyFile: string;
  agent?: AgentProcess;
  metricsPort?: number;
  /** `run` arguments last used (restart uses them again). */
  agentArgs?: string[];
}

export interface Router {
  ns: Netns;
  wanIf: string;
  lanIf: string;
  wanIp: string;
  lanIp: string;
}

export interface RelayTopology {
  nodes: Record<RelayNodeName, RelayNode>;
  routers: { 'edge-1': Router; 'edge-2': Router };
  /** Holds the underlay bridge. */
  wan: Netns;
  tmp: string;
  certsDir: string;
  caFile: string;
  caKeyFile: string;
  /** "IP:PORT" of the relays: cloud's and cloud-2's tunnel listeners. */
  relay1: string;
  relay2: string;
  /** Unique strings the http servers put in their pages. */
  markers: { cloud: string; edge1: string; edge2: string };
  cli(args: string[]): Promise<RunResult>;
  writeManifest(file: string, yaml: string): void;
  startServers(name: RelayNodeName, specs: { kind: 'http' | 'sink' | 'echo'; host: string; port: number; marker?: string }[]): Promise<ServerHandle>;
  /** `edgemesh-agent run` on the node; resolves after the metrics line, the first sync (/readyz) and its tunnel listener. */
  startAgent(name: RelayNodeName, extraArgs?: string[]): Promise<AgentProcess>;
  stopAgent(name: RelayNodeName, signal?: NodeJS.Signals): Promise<number | null>;
  metrics(name: RelayNodeName): Promise<Record<string, number>>;
  /** `edgemesh-agent status --metrics-addr` against the node's agent. */
  status(name: RelayNodeName): Promise<RunResult>;
  /** Open file descriptors of the node's agent process. */
  fdCount(name: RelayNodeName): number;
  curl(from: Netns, url: string, maxTimeS?: number): Promise<Curl>;
  probe(from: Netns, host: string, port: number, timeoutMs?: number): Promise<'open' | 'refused' | 'unreachable' | 'timeout'>;
  /** Waits until `relay` (a cloud node's agent) has exactly the edges in `edges` registered and each of them reports a registered session. */
  waitRegistered(relay: RelayNodeName, edges: RelayNodeName[], timeoutMs?: number): Promise<number>;
  destroy(): Promise<void>;
}

/** A veth from `member` (address `cidr`) into the bridge `br0` of `wan`. */
async function bridgeMember(wan: Netns, member: Netns, cidr: string): Promise<string> {
  const id = randomBytes(3).toString('hex');
  const mIf = `vu${id}`;
  const bIf = `vw${id}`;
  await member.run('ip', ['link', 'add', mIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', wan.name]);
  await member.run('ip', ['addr', 'add', cidr, 'dev', mIf]);
  await wan.run('ip', ['link', 'set', bIf, 'master', 'br0']);
  await wan.run('ip', ['link', 'set', bIf, 'up']);
  await member.run('ip', ['link', 'set', mIf, 'up']);
  return mIf;
}

export async function createRelayTopology(opts: { label?: string } = {}): Promise<RelayTopology> {
  const label = opts.label ?? 'rl';
  const tmp = mkdtempSync(join(tmpdir(), 'edgemesh-relay-'));
  const created: Netns[] = [];
  const dirs: ServicesDir[] = [];
  const servers: ServerHandle[] = [];
  let nodes: Record<RelayNodeName, RelayNode> | undefined;
  let destroyed = false;

  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    for (const n of Object.values(nodes ?? {})) await n.agent?.stop('SIGKILL', 5_000).catch(() => undefined);
    for (const srv of servers) await srv.stop().catch(() => undefined);
    for (const ns of [...created].reverse()) await ns.destroy();
    for (const d of dirs) d.destroy();
    rmSync(tmp, { recursive: true, force: true });
  };

  try {
    const mk = async (n: string) => {
      const ns = await Netns.create(`${label}${n}`);
      created.push(ns);
      return ns;
    };
    const wan = await mk('wan');
    await wan.run('ip', ['link', 'add', 'br0', 'type', 'bridge']);
    await wan.run('ip', ['link', 'set', 'br0', 'up']);
    const cloud = await mk('c1');
    const cloud2 = await mk('c2');
    const r1 = await mk('r1');
    const r2 = await mk('r2');
    const e1 = await mk('e1');
    const e2 = await mk('e2');
    const cloudPod = await mk('c1p');
    const e1Pod = await mk('e1p');
    const e2Pod = await mk('e2p');

    const cloudUl = await bridgeMember(wan, cloud, '192.168.50.1/24');
    const cloud2Ul = await bridgeMember(wan, cloud2, '192.168.50.3/24');
    const r1Wan = await bridgeMember(wan, r1, '192.168.50.11/24');
    const r2Wan = await bridgeMember(wan, r2, '192.168.50.12/24');
    const l1 = await linkNetns(r1, '10.0.1.1/24', e1, '10.0.1.2/24');
    const l2 = await linkNetns(r2, '10.0.2.1/24', e2, '10.0.2.2/24');
    const cp = await linkNetns(cloud, '10.244.1.1/24', cloudPod, '10.244.1.10/24');
    const p1 = await linkNetns(e1, '10.244.2.1/24', e1Pod, '10.244.2.10/24');
    const p2 = await linkNetns(e2, '10.244.3.1/24', e2Pod, '10.244.3.10/24');

    await cloudPod.run('ip', ['route', 'add', 'default', 'via', '10.244.1.1']);
    await e1Pod.run('ip', ['route', 'add', 'default', 'via', '10.244.2.1']);
    await e2Pod.run('ip', ['route', 'add', 'default', 'via', '10.244.3.1']);
    await e1.run('ip', ['route', 'add', 'default', 'via', '10.0.1.1']);
    await e2.run('ip', ['route', 'add', 'default', 'via', '10.0.2.1']);
    // The cloud could route to the edge LANs: only the NAT routers stop it.
    await cloud.run('ip', ['route', 'add', '10.0.1.0/24', 'via', '192.168.50.11']);
    await cloud.run('ip', ['route', 'add', '10.0.2.0/24', 'via', '192.168.50.12']);
    // A node's own connections to a ClusterIP need a route before nat OUTPUT (as a default route gives).
    await cloud.run('ip', ['route', 'add', SERVICE_CIDR, 'dev', cloudUl]);
    await cloud2.run('ip', ['route', 'add', SERVICE_CIDR, 'dev', cloud2Ul]);
    for (const ns of [cloud, cloud2, e1, e2, r1, r2]) await ns.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    for (const [r, w] of [[r1, r1Wan], [r2, r2Wan]] as const) {
      await r.run('iptables', ['-t', 'nat', '-A', 'POSTROUTING', '-o', w, '-j', 'MASQUERADE']);
      await r.run('iptables', ['-A', 'FORWARD', '-i', w, '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP']);
    }

    const certsDir = join(tmp, 'certs');
    const mkNode = (name: RelayNodeName, node: Netns, uplinkIf: string, nodeIp: string, pod?: { ns: Netns; nodeIf: string; podIf: string; ip: string }, tunnelAddress?: string): RelayNode => {
      const dir = new ServicesDir();
      dirs.push(dir);
      return {
        name, node, uplinkIf, nodeIp, tunnelAddress, dir,
        ...(pod ? { pod: pod.ns, nodePodIf: pod.nodeIf, podIf: pod.podIf, podIp: pod.ip } : {}),
        certFile: join(certsDir, `${name}.pem`),
        keyFile: join(certsDir, `${name}.key`),
      };
    };
    nodes = {
      cloud: mkNode('cloud', cloud, cloudUl, '192.168.50.1', { ns: cloudPod, nodeIf: cp.aIf, podIf: cp.bIf, ip: '10.244.1.10' }, `192.168.50.1:${TUNNEL_PORT}`),
      'cloud-2': mkNode('cloud-2', cloud2, cloud2Ul, '192.168.50.3', undefined, `192.168.50.3:${TUNNEL_PORT}`),
      'edge-1': mkNode('edge-1', e1, l1.bIf, '10.0.1.2', { ns: e1Pod, nodeIf: p1.aIf, podIf: p1.bIf, ip: '10.244.2.10' }),
      'edge-2': mkNode('edge-2', e2, l2.bIf, '10.0.2.2', { ns: e2Pod, nodeIf: p2.aIf, podIf: p2.bIf, ip: '10.244.3.10' }),
    };
    const n = nodes;
    const rnd = () => Math.random().toString(36).slice(2, 10);
    const markers = { cloud: `CLOUD-PAGE-MARKER-${rnd()}${rnd()}`, edge1: `EDGE1-PAGE-MARKER-${rnd()}${rnd()}`, edge2: `EDGE2-PAGE-MARKER-${rnd()}${rnd()}` };

    const cli = async (args: string[]): Promise<RunResult> => {
      assertBuilt();
      try {
        const r = await execFileP(process.execPath, [CLI, ...args], { timeout: 30_000 });
        return { stdout: r.stdout, stderr: r.stderr, code: 0 };
      } catch (e) {
        const err = e as { stderr?: string; code?: number; message: string };
        throw new Error(`edgemesh-agent ${args.join(' ')} failed (${err.code}): ${(err.stderr ?? '').trim() || err.message}`);
      }
    };
    const writeManifest = (file: string, yaml: string) => {
      for (const x of Object.values(n)) x.dir.write(file, yaml);
    };

    writeManifest('nodes.yaml', [
      nodeYaml('cloud', n.cloud.tunnelAddress),
      nodeYaml('cloud-2', n['cloud-2'].tunnelAddress),
      nodeYaml('edge-1', undefined),
      nodeYaml('edge-2', undefined),
    ].join('---\n'));
    const ports = [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'bulk', port: 9000, targetPort: 9000 }, { name: 'echo', port: 7000, targetPort: 7000 }];
    writeManifest('edge1-web.yaml', tunnelServiceYaml({ namespace: 'shop', name: 'edge1-web', clusterIP: '10.96.0.50', ports, endpoints: [{ ip: '10.244.2.10', nodeName: 'edge-1' }] }));
    writeManifest('edge2-web.yaml', tunnelServiceYaml({ namespace: 'shop', name: 'edge2-web', clusterIP: '10.96.0.60', ports: ports.slice(0, 1), endpoints: [{ ip: '10.244.3.10', nodeName: 'edge-2' }] }));
    writeManifest('cloud-web.yaml', tunnelServiceYaml({ namespace: 'shop', name: 'cloud-web', clusterIP: '10.96.0.30', ports: ports.slice(0, 1), endpoints: [{ ip: '10.244.1.10', nodeName: 'cloud' }] }));

    await cli(['certs', 'init', '--dir', certsDir]);
    for (const name of Object.keys(n)) await cli(['certs', 'issue', '--dir', certsDir, '--node', name]);

    const listening = async (name: RelayNodeName) => {
      const r = await n[name].node.run('ss', ['-Hltn', `sport = :${TUNNEL_PORT}`], { allowFail: true });
      return r.stdout.trim() !== '';
    };

    const topo: RelayTopology = {
      nodes: n,
      routers: {
        'edge-1': { ns: r1, wanIf: r1Wan, lanIf: l1.aIf, wanIp: '192.168.50.11', lanIp: '10.0.1.1' },
        'edge-2': { ns: r2, wanIf: r2Wan, lanIf: l2.aIf, wanIp: '192.168.50.12', lanIp: '10.0.2.1' },
      },
      wan,
      tmp,
      certsDir,
      caFile: join(certsDir, 'ca.pem'),
      caKeyFile: join(certsDir, 'ca.key'),
      relay1: `192.168.50.1:${TUNNEL_PORT}`,
      relay2: `192.168.50.3:${TUNNEL_PORT}`,
      markers,
      cli,
      writeManifest,

      async startServers(name, specs) {
        const pod = n[name].pod;
        if (!pod) throw new Error(`${name} has no pod namespace`);
        const h = await startPodServers(pod, name, specs);
        servers.push(h);
        return h;
      },

      async startAgent(name, extraArgs) {
        const side = n[name];
        if (extraArgs) side.agentArgs = extraArgs;
        const args = [
          'run',
          '--node-name', name,
          '--services-dir', side.dir.path,
          '--service-cidr', SERVICE_CIDR,
          '--metrics-addr', '127.0.0.1:0',
          '--tunnel-ca', topo.caFile,
          '--tunnel-cert', side.certFile,
          '--tunnel-key', side.keyFile,
          ...(side.agentArgs ?? []),
        ];
        const agent = startAgent(side.node, args);
        side.agent = agent;
        const line = await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics and health on'), 15_000, `${name}: metrics line`);
        side.metricsPort = Number(line.port ?? /:(\d+)\//.exec(String(line.msg))?.[1]);
        // The first sync: /readyz (a restart over the rules a killed agent left logs no change).
        const t0 = Date.now();
        for (;;) {
          const r = await side.node.run('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://127.0.0.1:${side.metricsPort}/readyz`], { allowFail: true });
          if (r.stdout.trim() === '200') break;
          if (agent.child.exitCode !== null) throw new Error(`${name}: agent exited ${agent.child.exitCode}: ${agent.stderr.slice(-2000)}`);
          if (Date.now() - t0 > 15_000) throw new Error(`${name}: /readyz not 200 15 s after the metrics line; last log lines:\n${agent.logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}`);
          await new Promise((r2) => setTimeout(r2, 50));
        }
        while (!(await listening(name))) {
          if (Date.now() - t0 > 25_000) throw new Error(`${name}: nothing listens on port ${TUNNEL_PORT} 25 s after the metrics line; last log lines:\n${agent.logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}\n${agent.stderr.slice(-1000)}`);
          if (agent.child.exitCode !== null) throw new Error(`${name}: agent exited ${agent.child.exitCode}: ${agent.stderr.slice(-2000)}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        return agent;
      },

      async stopAgent(name, signal = 'SIGTERM') {
        const a = n[name].agent;
        if (!a) return null;
        const code = await a.stop(signal, 15_000);
        n[name].agent = undefined;
        return code;
      },

      async metrics(name) {
        const port = n[name].metricsPort;
        if (!port) throw new Error(`${name}: no agent metrics port`);
        const r = await n[name].node.run('curl', ['-sS', '--max-time', '3', `http://127.0.0.1:${port}/metrics`], { allowFail: true });
        if (r.code !== 0) {
          const a = n[name].agent;
          const state = !a ? 'no agent' : a.child.exitCode !== null || a.child.signalCode !== null ? `agent exited (code ${a.child.exitCode}, signal ${a.child.signalCode})` : 'agent still running';
          throw new Error(`${name}: metrics scrape failed (curl exit ${r.code}: ${r.stderr.trim()}); ${state}; last log lines:\n${(a?.logs ?? []).slice(-8).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${(a?.stderr ?? '').slice(-3000)}`);
        }
        return parseMetrics(r.stdout);
      },

      async status(name) {
        return n[name].node.run(process.execPath, [CLI, 'status', '--metrics-addr', `127.0.0.1:${n[name].metricsPort}`], { allowFail: true });
      },

      fdCount(name) {
        const pid = n[name].agent?.child.pid;
        if (!pid) throw new Error(`${name}: no agent`);
        return readdirSync(`/proc/${pid}/fd`).length;
      },

      async curl(from, url, maxTimeS = 5) {
        const t0 = Date.now();
        const r = await from.run('curl', ['-sS', '--connect-timeout', '3', '--max-time', String(maxTimeS), url], { allowFail: true, timeoutMs: (maxTimeS + 5) * 1000 });
        return { ok: r.code === 0, code: r.code, body: r.stdout, stderr: r.stderr.trim(), ms: Date.now() - t0 };
      },

      async probe(from, host, port, timeoutMs = 2_000) {
        const r = await from.run(process.execPath, ['-e', PROBE, host, String(port), String(timeoutMs)], { allowFail: true, timeoutMs: timeoutMs + 5_000 });
        return r.stdout.trim() as 'open' | 'refused' | 'unreachable' | 'timeout';
      },

      async waitRegistered(relay, edges, timeoutMs = 15_000) {
        const relayLabel = n[relay].tunnelAddress!;
        const { ms } = await eventually(async () => {
          const m = await topo.metrics(relay);
          const regs = metricSum(m, 'edgemesh_relay_registered_nodes');
          const sessions = await Promise.all(edges.map(async (e) => metricSum(await topo.metrics(e), 'edgemesh_relay_sessions', { relay: relayLabel, state: 'registered' })));
          return { regs, sessions };
        }, (v) => v.regs === edges.length && v.sessions.every((s) => s === 1), timeoutMs, `${edges.join(', ')} registered with ${relay}`);
        return ms;
      },

      destroy,
    };
    return topo;
  } catch (e) {
    await destroy();
    throw e;
  }
}

/** Whether the node's agent process is still running (not exited, not killed by a signal). */
export function agentAlive(n: RelayNode): boolean {
  const a = n.agent;
  return !!a && a.child.exitCode === null && a.child.signalCode === null;
}
