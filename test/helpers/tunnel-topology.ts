// Two nodes whose pod networks cannot reach each other, for the agent-to-agent tunnel (tests
// and benchmark). Everything lives in namespaces created here and is removed by destroy().
//
//   cloud pod 10.244.1.10/24 --- cloud node 10.244.1.1 | 192.168.50.1 (fd00:50::1) ---underlay--- (fd00:50::2) 192.168.50.2 | edge node 10.244.2.1 --- edge pod 10.244.2.10/24
//
// ip_forward on the nodes, pod default routes to their node, and no route between the two pod
// networks: only the agents' tunnel joins them. The service CIDR is routed onto the underlay
// link on each node (as a real node's default route would carry it) so a node's own connection
// to a ClusterIP finds a route before nat OUTPUT; without an agent such packets go nowhere.
//
// Each node gets its own --services-dir with the same cluster (Nodes with their tunnel
// addresses, Services, EndpointSlices with nodeName); certificates come from the agent's own
// `edgemesh-agent certs init/issue`.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { ChildProcess } from 'node:child_process';
import { Netns, linkNetns, type RunResult } from './netns.js';
import { CLI, assertBuilt, startAgent, type AgentProcess } from './agent.js';
import { ServicesDir } from './manifests.js';

const execFileP = promisify(execFile);
export const TUNNEL_DRIVERS = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'netns', 'drivers');

const PROBE = `
const s = require('node:net').connect({ host: process.argv[1], port: Number(process.argv[2]) });
const out = (w) => { process.stdout.write(w); process.exit(0); };
const t = setTimeout(() => out('timeout'), Number(process.argv[3]));
s.on('connect', () => out('open'));
s.on('error', (e) => out(e.code === 'ECONNREFUSED' ? 'refused' : ['EHOSTUNREACH', 'ENETUNREACH'].includes(e.code) ? 'unreachable' : e.code));
`;

export type NodeName = 'cloud' | 'edge';

export const SERVICE_CIDR = '10.96.0.0/12';
export const TUNNEL_PORT = 20006;

export interface EndpointSpec {
  ip: string;
  /** A NodeName, or a node outside the topology. */
  nodeName: string;
  ready?: boolean;
}

export interface TunnelServiceSpec {
  namespace: string;
  name: string;
  clusterIP: string;
  ports: { name: string; port: number; targetPort: number }[];
  endpoints: EndpointSpec[];
  internalTrafficPolicy?: 'Cluster' | 'Local';
}

/** Service + EndpointSlice (with nodeName per endpoint, one named port each), as one manifest file. */
export function tunnelServiceYaml(s: TunnelServiceSpec): string {
  const svcPorts = s.ports.map((p) => `  - name: ${p.name}\n    port: ${p.port}\n    protocol: TCP\n    targetPort: ${p.targetPort}`).join('\n');
  const slicePorts = s.ports.map((p) => `- name: ${p.name}\n  port: ${p.targetPort}\n  protocol: TCP`).join('\n');
  const eps = s.endpoints.map((e) => `- addresses: ["${e.ip}"]\n  nodeName: ${e.nodeName}\n  conditions:\n    ready: ${e.ready ?? true}`).join('\n');
  return `apiVersion: v1
kind: Service
metadata:
  name: ${s.name}
  namespace: ${s.namespace}
spec:
  clusterIP: ${s.clusterIP}
${s.internalTrafficPolicy ? `  internalTrafficPolicy: ${s.internalTrafficPolicy}\n` : ''}  ports:
${svcPorts}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${s.name}-abc12
  namespace: ${s.namespace}
  labels:
    kubernetes.io/service-name: ${s.name}
addressType: IPv4
ports:
${slicePorts}
endpoints:${eps ? `\n${eps}` : ' []'}
`;
}

/** A v1 Node with the tunnel address annotation ("IP:PORT", IPv6 "[addr]:port"). */
export function nodeYaml(name: string, tunnelAddress: string | undefined): string {
  return `apiVersion: v1
kind: Node
metadata:
  name: ${name}
${tunnelAddress ? `  annotations:\n    edgemesh.io/tunnel-address: "${tunnelAddress}"\n` : ''}`;
}

export interface TunnelTopologyOptions {
  /** Family of the underlay addresses the Nodes announce (and the agents listen on). Default ipv4. */
  underlay?: 'ipv4' | 'ipv6';
  /** Make the CA and the node certificates with `edgemesh-agent certs` (default true). */
  certs?: boolean;
  /** Namespace name label prefix (default "tn"). */
  label?: string;
}

export interface NodeSide {
  name: NodeName;
  node: Netns;
  pod: Netns;
  /** Underlay veth, in the node namespace. */
  underlayIf: string;
  /** The node's end of the pod link (in the node namespace) and the pod's end (in the pod namespace). */
  nodePodIf: string;
  podIf: string;
  underlayIp4: string;
  underlayIp6: string;
  /** What the Node annotation announces, "IP:PORT" / "[addr]:port". */
  tunnelAddress: string;
  /** --tunnel-listen given to this node's agent; undefined: the default (0.0.0.0:20006), used for the IPv4 underlay. */
  tunnelListen: string | undefined;
  /** The address the peer dials (without port), the underlay family's. */
  tunnelIp: string;
  podIp: string;
  podGateway: string;
  podCidr: string;
  dir: ServicesDir;
  certFile: string;
  keyFile: string;
  /** The running agent (startAgent), else undefined. */
  agent?: AgentProcess;
  metricsPort?: number;
  /** Extra `run` arguments last used for this node's agent (restart uses them again). */
  agentArgs?: string[];
}

export interface ServerHandle {
  child: ChildProcess;
  /** Accepted connections per "host:port" so far. */
  conns: Map<string, number>;
  count(hostPort: string): number;
  stop(): Promise<void>;
}

export interface Curl {
  ok: boolean;
  /** curl's exit code: 0 ok, 7 refused/unreachable, 28 timeout, 52 empty reply, 56 reset. */
  code: number;
  body: string;
  stderr: string;
  ms: number;
}

export interface TunnelTopology {
  cloud: NodeSide;
  edge: NodeSide;
  side(name: NodeName): NodeSide;
  underlay: 'ipv4' | 'ipv6';
  /** Temporary directory (certificates, captures, scratch); removed by destroy(). */
  tmp: string;
  /** CA certificate and key (certs init) and the directory holding them and the node certs. */
  certsDir: string;
  caFile: string;
  caKeyFile: string;
  /** Unique strings the cloud and edge http servers put in their pages. */
  markers: { cloud: string; edge: string };
  /** Runs the agent CLI (`certs ...` etc.) in the root namespace: it only writes files. */
  cli(args: string[]): Promise<RunResult>;
  /** Writes a manifest file into both nodes' services dirs (the cluster is the same for both). */
  writeManifest(file: string, yaml: string): void;
  removeManifest(file: string): void;
  /** Starts `node tunnel-servers.mjs` in a pod namespace; resolves once every listener is bound. */
  startServers(name: NodeName, specs: { kind: 'http' | 'sink' | 'echo'; host: string; port: number; marker?: string }[]): Promise<ServerHandle>;
  /**
   * Starts this node's `edgemesh-agent run` (node name, services dir, service CIDR, tunnel
   * certificates and listen address, metrics on 127.0.0.1:0) plus `extraArgs`; resolves once
   * /readyz says the first sync is done and the tunnel listener is bound.
   */
  startAgent(name: NodeName, extraArgs?: string[]): Promise<AgentProcess>;
  /** Stops the node's agent with `signal` (SIGKILL leaves its rules, as a crash does). */
  stopAgent(name: NodeName, signal?: NodeJS.Signals): Promise<number | null>;
  /** Every edgemesh_* sample of the node's agent, "name{labels}" -> value. */
  metrics(name: NodeName): Promise<Record<string, number>>;
  /** curl from a namespace with short timeouts (connect 2 s, total `maxTimeS`, default 5). */
  curl(from: Netns, url: string, maxTimeS?: number): Promise<Curl>;
  /**
   * One TCP connect from a namespace (no ping on this machine): "open", "refused" (the host
   * answered with a reset: it is reachable), "unreachable" (no route / ICMP), "timeout".
   */
  probe(from: Netns, host: string, port: number, timeoutMs?: number): Promise<'open' | 'refused' | 'unreachable' | 'timeout'>;
  /** Whether something listens on the node's tunnel port (ss, in the node namespace). */
  tunnelListening(name: NodeName): Promise<boolean>;
  destroy(): Promise<void>;
}

/** Sums the samples of `name` whose labels include every label of `labels`. */
export function metricSum(m: Record<string, number>, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const [k, v] of Object.entries(m)) {
    const brace = k.indexOf('{');
    const n = brace < 0 ? k : k.slice(0, brace);
    if (n !== name) continue;
    const ls = brace < 0 ? '' : k.slice(brace + 1, -1);
    if (Object.entries(labels).every(([lk, lv]) => ls.includes(`${lk}="${lv}"`))) total += v;
  }
  return total;
}

/**
 * The echo/HTTP servers of test/netns/drivers/tunnel-servers.mjs in a pod namespace, once they say
 * "ready"; each "conn HOST:PORT" line they print counts a connection to that listener.
 */
export async function startPodServers(pod: Netns, name: string, specs: unknown): Promise<ServerHandle> {
  const child = pod.spawn(process.execPath, [join(TUNNEL_DRIVERS, 'tunnel-servers.mjs'), JSON.stringify(specs)]);
  const conns = new Map<string, number>();
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  await new Promise<void>((resolveP, reject) => {
    const timer = setTimeout(() => reject(new Error(`servers in ${name} pod: not ready in 10 s: ${stderr}`)), 10_000);
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      if (line === 'ready') {
        clearTimeout(timer);
        resolveP();
      } else if (line.startsWith('conn ')) {
        const k = line.slice(5);
        conns.set(k, (conns.get(k) ?? 0) + 1);
      }
    });
    child.on('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`servers in ${name} pod exited ${c}: ${stderr}`));
    });
  });
  return {
    child,
    conns,
    count: (hp) => conns.get(hp) ?? 0,
    async stop() {
      if (child.exitCode === null && child.signalCode === null && child.pid) {
        const gone = new Promise((r) => child.once('exit', r));
        process.kill(child.pid, 'SIGKILL');
        await gone;
      }
    },
  };
}

/** The edgemesh_ series of a /metrics text, keyed by name{labels}. */
export function parseMetrics(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const l of text.split('\n')) {
    const m = /^(edgemesh_\S+(?:\{[^}]*\})?) (\S+)$/.exec(l);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

export async function createTunnelTopology(opts: TunnelTopologyOptions = {}): Promise<TunnelTopology> {
  const underlay = opts.underlay ?? 'ipv4';
  const label = opts.label ?? 'tn';
  const tmp = mkdtempSync(join(tmpdir(), 'edgemesh-tunnel-'));
  const created: Netns[] = [];
  const dirs: ServicesDir[] = [];
  const servers: ServerHandle[] = [];
  let sides: Record<NodeName, NodeSide> | undefined;
  let destroyed = false;

  const destroy = async () => {
    if (destroyed) return;
    destroyed = true;
    for (const s of Object.values(sides ?? {})) await s.agent?.stop('SIGKILL', 5_000).catch(() => undefined);
    for (const srv of servers) await srv.stop().catch(() => undefined);
    // pods first, then nodes (Netns.destroy also ends any process left in them, by PID)
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
    const cloudNode = await mk('cn');
    const edgeNode = await mk('en');
    const cloudPod = await mk('cp');
    const edgePod = await mk('ep');

    // The underlay: both families on the link; the Nodes announce the chosen family's address.
    const ul = await linkNetns(cloudNode, '192.168.50.1/24', edgeNode, '192.168.50.2/24', { a6: 'fd00:50::1/64', b6: 'fd00:50::2/64' });
    const cp = await linkNetns(cloudNode, '10.244.1.1/24', cloudPod, '10.244.1.10/24');
    const ep = await linkNetns(edgeNode, '10.244.2.1/24', edgePod, '10.244.2.10/24');
    await cloudPod.run('ip', ['route', 'add', 'default', 'via', '10.244.1.1']);
    await edgePod.run('ip', ['route', 'add', 'default', 'via', '10.244.2.1']);
    for (const [n, ulIf] of [[cloudNode, ul.aIf], [edgeNode, ul.bIf]] as const) {
      await n.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
      await n.run('ip', ['route', 'add', SERVICE_CIDR, 'dev', ulIf]);
    }

    const certsDir = join(tmp, 'certs');
    const mkSide = (name: NodeName, node: Netns, pod: Netns, underlayIf: string, nodePodIf: string, podIf: string, ip4: string, ip6: string, podIp: string, podGateway: string, podCidr: string): NodeSide => {
      const dir = new ServicesDir();
      dirs.push(dir);
      const tunnelIp = underlay === 'ipv4' ? ip4 : ip6;
      const hp = underlay === 'ipv4' ? `${ip4}:${TUNNEL_PORT}` : `[${ip6}]:${TUNNEL_PORT}`;
      return {
        name, node, pod, underlayIf, nodePodIf, podIf,
        underlayIp4: ip4, underlayIp6: ip6, tunnelIp,
        tunnelAddress: hp,
        // IPv4: the default listener (0.0.0.0:20006); IPv6: the node's own underlay address.
        tunnelListen: underlay === 'ipv4' ? undefined : hp,
        podIp, podGateway, podCidr, dir,
        certFile: join(certsDir, `${name}.pem`),
        keyFile: join(certsDir, `${name}.key`),
      };
    };
    sides = {
      cloud: mkSide('cloud', cloudNode, cloudPod, ul.aIf, cp.aIf, cp.bIf, '192.168.50.1', 'fd00:50::1', '10.244.1.10', '10.244.1.1', '10.244.1.0/24'),
      edge: mkSide('edge', edgeNode, edgePod, ul.bIf, ep.aIf, ep.bIf, '192.168.50.2', 'fd00:50::2', '10.244.2.10', '10.244.2.1', '10.244.2.0/24'),
    };
    const s = sides;
    const rnd = () => Math.random().toString(36).slice(2, 10);
    const markers = { cloud: `CLOUD-WEB-MARKER-${rnd()}${rnd()}`, edge: `EDGE-WEB-MARKER-${rnd()}${rnd()}` };

    const cli = async (args: string[]): Promise<RunResult> => {
      assertBuilt();
      try {
        const r = await execFileP(process.execPath, [CLI, ...args], { timeout: 30_000 });
        return { stdout: r.stdout, stderr: r.stderr, code: 0 };
      } catch (e) {
        const err = e as { stdout?: string; stderr?: string; code?: number; message: string };
        throw new Error(`edgemesh-agent ${args.join(' ')} failed (${err.code}): ${(err.stderr ?? '').trim() || err.message}`);
      }
    };

    const writeManifest = (file: string, yaml: string) => {
      for (const x of Object.values(s)) x.dir.write(file, yaml);
    };
    const removeManifest = (file: string) => {
      for (const x of Object.values(s)) x.dir.remove(file);
    };

    // The cluster both agents see.
    writeManifest('nodes.yaml', `${nodeYaml('cloud', s.cloud.tunnelAddress)}---\n${nodeYaml('edge', s.edge.tunnelAddress)}`);
    writeManifest('edge-web.yaml', tunnelServiceYaml({
      namespace: 'shop', name: 'edge-web', clusterIP: '10.96.0.20',
      ports: [{ name: 'http', port: 80, targetPort: 8080 }, { name: 'bulk', port: 9000, targetPort: 9000 }, { name: 'echo', port: 7000, targetPort: 7000 }],
      endpoints: [{ ip: '10.244.2.10', nodeName: 'edge' }],
    }));
    writeManifest('cloud-web.yaml', tunnelServiceYaml({
      namespace: 'shop', name: 'cloud-web', clusterIP: '10.96.0.30',
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      endpoints: [{ ip: '10.244.1.10', nodeName: 'cloud' }],
    }));

    if (opts.certs ?? true) {
      await cli(['certs', 'init', '--dir', certsDir]);
      await cli(['certs', 'issue', '--dir', certsDir, '--node', 'cloud']);
      await cli(['certs', 'issue', '--dir', certsDir, '--node', 'edge']);
    }

    const topo: TunnelTopology = {
      cloud: s.cloud,
      edge: s.edge,
      side: (n) => s[n],
      underlay,
      tmp,
      certsDir,
      caFile: join(certsDir, 'ca.pem'),
      caKeyFile: join(certsDir, 'ca.key'),
      markers,
      cli,
      writeManifest,
      removeManifest,

      async startServers(name, specs) {
        const h = await startPodServers(s[name].pod, name, specs);
        servers.push(h);
        return h;
      },

      async startAgent(name, extraArgs) {
        const side = s[name];
        if (extraArgs) side.agentArgs = extraArgs;
        const args = [
          'run',
          '--node-name', name,
          '--services-dir', side.dir.path,
          '--service-cidr', SERVICE_CIDR,
          '--metrics-addr', '127.0.0.1:0',
          ...(side.tunnelListen ? ['--tunnel-listen', side.tunnelListen] : []),
          '--tunnel-ca', topo.caFile,
          '--tunnel-cert', side.certFile,
          '--tunnel-key', side.keyFile,
          ...(side.agentArgs ?? []),
        ];
        const agent = startAgent(side.node, args);
        side.agent = agent;
        const line = await agent.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('metrics and health on'), 15_000, `${name}: metrics line`);
        side.metricsPort = Number(line.port ?? /:(\d+)\//.exec(String(line.msg))?.[1]);
        // /readyz: first sync done (a restart over a killed agent's rules writes, and logs, nothing)
        const ready = async () => (await side.node.run('curl', ['-sf', '--max-time', '2', `http://127.0.0.1:${side.metricsPort}/readyz`], { allowFail: true })).code === 0;
        const t0 = Date.now();
        while (!((await ready()) && (await topo.tunnelListening(name)))) {
          if (Date.now() - t0 > 15_000) throw new Error(`${name}: not ready with its tunnel listener on port ${TUNNEL_PORT} within 15 s; last log lines:\n${agent.logs.slice(-10).map((l) => JSON.stringify(l)).join('\n')}\n${agent.stderr.slice(-1000)}`);
          if (agent.child.exitCode !== null || agent.child.signalCode !== null) throw new Error(`${name}: agent exited ${agent.child.exitCode ?? agent.child.signalCode}: ${agent.stderr.slice(-2000)}`);
          await new Promise((r) => setTimeout(r, 50));
        }
        return agent;
      },

      async stopAgent(name, signal = 'SIGTERM') {
        const a = s[name].agent;
        if (!a) return null;
        const code = await a.stop(signal, 15_000);
        s[name].agent = undefined;
        return code;
      },

      async metrics(name) {
        const port = s[name].metricsPort;
        if (!port) throw new Error(`${name}: no agent metrics port`);
        const r = await s[name].node.run('curl', ['-sS', '--max-time', '3', `http://127.0.0.1:${port}/metrics`]);
        return parseMetrics(r.stdout);
      },

      async curl(from, url, maxTimeS = 5) {
        const t0 = Date.now();
        const r = await from.run('curl', ['-sS', '--connect-timeout', '2', '--max-time', String(maxTimeS), url], { allowFail: true, timeoutMs: (maxTimeS + 5) * 1000 });
        return { ok: r.code === 0, code: r.code, body: r.stdout, stderr: r.stderr.trim(), ms: Date.now() - t0 };
      },

      async probe(from, host, port, timeoutMs = 2_000) {
        const r = await from.run(process.execPath, ['-e', PROBE, host, String(port), String(timeoutMs)], { allowFail: true, timeoutMs: timeoutMs + 5_000 });
        return r.stdout.trim() as 'open' | 'refused' | 'unreachable' | 'timeout';
      },

      async tunnelListening(name) {
        const r = await s[name].node.run('ss', ['-Hltn', `sport = :${TUNNEL_PORT}`], { allowFail: true });
        return r.stdout.trim() !== '';
      },

      destroy,
    };
    return topo;
  } catch (e) {
    await destroy();
    throw e;
  }
}
