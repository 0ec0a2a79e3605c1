// Footprint: the agent as a user starts it (`edgemesh-agent run`, dist/src/bin.js, which
// re-executes itself with the daemon's V8 settings), iptables-legacy, in a namespace that holds
// kube-proxy's rules for the same services, fed N Services (and EndpointSlices, one in ten
// labelled noproxy=edgemesh) by each source: a --services-dir, and the Kubernetes API (the
// in-test list/watch server, run inside the namespace on 127.0.0.1:10550 as MetaServer is on an
// edge node). Measured: start to the first completed sync, then after `settleMs` the RSS (anon
// and file-backed), the peak (VmHWM), the V8 heap and glibc's heap (from /metrics), and the CPU of
// the last 10 s (idle: nothing changes).
import type { ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Netns } from '../src/dev/netns.js';
import { NODE_FLAGS } from '../src/node-flags.js';
import { BIN, ServicesDir, startAgent, type AgentProc } from './agent.js';
import { ROOT } from './data.js';
import { cpuSeconds, kubeProxyChunks, log, serviceIp, sleep, svcName, svcNamespace } from './lib.js';

export type FootprintSource = 'services-dir' | 'kubernetes-api';

export interface FootprintRow {
  source: FootprintSource;
  services: number;
  startupMs: number | null;
  rssMiB: number | null;
  peakMiB: number | null;
  anonMiB: number | null;
  fileMiB: number | null;
  heapUsedMiB: number | null;
  heapCommittedMiB: number | null;
  mallocMiB: number | null;
  idleCpuPct: number | null;
  why?: string;
}

export interface FootprintResult {
  settleMs: number;
  nodeFlags: string;
  rows: FootprintRow[];
}

const METRICS = '127.0.0.1:10251';
const API = '127.0.0.1:10550';
const MiB = 1024 * 1024;

function procStatus(pid: number): { rss: number; peak: number; anon: number; file: number } {
  const text = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(text)?.[1] ?? NaN) / 1024;
  return { rss: kib('VmRSS'), peak: kib('VmHWM'), anon: kib('RssAnon'), file: kib('RssFile') };
}

function metric(text: string, name: string, labels = ''): number | null {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)));
  return line ? Number(line.split(' ')[1]) : null;
}

/** The API objects of `n` services, as the list/watch server serves them. */
function apiObjects(n: number): { services: object[]; endpointslices: object[] } {
  const services: object[] = [];
  const endpointslices: object[] = [];
  for (let i = 0; i < n; i++) {
    const name = svcName(i);
    const namespace = svcNamespace(i);
    services.push({
      metadata: { name, namespace, ...(i < n / 10 ? { labels: { noproxy: 'edgemesh' } } : {}) },
      spec: { clusterIP: serviceIp(i), ports: [{ port: 80, protocol: 'TCP', targetPort: 8080 }] },
    });
    endpointslices.push({
      metadata: { name: `${name}-bench`, namespace, labels: { 'kubernetes.io/service-name': name } },
      addressType: 'IPv4',
      ports: [{ port: 8080, protocol: 'TCP' }],
      endpoints: [{ addresses: [`10.${200 + ((i >> 14) & 15)}.${(i >> 6) & 255}.${(i & 63) << 2}`], conditions: { ready: true } }],
    });
  }
  return { services, endpointslices };
}

async function startApiServer(ns: Netns, tmp: string, n: number): Promise<ChildProcess> {
  const spec = join(tmp, `api-${n}.json`);
  const [host, port] = API.split(':');
  writeFileSync(spec, JSON.stringify({ host, port: Number(port), objects: apiObjects(n) }));
  const child = ns.spawn(process.execPath, [join(ROOT, 'test', 'netns', 'drivers', 'fake-apiserver.mjs'), `@${spec}`], { stdio: ['pipe', 'pipe', 'pipe'] });
  await new Promise<void>((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`API server: not ready within 60 s: ${err.slice(-400)}`)), 60_000);
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('ready ')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`API server exited ${code}: ${err.slice(-400)}`));
    });
  });
  child.removeAllListeners('exit');
  return child;
}

async function measureOne(ns: Netns, tmp: string, source: FootprintSource, n: number, settleMs: number, track: (a: AgentProc | undefined) => void): Promise<FootprintRow> {
  const row: FootprintRow = { source, services: n, startupMs: null, rssMiB: null, peakMiB: null, anonMiB: null, fileMiB: null, heapUsedMiB: null, heapCommittedMiB: null, mallocMiB: null, idleCpuPct: null };
  let dir: ServicesDir | undefined;
  let api: ChildProcess | undefined;
  let agent: AgentProc | undefined;
  try {
    if (source === 'services-dir') dir = new ServicesDir(tmp, n, n / 10);
    else api = await startApiServer(ns, tmp, n);
    const extra = ['--metrics-addr', METRICS, ...(source === 'kubernetes-api' ? ['--api-server', `http://${API}`] : [])];
    agent = await startAgent(ns, 'iptables-legacy', dir, extra, BIN);
    track(agent);
    row.startupMs = agent.startupMs;
    const idleWindow = Math.min(10_000, settleMs / 2);
    await sleep(settleMs - idleWindow);
    const c0 = cpuSeconds(agent.pid);
    const t0 = performance.now();
    await sleep(idleWindow);
    row.idleCpuPct = ((cpuSeconds(agent.pid) - c0) / ((performance.now() - t0) / 1000)) * 100;
    const st = procStatus(agent.pid);
    Object.assign(row, { rssMiB: st.rss, peakMiB: st.peak, anonMiB: st.anon, fileMiB: st.file });
    const text = (await ns.run('curl', ['-s', '--max-time', '5', `http://${METRICS}/metrics`])).stdout;
    const used = metric(text, 'nodejs_heap_size_used_bytes');
    const total = metric(text, 'nodejs_heap_size_total_bytes');
    const malloc = metric(text, 'edgemesh_process_malloc_bytes', '{state="in_use"}');
    row.heapUsedMiB = used === null ? null : used / MiB;
    row.heapCommittedMiB = total === null ? null : total / MiB;
    row.mallocMiB = malloc === null ? null : malloc / MiB;
  } catch (e) {
    row.why = (e as Error).message.split('\n')[0]!.slice(0, 300);
    log(`footprint ${source} ${n}: ${row.why}`);
  } finally {
    await agent?.stop().catch(() => undefined);
    track(undefined);
    if (api && api.exitCode === null) api.kill('SIGTERM');
    dir?.destroy();
  }
  return row;
}

/**
 * One namespace per size (kube-proxy's table for the same services loaded first), both sources
 * in turn; every namespace is destroyed before the next size.
 */
export async function measureFootprint(
  tmp: string,
  sizes: number[],
  settleMs: number,
  track: (a: AgentProc | undefined) => void,
  sources: readonly FootprintSource[] = ['services-dir', 'kubernetes-api'],
): Promise<FootprintResult> {
  const rows: FootprintRow[] = [];
  for (const n of sizes) {
    const ns = await Netns.create(`fp${n}`);
    try {
      for (const chunk of n > 0 ? kubeProxyChunks(n) : []) await ns.run('iptables-legacy-restore', ['-w', '--noflush'], { input: chunk, timeoutMs: 120_000 });
      for (const source of sources) {
        log(`footprint: ${source}, ${n} services, ${settleMs / 1000} s after the first sync`);
        rows.push(await measureOne(ns, tmp, source, n, settleMs, track));
      }
    } finally {
      await ns.destroy();
    }
  }
  return { settleMs, nodeFlags: NODE_FLAGS.join(' '), rows };
}
