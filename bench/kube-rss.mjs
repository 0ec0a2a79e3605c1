// Footprint of the Kubernetes source: a real agent (`run`, iptables-legacy) in a throwaway
// namespace, fed N Services and their EndpointSlices by the in-test API server on
// 127.0.0.1:10550 in that namespace; VmRSS 20 s after the first completed sync, and VmHWM (peak).
//   node bench/kube-rss.mjs [CLI=dist/src/cli.js] [N=1000]
// The API server comes from this checkout's dist/ (run `npx tsc -p tsconfig.json` first); the CLI
// may be another checkout's, to compare builds.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const cli = resolve(process.argv[2] ?? join(here, '..', 'dist', 'src', 'cli.js'));
const n = Number(process.argv[3] ?? 1000);
const ns = `em-krss-${process.pid}`;
const ip = (i) => `10.10.${(i >> 8) & 255}.${(i & 255) + 1}`;
const services = [];
const endpointslices = [];
for (let i = 0; i < n; i++) {
  const name = `svc-${i}`;
  const namespace = `ns-${i % 20}`;
  services.push({ metadata: { name, namespace, labels: { app: name } }, spec: { clusterIP: ip(i), ports: [{ name: 'http', port: 80, targetPort: 8080 }] } });
  endpointslices.push({
    metadata: { name: `${name}-abcde`, namespace, labels: { 'kubernetes.io/service-name': name } },
    addressType: 'IPv4',
    endpoints: [0, 1].map((k) => ({ addresses: [`10.244.${(i >> 7) & 255}.${((i & 127) << 1) + k}`], conditions: { ready: true }, nodeName: `node-${k}` })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  });
}
const status = (pid) => Object.fromEntries(readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter((l) => /^Vm(RSS|HWM):/.test(l)).map((l) => [l.split(':')[0], Math.round(Number(l.split(/\s+/)[1]) / 1024)]));
const children = [];
const tmp = mkdtempSync(join(tmpdir(), 'kube-rss-'));
writeFileSync(join(tmp, 'spec.json'), JSON.stringify({ host: '127.0.0.1', port: 10550, objects: { services, endpointslices } }));
const done = (code) => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  rmSync(tmp, { recursive: true, force: true });
  try {
    execFileSync('ip', ['netns', 'del', ns]);
  } catch {
    // already gone
  }
  process.exit(code);
};
const deadline = setTimeout(() => {
  console.error('timed out');
  done(1);
}, 120_000);
try {
  execFileSync('ip', ['netns', 'add', ns]);
  execFileSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
  const api = spawn('ip', ['netns', 'exec', ns, process.execPath, join(here, '..', 'test', 'netns', 'drivers', 'fake-apiserver.mjs'), `@${join(tmp, 'spec.json')}`], { stdio: ['pipe', 'pipe', 'inherit'] });
  children.push(api);
  await new Promise((r) => api.stdout.on('data', (d) => d.toString().includes('ready') && r()));
  const agent = spawn('ip', ['netns', 'exec', ns, process.execPath, cli, 'run', '--backend', 'iptables-legacy', '--api-server', 'http://127.0.0.1:10550', '--service-cidr', '10.10.0.0/16', '--metrics-addr', 'off'], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(agent);
  const t0 = Date.now();
  let buf = '';
  await new Promise((r) => agent.stdout.on('data', (d) => {
    buf += d.toString();
    if (/"msg":"sync \(/.test(buf)) r();
  }));
  const syncedMs = Date.now() - t0;
  await new Promise((r) => setTimeout(r, 20_000));
  const s = status(agent.pid);
  console.log(JSON.stringify({ cli, services: n, firstSyncMs: syncedMs, rssMiB20s: s.VmRSS, peakMiB: s.VmHWM }));
  clearTimeout(deadline);
  done(0);
} catch (e) {
  console.error(e);
  done(1);
}
