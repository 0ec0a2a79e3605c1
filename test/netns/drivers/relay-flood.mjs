// A flood of unauthenticated connections to a relay's tunnel port, run inside a namespace:
// `count` TCP connections opened at once; every `every`-th one (default 2; 1: all) sends `halfHex`
// (e.g. half a join header), the rest send nothing. All are held until `holdMs`
// after the start, then closed. Bounded in count and time. Prints one JSON line:
//   {"opened":N,"connectErrors":N,"endedByPeer":N,"endedEarlyMs":[first, last],"openAtHoldEnd":N,"errors":{code:n}}
import net from 'node:net';

const o = JSON.parse(process.argv[2]);
const count = Math.min(o.count, 5000);
const half = Buffer.from(o.halfHex ?? '', 'hex');
const every = Math.max(1, o.every ?? 2);
const t0 = Date.now();
const socks = [];
let opened = 0;
let connectErrors = 0;
let endedByPeer = 0;
let firstEnd = -1;
let lastEnd = -1;
let closing = false;
const errors = {};
const guard = setTimeout(() => { process.stdout.write(JSON.stringify({ error: 'flood timeout' }) + '\n'); process.exit(2); }, (o.holdMs ?? 6000) + 15000);

const i = o.connect.lastIndexOf(':');
const host = o.connect.slice(0, i);
const port = Number(o.connect.slice(i + 1));
for (let k = 0; k < count; k++) {
  const s = net.connect({ host, port });
  let connected = false;
  let ended = false;
  const peerEnd = () => {
    if (ended || closing) return;
    ended = true;
    endedByPeer++;
    const ms = Date.now() - t0;
    if (firstEnd < 0) firstEnd = ms;
    lastEnd = ms;
  };
  s.on('connect', () => {
    connected = true;
    opened++;
    if (half.length && k % every === every - 1) s.write(half);
  });
  s.on('data', () => {});
  s.on('end', peerEnd);
  s.on('error', (e) => {
    errors[e.code ?? e.message] = (errors[e.code ?? e.message] ?? 0) + 1;
    if (!connected) connectErrors++;
    else peerEnd();
  });
  s.on('close', () => (connected ? peerEnd() : undefined));
  socks.push(s);
}
setTimeout(() => {
  closing = true;
  const openAtHoldEnd = socks.filter((s) => !s.destroyed && s.readyState === 'open').length;
  for (const s of socks) s.destroy();
  clearTimeout(guard);
  process.stdout.write(JSON.stringify({ opened, connectErrors, endedByPeer, endedEarlyMs: [firstEnd, lastEnd], openAtHoldEnd, errors, ms: Date.now() - t0 }) + '\n');
  setTimeout(() => process.exit(0), 200);
}, o.holdMs ?? 6000);
