// Load client for the proxy, run inside a namespace. Prints JSON lines; reads commands on stdin.
//   node hold.mjs '{"host","port","idle":N,"short":M,"concurrency":C,"sample":S,"timeoutMs":T}'
// 1. opens `idle` connections (at most 200 dialing at once) and sends nothing (slowloris);
//    after 1 s prints {"phase":"held","open":n,"refused":r} — refused: reset or closed by the
//    proxy (over its connection limit);
// 2. on "flow\n": sends one line on `sample` of the open connections and waits for its echo:
//    {"phase":"flowed","echoed":n};
// 3. on "close\n": closes them all, then runs `short` connect-100B-echo-close connections at
//    `concurrency`: {"phase":"short","ok":n,"failed":f,"perSec":r}; exits.
// Every phase is bounded by timeoutMs.
import net from 'node:net';
import { createInterface } from 'node:readline';

const o = JSON.parse(process.argv[2]);
const limit = setTimeout(() => {
  process.stdout.write(JSON.stringify({ phase: 'timeout' }) + '\n');
  process.exit(2);
}, o.timeoutMs ?? 120000);
const out = (x) => process.stdout.write(JSON.stringify(x) + '\n');

const open = new Set();
let refused = 0;
function dial() {
  return new Promise((resolve) => {
    const s = net.connect({ host: o.host, port: o.port });
    let settled = false;
    const fail = () => {
      if (open.delete(s) || !settled) refused++;
      settled = true;
      resolve();
    };
    s.on('connect', () => {
      open.add(s);
      settled = true;
      resolve();
    });
    s.on('error', fail);
    s.on('close', fail);
  });
}

let next = 0;
await Promise.all(Array.from({ length: 200 }, async () => {
  while (next < o.idle) {
    next++;
    await dial();
  }
}));
await new Promise((r) => setTimeout(r, 1000));
out({ phase: 'held', open: open.size, refused });

const lines = createInterface({ input: process.stdin });
for await (const cmd of lines) {
  if (cmd === 'flow') {
    const some = [...open].slice(0, o.sample ?? 100);
    const echoed = await Promise.all(some.map((s, i) => new Promise((resolve) => {
      const msg = `ping ${i}\n`;
      let got = '';
      const t = setTimeout(() => resolve(false), 10000);
      s.on('data', (d) => {
        got += d;
        if (got === msg) { clearTimeout(t); resolve(true); }
      });
      s.write(msg);
    })));
    out({ phase: 'flowed', echoed: echoed.filter(Boolean).length, asked: some.length });
  } else if (cmd === 'close') {
    for (const s of open) s.destroy();
    open.clear();
    let ok = 0;
    let failed = 0;
    let n = 0;
    const t0 = Date.now();
    const payload = Buffer.alloc(100, 120);
    await Promise.all(Array.from({ length: o.concurrency ?? 16 }, async () => {
      while (n < o.short) {
        n++;
        const good = await new Promise((resolve) => {
          const s = net.connect({ host: o.host, port: o.port });
          let got = 0;
          s.setTimeout(5000, () => { s.destroy(); resolve(false); });
          s.on('connect', () => s.write(payload));
          s.on('data', (d) => { got += d.length; if (got >= 100) { s.end(); resolve(true); } });
          s.on('error', () => resolve(false));
        });
        good ? ok++ : failed++;
      }
    }));
    out({ phase: 'short', ok, failed, perSec: Math.round(ok / ((Date.now() - t0) / 1000)) });
    clearTimeout(limit);
    process.exit(0);
  }
}
