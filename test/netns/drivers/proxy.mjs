// A TcpProxy in its own process inside a namespace (for tests that need the process to be the
// agent: fd limits, /proc/PID/fd). node proxy.mjs '{"proxy":{TcpProxyOptions},"routes":[ServiceRoute...]}'
// Prints {"ready":true,"pid","fds"}; then answers stdin lines: "stats" -> {"stats","codes","fds"},
// "close" -> closes, prints the final stats and exits.
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { TcpProxy } from '../../../dist/src/proxy/proxy.js';

const o = JSON.parse(process.argv[2]);
const p = new TcpProxy(o.proxy);
const codes = {};
p.on('connection', (e) => {
  const k = `${e.reason}${e.refusal ? '/' + e.refusal : ''}${e.code ? ':' + e.code : ''}`;
  codes[k] = (codes[k] ?? 0) + 1;
});
p.start();
p.updateRoutes({ routes: o.routes });
// Both need a descriptor themselves: -1 while the process is out of them.
const fds = () => {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return -1;
  }
};
// RLIMIT_NOFILE bounds fd numbers: the next fd anyone gets is the lowest free one.
const lowestFree = () => {
  try {
    const fd = openSync('/dev/null', 'r');
    closeSync(fd);
    return fd;
  } catch {
    return -1;
  }
};
const say = (x) => process.stdout.write(JSON.stringify(x) + '\n');
const nofile = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith('Max open files'))?.trim().split(/\s+/).slice(3, 5).map(Number);
say({ ready: true, pid: process.pid, fds: fds(), lowestFree: lowestFree(), nofile });
createInterface({ input: process.stdin }).on('line', async (line) => {
  if (line === 'stats') say({ stats: p.stats(), codes: { ...codes }, fds: fds(), lowestFree: lowestFree() });
  if (line === 'close') {
    await p.close(0);
    say({ stats: p.stats(), codes, fds: fds() });
    process.exit(0);
  }
});
