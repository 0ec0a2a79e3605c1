// Shared helpers of the bench: generated services (kube-proxy tables, manifests, ignore rules),
// timed shell snippets inside a namespace, per-process CPU and RSS from /proc.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Netns } from '../src/dev/netns.js';
import { kubeProxyRestore, type KubeProxyService } from '../src/testing/kube-proxy-rules.js';
import { DNAT_COMMENT, EDGE_MESH_CHAIN, EDGE_MESH_TCP_CHAIN, ROOT_COMMENT, TCP_PROXY_COMMENT, ignoreComment, type DesiredRuleSet, type Rule } from '../src/netfilter/rules.js';

export const SERVICE_CIDR = '10.96.0.0/12';
export const PROXY_ADDR = '169.254.96.16';
export const PROXY_PORT = 40001;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** The i-th service address (0-based) inside 10.96.0.0/12: 10.96.0.1, 10.96.0.2, ... */
export function serviceIp(i: number): string {
  const v = (10 << 24) + (96 << 16) + i + 1;
  return [(v >>> 24) & 255, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
}

export const svcNamespace = (i: number) => `ns${i % 50}`;
export const svcName = (i: number) => `svc-${i}`;

/** Services with 1-4 endpoints (2.5 on average: 10 000 services = 95 000 rules in 35 000 chains, as BASELINES). */
export function kubeServices(from: number, to: number): KubeProxyService[] {
  const out: KubeProxyService[] = [];
  for (let i = from; i < to; i++) {
    out.push({
      namespace: svcNamespace(i),
      name: svcName(i),
      clusterIP: serviceIp(i),
      port: 80,
      endpoints: Array.from({ length: (i % 4) + 1 }, (_, j) => ({ ip: `10.${200 + ((i >> 14) & 15)}.${(i >> 6) & 255}.${((i & 63) << 2) + j}`, port: 8080 })),
    });
  }
  return out;
}

/**
 * kube-proxy's nat table for `count` services, as iptables-restore inputs of 1 000 services each
 * (iptables-nft-restore is quadratic in the chains of one input here: 10 000 services in one go
 * take ~100 s, in chunks ~5 s). KUBE-SERVICES rules are appended, as kube-proxy's own full
 * restore does, and PREROUTING/OUTPUT jump to KUBE-SERVICES.
 */
export function kubeProxyChunks(count: number, chunk = 1000): string[] {
  const out: string[] = [];
  for (let from = 0; from < count; from += chunk) {
    let text = kubeProxyRestore(kubeServices(from, Math.min(count, from + chunk)), { standalone: from === 0 }).replace(/^-I KUBE-SERVICES 1 /gm, '-A KUBE-SERVICES ');
    if (from === 0) {
      text = text.replace(
        /\nCOMMIT\n$/,
        '\n-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\nCOMMIT\n',
      );
    }
    out.push(text);
  }
  return out;
}

export function ignoreRule(i: number): Rule {
  return { dst: `${serviceIp(i)}/32`, comment: ignoreComment(svcNamespace(i), svcName(i)), target: 'RETURN' };
}

/** The desired set for N ignored services, in desired.ts's exact shape. */
export function desiredSet(n: number): DesiredRuleSet {
  const ignores = Array.from({ length: n }, (_, i) => ignoreRule(i));
  const jump: Rule = { comment: ROOT_COMMENT, target: EDGE_MESH_CHAIN };
  return {
    family: 'ipv4',
    chains: [
      { name: EDGE_MESH_TCP_CHAIN, rules: [{ protocol: 'tcp', comment: DNAT_COMMENT, target: 'DNAT', toDestination: { address: PROXY_ADDR, port: PROXY_PORT } }] },
      { name: EDGE_MESH_CHAIN, rules: [...ignores, { dst: SERVICE_CIDR, protocol: 'tcp', comment: TCP_PROXY_COMMENT, target: EDGE_MESH_TCP_CHAIN }] },
    ],
    jumps: [
      { chain: 'PREROUTING', rule: { ...jump } },
      { chain: 'OUTPUT', rule: { ...jump } },
    ],
  };
}

/** The same state as one iptables-restore --noflush input. */
export function restoreInput(n: number): string {
  const lines = ['*nat', `:${EDGE_MESH_TCP_CHAIN} - [0:0]`, `:${EDGE_MESH_CHAIN} - [0:0]`];
  lines.push(`-A ${EDGE_MESH_TCP_CHAIN} -p tcp -m comment --comment "${DNAT_COMMENT}" -j DNAT --to-destination ${PROXY_ADDR}:${PROXY_PORT}`);
  for (let i = 0; i < n; i++) {
    const r = ignoreRule(i);
    lines.push(`-A ${EDGE_MESH_CHAIN} -d ${r.dst} -m comment --comment "${r.comment}" -j RETURN`);
  }
  lines.push(`-A ${EDGE_MESH_CHAIN} -d ${SERVICE_CIDR} -p tcp -m comment --comment "${TCP_PROXY_COMMENT}" -j ${EDGE_MESH_TCP_CHAIN}`);
  lines.push(`-I PREROUTING 1 -m comment --comment "${ROOT_COMMENT}" -j ${EDGE_MESH_CHAIN}`);
  lines.push(`-I OUTPUT 1 -m comment --comment "${ROOT_COMMENT}" -j ${EDGE_MESH_CHAIN}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** The same state as one `nft -f` batch (a rule per address, the nftables backend's layout). */
export function nftInput(n: number): string {
  const lines = ['table ip edgemesh {'];
  lines.push(`  chain ${EDGE_MESH_TCP_CHAIN} {`, `    meta l4proto tcp counter dnat to ${PROXY_ADDR}:${PROXY_PORT} comment "${DNAT_COMMENT}"`, '  }');
  // The nftables backend's layout: the ignored addresses in a set with a counter per element.
  lines.push('  set ignored {', '    type ipv4_addr; counter;');
  if (n > 0) lines.push(`    elements = { ${Array.from({ length: n }, (_, i) => `${serviceIp(i)} comment "${ignoreRule(i).comment}"`).join(',\n      ')} }`);
  lines.push('  }');
  lines.push(`  chain ${EDGE_MESH_CHAIN} {`);
  lines.push(`    ip daddr @ignored counter return comment "ignored services"`);
  lines.push(`    ip daddr ${SERVICE_CIDR} meta l4proto tcp counter jump ${EDGE_MESH_TCP_CHAIN} comment "${TCP_PROXY_COMMENT}"`, '  }');
  for (const [name, hook] of [['prerouting', 'prerouting'], ['output', 'output']]) {
    lines.push(`  chain ${name} {`, `    type nat hook ${hook} priority -101; policy accept;`, `    counter jump ${EDGE_MESH_CHAIN} comment "${ROOT_COMMENT}"`, '  }');
  }
  lines.push('}', '');
  return lines.join('\n');
}

/** The iptables per-rule method (the reference implementation's): `-C` then `-A`/`-I`, one process each. */
export function perRuleScript(bin: string, k: number, stopFile: string): string {
  const I = `${bin} -w -t nat`;
  const q = (s: string) => `"${s}"`;
  const lines = ['echo S'];
  lines.push(`${I} -N ${EDGE_MESH_TCP_CHAIN} 2>/dev/null`, `${I} -N ${EDGE_MESH_CHAIN} 2>/dev/null`);
  const dnat = `${EDGE_MESH_TCP_CHAIN} -p tcp -m comment --comment ${q(DNAT_COMMENT)} -j DNAT --to-destination ${PROXY_ADDR}:${PROXY_PORT}`;
  lines.push(`${I} -C ${dnat} 2>/dev/null || ${I} -A ${dnat}`);
  const cidr = `${EDGE_MESH_CHAIN} -d ${SERVICE_CIDR} -p tcp -m comment --comment ${q(TCP_PROXY_COMMENT)} -j ${EDGE_MESH_TCP_CHAIN}`;
  lines.push(`${I} -C ${cidr} 2>/dev/null || ${I} -A ${cidr}`);
  for (const c of ['PREROUTING', 'OUTPUT']) {
    const j = `-m comment --comment ${q(ROOT_COMMENT)} -j ${EDGE_MESH_CHAIN}`;
    lines.push(`${I} -C ${c} ${j} 2>/dev/null || ${I} -I ${c} 1 ${j}`);
  }
  lines.push('echo B');
  for (let i = 0; i < k; i++) {
    const r = ignoreRule(i);
    const spec = `-d ${r.dst} -m comment --comment ${q(r.comment!)} -j RETURN`;
    // Ignore rules go in front of the CIDR catch-all: insert at 1.
    lines.push(`[ -e ${stopFile} ] && { echo X; exit 0; }`, `${I} -C ${EDGE_MESH_CHAIN} ${spec} 2>/dev/null || ${I} -I ${EDGE_MESH_CHAIN} 1 ${spec}`, 'echo R');
  }
  lines.push('echo E');
  return lines.join('\n') + '\n';
}

export interface MarkTimes {
  /** performance.now() of every marker line, in order. */
  marks: { mark: string; t: number }[];
  code: number;
  stderr: string;
}

/**
 * Runs a shell script in the namespace and timestamps each line it prints (markers like "S",
 * "E"), so that the `ip netns exec` start-up is not part of what is timed. Bounded by timeoutMs.
 */
export function runMarked(ns: Netns, script: string, opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; onMark?: (mark: string, t: number) => void } = {}): Promise<MarkTimes> {
  return new Promise((resolve, reject) => {
    const child = ns.spawn('sh', ['-c', script], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
    const marks: { mark: string; t: number }[] = [];
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      const t = performance.now();
      const mark = line.trim();
      marks.push({ mark, t });
      opts.onMark?.(mark, t);
    });
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString().slice(0, 4000)));
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ marks, code: code ?? (signal ? 128 : 1), stderr });
    });
  });
}

/** Milliseconds between the first "S" and the first "E" marker; throws when the script failed. */
export async function timeScript(ns: Netns, body: string, what: string, opts: { timeoutMs?: number } = {}): Promise<number> {
  const r = await runMarked(ns, `echo S\n${body}\nrc=$?\necho E\nexit $rc\n`, opts);
  const s = r.marks.find((m) => m.mark === 'S');
  const e = r.marks.find((m) => m.mark === 'E');
  if (r.code !== 0 || !s || !e) throw new Error(`${what} failed (exit ${r.code}): ${r.stderr.trim().slice(0, 400)}`);
  return e.t - s.t;
}

const CLK_TCK = 100;

/** utime+stime of a process in seconds (all its threads), or NaN when it is gone. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // Fields after the comm: state(3) ... utime(14) stime(15): indexes 11 and 12 here.
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** Resident set size in MiB, or NaN. */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}
