// Runs the TCP proxy in the current network namespace for the quick bench:
//   node bench/proxy-run.mjs '{"address","port","mode","routes":[{ip,port,endpoints:[{ip,port}]}]}'
// Prints "ready"; closes on SIGTERM and prints its stats.
import { TcpProxy } from '../dist/src/proxy/proxy.js';

const o = JSON.parse(process.argv[2]);
const p = new TcpProxy({ address: o.address, port: o.port, mode: o.mode ?? 'splice', threads: o.threads, events: o.events ?? 'all' });
let finished = 0;
p.on('connection', () => finished++);
p.start();
p.updateRoutes({
  routes: o.routes.map((r) => ({ family: 4, protocol: 'TCP', service: 'bench/svc', portName: '', endpointSet: 'ready', affinity: { clientIP: false, timeoutSeconds: 0 }, ...r })),
});
process.stdout.write('ready\n');
process.on('SIGTERM', async () => {
  await p.close(0);
  process.stderr.write(JSON.stringify({ finished, ...p.stats() }) + '\n');
  process.exit(0);
});
