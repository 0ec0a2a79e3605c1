// Concurrent connections through a Service, run inside a pod namespace: `count` connections
// opened in batches of `batch` every `gapMs`; each sends `size` random bytes and waits for its
// echo; every connection stays open until all have echoed (or failed), then prints "holding",
// holds `holdMs` more, closes all and prints one JSON line. Bounded by `timeoutMs`.
//   -> {"ok":N,"failed":N,"errors":[...],"simultaneous":N,"openedMs":N,"echoedMs":N,"totalMs":N}
import net from 'node:net';
import { randomBytes } from 'node:crypto';

const o = JSON.parse(process.argv[2]);
const count = Math.min(o.count, 5000);
const t0 = Date.now();
const guard = setTimeout(() => { process.stdout.write(JSON.stringify({ error: 'load timeout', ok, failed, errors: errors.slice(0, 5) }) + '\n'); process.exit(2); }, o.timeoutMs ?? 60000);
let echoed = 0;
let failed = 0;
let ok = 0;
let openedMs = 0;
const errors = [];
const socks = [];
let releaseAll;
const released = new Promise((r) => (releaseAll = r));
const settle = () => {
  if (echoed + failed >= count) releaseAll();
};

function one() {
  const payload = randomBytes(o.size ?? 100);
  const s = net.connect({ host: o.host, port: o.port, allowHalfOpen: true });
  socks.push(s);
  const got = [];
  let n = 0;
  let state = 'open';
  const fail = (why) => {
    if (state !== 'open') return;
    state = 'failed';
    failed++;
    errors.push(why);
    s.destroy();
    settle();
  };
  s.setTimeout(20000, () => fail('timeout'));
  s.on('connect', () => s.write(payload));
  s.on('data', (d) => {
    got.push(d);
    n += d.length;
    if (state === 'open' && n >= payload.length) {
      if (!Buffer.concat(got).subarray(0, payload.length).equals(payload)) return fail('mismatch');
      state = 'echoed';
      s.setTimeout(0);
      echoed++;
      settle();
    }
  });
  s.on('end', () => (state === 'open' ? fail(`eof after ${n} bytes`) : undefined));
  s.on('close', () => (state === 'open' ? fail(`closed after ${n} bytes`) : undefined));
  s.on('error', (e) => fail(e.code ?? e.message));
  return s;
}

const batch = o.batch ?? count;
let started = 0;
await new Promise((resolve) => {
  const tick = () => {
    for (let k = 0; k < batch && started < count; k++, started++) one();
    if (started < count) setTimeout(tick, o.gapMs ?? 0);
    else resolve();
  };
  tick();
});
openedMs = Date.now() - t0;
await released;
const echoedMs = Date.now() - t0;
const simultaneous = socks.filter((s) => !s.destroyed && s.readyState === 'open').length;
process.stdout.write('holding\n');
await new Promise((r) => setTimeout(r, o.holdMs ?? 1000));
let closedCleanly = 0;
await Promise.all(socks.filter((s) => !s.destroyed).map((s) => new Promise((r) => {
  s.on('close', () => { closedCleanly++; r(); });
  s.end();
  setTimeout(() => { s.destroy(); r(); }, 5000);
})));
ok = echoed;
clearTimeout(guard);
process.stdout.write(JSON.stringify({ ok, failed, errors: errors.slice(0, 5), simultaneous, closedCleanly, openedMs, echoedMs, totalMs: Date.now() - t0 }) + '\n');
process.exit(0);
