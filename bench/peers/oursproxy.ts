// Our proxy (TcpProxy, src/proxy) in its own process for the bench, so that its CPU is its own:
//   node dist/bench/peers/oursproxy.js '{"address","port","routes":[{ip,port,endpoints:[{ip,port}]}]}'
// Prints "ready"; closes on SIGTERM. Loaded dynamically: the proxy may not be in this tree yet
// (the bench then reports "not measured").
interface Route {
  ip: string;
  port: number;
  endpoints: { ip: string; port: number }[];
}
interface ProxyLike {
  start(): unknown;
  updateRoutes(t: { routes: unknown[] }): void;
  close(ms: number): Promise<unknown>;
  on(ev: string, fn: (...a: unknown[]) => void): unknown;
}

const o = JSON.parse(process.argv[2] ?? '{}') as { address: string; port: number; mode?: string; threads?: number; events?: string; routes: Route[] };
const url = new URL('../../src/proxy/proxy.js', import.meta.url).href;
const mod = (await import(url)) as { TcpProxy: new (opts: Record<string, unknown>) => ProxyLike };
// events 'failures' by default: what the agent runs (src/agent.ts), so the bench measures the
// product; a listener keeps the events that are sent flowing as in the agent.
const p = new mod.TcpProxy({ address: o.address, port: o.port, mode: o.mode ?? 'splice', events: o.events ?? 'failures', ...(o.threads ? { threads: o.threads } : {}) });
p.on('connection', () => undefined);
p.on('error', (e) => process.stderr.write(`proxy error: ${String((e as Error)?.message ?? e)}\n`));
await p.start();
p.updateRoutes({
  routes: o.routes.map((r) => ({ family: 4, protocol: 'TCP', service: 'bench/svc', portName: '', endpointSet: 'ready', affinity: { clientIP: false, timeoutSeconds: 0 }, ...r })),
});
process.stdout.write('ready\n');
process.on('SIGTERM', () => {
  void p.close(0).finally(() => process.exit(0));
});
