// `edgemesh-agent demo`: the whole hybrid NAT in throwaway network namespaces.
//
//   pod ns (10.244.0.2) --veth-- node ns (agent + kube-proxy rules) --veth-- backend ns (10.244.1.x)
//
// It loads kube-proxy's real rule dump (test/fixtures/kube-proxy when present) plus kube-proxy-shaped
// rules for the demo's services, writes the seed's services into a watched directory, runs the
// agent in the node namespace, prints the nat table as the seed shows it, sends traffic to a
// proxied and an ignored service, shows which path each took (counters), and removes everything.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AgentConfig } from '../config.js';
import { linkNetns, Netns } from './netns.js';
import { kubeProxyRestore, type KubeProxyService } from '../testing/kube-proxy-rules.js';

const here = dirname(fileURLToPath(import.meta.url));
const CLI = join(here, 'cli.js');

/** Backends answering "hello from <name>" on each port, one line per connection. */
const BACKEND_SCRIPT = `
const net = require('node:net');
for (const spec of process.argv.slice(1)) {
  const [addr, port, name] = spec.split(',');
  net.createServer((s) => { s.on('error', () => {}); s.end('hello from ' + name + ' (' + addr + ':' + port + ')\\n'); }).listen(Number(port), addr);
}
setTimeout(() => process.exit(0), 10 * 60 * 1000).unref();
`;

/** One TCP connection; resolves with the first line the server sends (or the error). */
const CLIENT_SCRIPT = `
const net = require('node:net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port), timeout: 3000 });
let buf = '';
s.on('data', (d) => { buf += d; });
s.on('end', () => { process.stdout.write(buf.trim()); process.exit(0); });
s.on('timeout', () => { process.stdout.write('timeout'); process.exit(1); });
s.on('error', (e) => { process.stdout.write('error: ' + e.code); process.exit(1); });
`;

/** Prints the agent's proxy and sync counters. */
const METRICS_SCRIPT = `
fetch('http://127.0.0.1:10251/metrics').then((r) => r.text()).then((t) => {
  const keep = /^edgemesh_(proxy_connections_(total|relayed_total|active)|proxy_bytes_total|proxy_connections_refused_total|syncs_total|services|rules)[{ ]/;
  process.stdout.write(t.split('\\n').filter((l) => keep.test(l) && !/ 0$/.test(l)).join('\\n') + '\\n');
}, (e) => { process.stderr.write(String(e)); process.exit(1); });
`;

const SERVICES: { file: string; yaml: string }[] = [
  {
    file: 'kubernetes.yaml',
    yaml: `apiVersion: v1
kind: Service
metadata: { name: kubernetes, namespace: default, labels: { component: apiserver, provider: kubernetes } }
spec: { clusterIP: 10.10.0.1, ports: [{ name: https, port: 443, targetPort: 6443 }] }
`,
  },
  {
    file: 'coredns.yaml',
    yaml: `apiVersion: v1
kind: Service
metadata: { name: coredns, namespace: kube-system, labels: { k8s-app: kube-dns } }
spec: { clusterIP: 10.10.0.3, ports: [{ name: dns, port: 53, protocol: UDP }, { name: dns-tcp, port: 53, protocol: TCP }] }
`,
  },
  {
    file: 'grafana.yaml',
    yaml: `apiVersion: v1
kind: Service
metadata: { name: grafana, namespace: monitoring, labels: { noproxy: edgemesh } }
spec: { clusterIP: 10.10.250.210, ports: [{ name: http, port: 3000 }] }
`,
  },
  {
    file: 'node-exporter.yaml',
    yaml: `apiVersion: v1
kind: Service
metadata: { name: node-exporter, namespace: monitoring, labels: { noproxy: edgemesh } }
spec: { clusterIP: None, ports: [{ name: https, port: 9100, targetPort: https }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: node-exporter-x1, namespace: monitoring, labels: { kubernetes.io/service-name: node-exporter } }
addressType: IPv4
ports: [{ name: https, port: 9100, protocol: TCP }]
endpoints:
- addresses: [192.168.132.38]
- addresses: [192.168.132.37]
`,
  },
  {
    file: 'web.yaml',
    yaml: `apiVersion: v1
kind: Service
metadata: { name: web, namespace: shop }
spec: { clusterIP: 10.10.0.20, ports: [{ name: http, port: 80, targetPort: http }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: web-a1, namespace: shop, labels: { kubernetes.io/service-name: web } }
addressType: IPv4
ports: [{ name: http, port: 8080, protocol: TCP }]
endpoints:
- addresses: [10.244.1.10]
- addresses: [10.244.1.11]
`,
  },
  {
    file: 'api.yaml',
    yaml: `apiVersion: v1
kind: Service
metadata: { name: api, namespace: shop }
spec: { clusterIP: 10.10.0.21, ports: [{ port: 8443, targetPort: 9443 }] }
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: { name: api-b2, namespace: shop, labels: { kubernetes.io/service-name: api } }
addressType: IPv4
ports: [{ port: 9443, protocol: TCP }]
endpoints:
- addresses: [10.244.1.11]
`,
  },
];

/** kube-proxy's rules for the same services (what it would program on this node). */
const KUBE_PROXY_SERVICES: KubeProxyService[] = [
  { namespace: 'kube-system', name: 'coredns', portName: 'dns-tcp', clusterIP: '10.10.0.3', port: 53, endpoints: [{ ip: '10.244.1.10', port: 5353 }] },
  { namespace: 'monitoring', name: 'grafana', portName: 'http', clusterIP: '10.10.250.210', port: 3000, endpoints: [{ ip: '10.244.1.11', port: 3000 }] },
  { namespace: 'shop', name: 'web', portName: 'http', clusterIP: '10.10.0.20', port: 80, endpoints: [{ ip: '10.244.1.10', port: 8080 }, { ip: '10.244.1.11', port: 8080 }] },
  { namespace: 'shop', name: 'api', clusterIP: '10.10.0.21', port: 8443, endpoints: [{ ip: '10.244.1.11', port: 9443 }] },
];

function fixtureDir(): string | undefined {
  const candidates = [process.env.EDGEMESH_FIXTURES, resolve(here, '..', '..', 'test', 'fixtures', 'kube-proxy')];
  return candidates.find((c): c is string => !!c && existsSync(join(c, 'kube-proxy-iptables-restore-TestOverallIPTablesRules.txt')));
}

type Say = (s: string) => void;

interface Flavour {
  agentBackend: string;
  restore: string;
  list: (chain: string) => string[];
}

function flavourFor(backend: AgentConfig['backend']): Flavour {
  switch (backend) {
    case 'iptables-nft':
      return { agentBackend: 'iptables-nft', restore: 'iptables-nft-restore', list: (c) => ['iptables-nft', '-t', 'nat', '-nvL', c, '--line-numbers'] };
    case 'nftables':
      return { agentBackend: 'nftables', restore: 'iptables-nft-restore', list: () => ['nft', 'list', 'table', 'ip', 'edgemesh'] };
    default:
      // auto: kube-proxy is loaded with iptables-legacy, so detection picks the legacy backend.
      return { agentBackend: backend, restore: 'iptables-legacy-restore', list: (c) => ['iptables-legacy', '-t', 'nat', '-nvL', c, '--line-numbers'] };
  }
}

export async function runDemo(config: AgentConfig, say: Say): Promise<number> {
  if (process.getuid?.() !== 0) {
    process.stderr.write('edgemesh-agent: demo needs root (it creates network namespaces)\n');
    return 2;
  }
  const flavour = flavourFor(config.backend);
  const spaces: Netns[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'edgemesh-demo-'));
  const step = (s: string) => say(`\n== ${s}\n`);
  let agentPid: number | undefined;
  try {
    step('namespaces: pod -> node (agent, kube-proxy rules) -> backends');
    const node = await Netns.create('demonode');
    const pod = await Netns.create('demopod');
    const backend = await Netns.create('demobe');
    spaces.push(node, pod, backend);
    await linkNetns(node, '10.244.0.1/24', pod, '10.244.0.2/24');
    const { bIf } = await linkNetns(node, '10.244.1.1/24', backend, '10.244.1.10/24');
    await backend.run('ip', ['addr', 'add', '10.244.1.11/24', 'dev', bIf]);
    await pod.run('ip', ['route', 'add', 'default', 'via', '10.244.0.1']);
    await backend.run('ip', ['route', 'add', 'default', 'via', '10.244.1.1']);
    await node.run('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    say(`node ${node.name}, pod ${pod.name}, backends ${backend.name}\n`);

    backend.spawn(process.execPath, ['-e', BACKEND_SCRIPT, '10.244.1.10,8080,web-1', '10.244.1.11,8080,web-2', '10.244.1.11,9443,api', '10.244.1.10,5353,coredns', '10.244.1.11,3000,grafana'], { stdio: 'ignore' });

    step(`kube-proxy (iptables mode) programs the node: ${flavour.restore}`);
    await node.sh('nfacct add ct_state_invalid_dropped_pkts; nfacct add localhost_nps_accepted_pkts', { allowFail: true });
    const fixtures = fixtureDir();
    if (fixtures) {
      const strip = (t: string) => t.split('\n').filter((l) => !l.startsWith('#')).join('\n');
      await node.run(flavour.restore, ['--noflush', '-w'], { input: strip(readFileSync(join(fixtures, 'kube-proxy-iptables-restore-TestOverallIPTablesRules.txt'), 'utf8')) });
      await node.run(flavour.restore, ['--noflush', '-w'], { input: kubeProxyRestore(KUBE_PROXY_SERVICES) });
      await node.run(flavour.restore, ['--noflush', '-w'], { input: strip(readFileSync(join(fixtures, 'kube-proxy-iptables-jump-rules.txt'), 'utf8')) });
      say(`loaded kube-proxy's rule dump from ${fixtures} and rules for ${KUBE_PROXY_SERVICES.length} demo services\n`);
    } else {
      await node.run(flavour.restore, ['--noflush', '-w'], { input: kubeProxyRestore(KUBE_PROXY_SERVICES, { standalone: true }) });
      await node.run(flavour.restore, ['--noflush', '-w'], {
        input: '*nat\n-I PREROUTING 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\n-I OUTPUT 1 -m comment --comment "kubernetes service portals" -j KUBE-SERVICES\nCOMMIT\n',
      });
      say('kube-proxy fixtures not found: loaded kube-proxy-shaped rules for the demo services only\n');
    }

    step('the services (a watched directory of manifests)');
    for (const s of SERVICES) writeFileSync(join(dir, s.file), s.yaml);
    say('default/kubernetes 10.10.0.1, kube-system/coredns 10.10.0.3 (k8s-app=kube-dns): ignored by default\n');
    say('monitoring/grafana 10.10.250.210 (noproxy=edgemesh), monitoring/node-exporter headless (noproxy=edgemesh): ignored\n');
    say('shop/web 10.10.0.20:80, shop/api 10.10.0.21:8443: proxied by edgemesh\n');

    step('edgemesh-agent run (in the node namespace)');
    const agent = node.spawn(process.execPath, [CLI, 'run', '--backend', flavour.agentBackend, '--service-cidr', '10.10.0.0/16', '--services-dir', dir, '--log-level', 'info'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    agentPid = agent.pid;
    let agentLog = '';
    agent.stdout?.on('data', (d: Buffer) => (agentLog += d.toString()));
    agent.stderr?.on('data', (d: Buffer) => (agentLog += d.toString()));
    const deadline = Date.now() + 15_000;
    for (;;) {
      if (/"msg":"sync \(/.test(agentLog) && /proxy listening|proxy started/.test(agentLog)) break;
      if (agent.exitCode !== null) throw new Error(`the agent exited with ${agent.exitCode}: ${agentLog.trim().split('\n').slice(-3).join(' | ')}`);
      if (Date.now() > deadline) throw new Error(`the agent did not sync within 15 s: ${agentLog.trim().split('\n').slice(-3).join(' | ')}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const line of agentLog.trim().split('\n')) {
      try {
        say(`agent: ${(JSON.parse(line) as { msg: string }).msg}\n`);
      } catch {
        say(`agent: ${line}\n`);
      }
    }

    step('traffic from the pod');
    const call = async (what: string, host: string, port: number) => {
      const r = await pod.run(process.execPath, ['-e', CLIENT_SCRIPT, host, String(port)], { allowFail: true });
      say(`${what.padEnd(44)} ${host}:${port} -> ${r.stdout || r.stderr.trim()}\n`);
      return r.code === 0;
    };
    let ok = true;
    for (let i = 0; i < 2; i++) ok = (await call('shop/web (proxied by edgemesh)', '10.10.0.20', 80)) && ok;
    ok = (await call('shop/api (proxied by edgemesh)', '10.10.0.21', 8443)) && ok;
    ok = (await call('kube-system/coredns (ignored: kube-proxy DNAT)', '10.10.0.3', 53)) && ok;
    ok = (await call('monitoring/grafana (noproxy: kube-proxy DNAT)', '10.10.250.210', 3000)) && ok;

    step('the nat table, as the seed shows it (counters tell which path each connection took)');
    if (flavour.agentBackend === 'nftables') {
      say((await node.run(flavour.list('')[0]!, flavour.list('').slice(1))).stdout);
      say((await node.run('iptables-nft', ['-t', 'nat', '-nvL', 'PREROUTING', '--line-numbers'])).stdout);
    } else {
      for (const chain of ['PREROUTING', 'OUTPUT', 'EDGE-MESH', 'EDGE-MESH-TCP']) {
        const [cmd, ...args] = flavour.list(chain);
        say((await node.run(cmd!, args)).stdout + '\n');
      }
    }
    say('EDGE-MESH RETURN counters rose for coredns and grafana: kube-proxy DNATed them.\n');
    say('EDGE-MESH-TCP counted the web/api connections: they went to the edgemesh proxy.\n');

    step("the agent's own counters (http://127.0.0.1:10251/metrics in the node namespace)");
    const metrics = await node.run(process.execPath, ['-e', METRICS_SCRIPT], { allowFail: true });
    say(metrics.stdout || `metrics not available: ${metrics.stderr.trim()}\n`);

    step('SIGTERM: the agent removes its rules and interface');
    agent.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => (agent.exitCode !== null ? r(agent.exitCode) : agent.on('exit', (c) => r(c))));
    agentPid = undefined;
    const after = (await node.sh(flavour.agentBackend === 'nftables' ? 'nft list tables' : `${flavour.restore.replace('-restore', '-save')} -t nat`)).stdout;
    const links = (await node.run('ip', ['-o', 'link'])).stdout;
    say(`agent exited ${code}; EDGE-MESH left in the table: ${/EDGE-MESH|edgemesh/.test(after) ? 'yes (unexpected)' : 'no'}; edgemesh0 left: ${links.includes('edgemesh0') ? 'yes (unexpected)' : 'no'}\n`);
    return ok && code === 0 ? 0 : 1;
  } finally {
    if (agentPid !== undefined) {
      try {
        process.kill(agentPid, 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    for (const ns of spaces.reverse()) await ns.destroy();
    rmSync(dir, { recursive: true, force: true });
    say('\n== cleaned up: namespaces deleted, nothing left behind\n');
  }
}
