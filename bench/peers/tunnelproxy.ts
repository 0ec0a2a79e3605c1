// Our proxy (TcpProxy, src/proxy) as one node's agent data plane for the tunnel bench, in its own
// process so that its CPU is its own:
//   node dist/bench/peers/tunnelproxy.js '<json>'
//   json: { address, port, tunnelAddress?, tunnelPort?, creds: { ca, cert, key } (file paths),
//           routes: [{ ip, port, service, endpoints: [{ ip, port, path, node?, tunnel? }] }],
//           serve: [{ service, port, endpoints: [{ ip, port }] }],
//           relays?: [{ address, port }] (register with these relays: setRelays) }
// Prints "ready" with the listener, the tunnel listener and the kTLS state as JSON; then answers
// every "stats" line on stdin with one JSON line (stats(), ktls()); closes on SIGTERM or stdin end.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { EndpointPath } from '../../src/intent/routes.js';
import { TcpProxy } from '../../src/proxy/proxy.js';

interface Opts {
  address: string;
  port: number;
  tunnelAddress?: string;
  tunnelPort?: number;
  threads?: number;
  creds: { ca: string; cert: string; key: string };
  routes: { ip: string; port: number; service: string; endpoints: { ip: string; port: number; path: EndpointPath; node?: string; tunnel?: { address: string; port: number }; relays?: { address: string; port: number }[] }[] }[];
  relays?: { address: string; port: number }[];
  serve: { service: string; port: number; endpoints: { ip: string; port: number }[] }[];
}

const o = JSON.parse(process.argv[2] ?? '{}') as Opts;
// events 'failures': what the agent runs (src/agent.ts).
const p = new TcpProxy({
  events: 'failures',
  ...(o.tunnelAddress ? { tunnelAddress: o.tunnelAddress, tunnelPort: o.tunnelPort ?? 20006 } : {}),
  ...(o.threads ? { threads: o.threads } : {}),
});
const failures: Record<string, number> = {};
p.on('connection', (ev) => {
  const k = [ev.reason, ev.refusal, ev.tlsFailure, ev.tunnelRefusal, ev.code].filter(Boolean).join('/');
  failures[k] = (failures[k] ?? 0) + 1;
});
p.on('error', (e) => process.stderr.write(`proxy error: ${String(e?.message ?? e)}\n`));
const bound = p.start(o.address, o.port);
p.setTunnelCredentials({ ca: readFileSync(o.creds.ca, 'utf8'), cert: readFileSync(o.creds.cert, 'utf8'), key: readFileSync(o.creds.key, 'utf8') });
p.updateRoutes({
  routes: o.routes.map((r) => ({ family: 4 as const, protocol: 'TCP' as const, portName: '', endpointSet: 'ready' as const, affinity: { clientIP: false, timeoutSeconds: 0 }, ...r })),
});
p.setLocalServe(o.serve);
if (o.relays?.length) p.setRelays(o.relays);
process.stdout.write(`ready ${JSON.stringify({ address: bound, tunnel: p.tunnelAddress() ?? null, ktls: p.ktls() ?? null })}\n`);

let closing = false;
const close = () => {
  if (closing) return;
  closing = true;
  void p.close(0).finally(() => process.exit(0));
};
process.on('SIGTERM', close);
const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (line.trim() === 'stats') process.stdout.write(`stats ${JSON.stringify({ stats: p.stats(), ktls: p.ktls() ?? null, peers: p.peers(), sessions: p.sessions(), registrations: p.registrations(), failures })}\n`);
});
rl.on('close', close);
