// Traffic generator for the proxy tests, run inside a namespace. Prints one JSON line.
//   node client.mjs echo  '{"host","port","count","concurrency","size","hold"}'
//   node client.mjs bulk  '{"host","port","bytes","reply"}'     (half-closes after sending)
//   node client.mjs probe '{"host","port"}'
//   node client.mjs banner '{"host","port","count"}'   (the server speaks first; we only listen)
import net from 'node:net';
import { createHash } from 'node:crypto';
import { generator, CHUNK, random } from './data.mjs';

const [mode, json] = process.argv.slice(2);
const o = JSON.parse(json);
const deadline = setTimeout(() => {
  process.stdout.write(JSON.stringify({ error: 'client timeout' }) + '\n');
  process.exit(2);
}, o.timeoutMs ?? 60000);

function connect() {
  return net.connect({ host: o.host, port: o.port, allowHalfOpen: true });
}

// One echo exchange; with `gate`, waits for it before closing (all connections open at once).
function echoOnce(gate, onEchoed) {
  return new Promise((resolve) => {
    const payload = random(o.size ?? 100);
    const sock = connect();
    const got = [];
    let n = 0;
    let done = false;
    const finish = (err) => {
      if (done) return;
      done = true;
      resolve(err ?? null);
    };
    sock.setTimeout(20000, () => { sock.destroy(); finish('timeout'); });
    sock.on('connect', () => sock.write(payload));
    sock.on('data', async (d) => {
      got.push(d);
      n += d.length;
      if (n >= payload.length) {
        if (!Buffer.concat(got).equals(payload)) { sock.destroy(); finish('mismatch'); return; }
        onEchoed?.();
        if (gate) await gate;
        sock.end();
      }
    });
    sock.on('end', () => (n >= payload.length ? null : finish(`eof after ${n} bytes`)));
    sock.on('close', () => finish(n >= payload.length ? null : `closed after ${n} bytes`));
    sock.on('error', (e) => finish(e.code ?? e.message));
  });
}

async function echo() {
  const errors = [];
  let ok = 0;
  if (o.hold) {
    let release;
    const gate = new Promise((r) => (release = r));
    let echoed = 0;
    let failed = 0;
    const all = [];
    // Every connection holds after its echo until each one has either echoed or failed.
    const settle = () => (echoed + failed >= o.count ? release() : undefined);
    for (let i = 0; i < o.count; i++) {
      const p = echoOnce(gate, () => {
        echoed++;
        settle();
      });
      p.then((r) => {
        if (r !== null) {
          failed++;
          settle();
        }
      });
      all.push(p);
    }
    const guard = setTimeout(() => release(), 30000);
    const simultaneous = await gate.then(() => echoed);
    clearTimeout(guard);
    for (const r of await Promise.all(all)) r === null ? ok++ : errors.push(r);
    return { ok, failed: errors.length, errors: errors.slice(0, 5), simultaneous };
  }
  let next = 0;
  const lat = [];
  const t0 = process.hrtime.bigint();
  const worker = async () => {
    while (next < o.count) {
      next++;
      const t = process.hrtime.bigint();
      const r = await echoOnce(null);
      lat.push(Number(process.hrtime.bigint() - t) / 1e6);
      r === null ? ok++ : errors.push(r);
    }
  };
  await Promise.all(Array.from({ length: o.concurrency ?? 1 }, worker));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  lat.sort((a, b) => a - b);
  const pct = (q) => lat[Math.min(lat.length - 1, Math.floor(q * lat.length))] ?? 0;
  return { ok, failed: errors.length, errors: errors.slice(0, 5), perSec: Math.round(o.count / secs), p50ms: pct(0.5), p99ms: pct(0.99) };
}

async function bulk() {
  const sock = connect();
  await new Promise((r, j) => { sock.once('connect', r); sock.once('error', j); });
  const gen = generator('upload');
  const sent = createHash('sha256');
  const replyHash = createHash('sha256');
  let head = '';
  let headDone = false;
  let replyBytes = 0;
  let serverLine = '';
  const closed = new Promise((resolve, reject) => {
    sock.on('data', (d) => {
      if (!headDone) {
        head += d.toString('latin1');
        const nl = head.indexOf('\n');
        if (nl < 0) return;
        headDone = true;
        serverLine = head.slice(0, nl);
        d = Buffer.from(head.slice(nl + 1), 'latin1');
      }
      replyHash.update(d);
      replyBytes += d.length;
    });
    sock.on('end', resolve);
    sock.on('error', reject);
  });
  sock.write(`SEND ${o.reply ?? 0}\n`);
  for (let i = 0, left = o.bytes; left > 0; i++, left -= CHUNK) {
    const c = gen(i, Math.min(CHUNK, left));
    sent.update(c);
    if (!sock.write(c)) await new Promise((r) => sock.once('drain', r));
  }
  sock.end(); // half-close: the reply must still arrive in full
  await closed;
  const [serverHash, serverCount] = serverLine.split(' ');
  const expReply = createHash('sha256');
  const rg = generator('reply');
  for (let i = 0, left = o.reply ?? 0; left > 0; i++, left -= CHUNK) expReply.update(rg(i, Math.min(CHUNK, left)));
  return {
    sentHash: sent.digest('hex'),
    serverHash,
    serverCount: Number(serverCount),
    replyBytes,
    replyOk: replyHash.digest('hex') === expReply.digest('hex'),
  };
}

async function probe() {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const sock = connect();
    let connected = false;
    let data = 0;
    const done = (how, code) => resolve({ connected, data, how, code, ms: Date.now() - t0 });
    sock.setTimeout(3000, () => { sock.destroy(); done('timeout'); });
    sock.on('connect', () => { connected = true; sock.write('x'); });
    sock.on('data', (d) => (data += d.length));
    sock.on('end', () => done('end'));
    sock.on('error', (e) => done('error', e.code));
  });
}

async function banner() {
  let ok = 0;
  const errors = [];
  for (let i = 0; i < o.count; i++) {
    const r = await new Promise((resolve) => {
      const sock = connect();
      let got = '';
      sock.setTimeout(5000, () => { sock.destroy(); resolve('timeout'); });
      sock.on('data', (d) => {
        got += d.toString();
        if (got.includes('\n')) { sock.end(); resolve(got === 'hello\n' ? null : `got ${JSON.stringify(got)}`); }
      });
      sock.on('error', (e) => resolve(e.code ?? e.message));
      sock.on('close', () => resolve(`closed after ${JSON.stringify(got)}`));
    });
    r === null ? ok++ : errors.push(r);
  }
  return { ok, failed: errors.length, errors: errors.slice(0, 5) };
}

const run = { echo, bulk, probe, banner }[mode];
run().then((r) => {
  clearTimeout(deadline);
  process.stdout.write(JSON.stringify(r) + '\n');
  process.exit(0);
}, (e) => {
  process.stdout.write(JSON.stringify({ error: e.message, code: e.code }) + '\n');
  process.exit(1);
});
