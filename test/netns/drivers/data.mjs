// Deterministic test data: chunk i is a fixed random block with i written in its first 8 bytes,
// so reordered, dropped or duplicated chunks change the hash.
import { createHash, randomBytes } from 'node:crypto';

export const CHUNK = 1 << 20;

export function generator(seed) {
  const block = Buffer.alloc(CHUNK);
  let x = createHash('sha256').update(String(seed)).digest();
  for (let off = 0; off < CHUNK; off += 32) {
    x.copy(block, off);
    x = createHash('sha256').update(x).digest();
  }
  return (i, len = CHUNK) => {
    const b = Buffer.from(block.subarray(0, len));
    if (len >= 8) b.writeBigUInt64BE(BigInt(i), 0);
    return b;
  };
}

/** sha256 hex of `total` bytes from generator(seed). */
export function expectedHash(seed, total) {
  const gen = generator(seed);
  const h = createHash('sha256');
  for (let i = 0, left = total; left > 0; i++, left -= CHUNK) h.update(gen(i, Math.min(CHUNK, left)));
  return h.digest('hex');
}

export const random = randomBytes;

let reply;

/**
 * The "sink" server side of drivers/client.mjs bulk: reads "SEND <n>\n", then data until EOF (the
 * client's half-close), answers "<sha256 of data> <count>\n" and n bytes of generator("reply")
 * data, then closes.
 */
export function sink(sock) {
  reply ??= generator('reply');
  let header = '';
  let hash = null;
  let count = 0;
  let replyBytes = 0;
  sock.on('data', (d) => {
    if (!hash) {
      header += d.toString('latin1');
      const nl = header.indexOf('\n');
      if (nl < 0) return;
      replyBytes = Number(header.slice(0, nl).split(' ')[1] ?? 0);
      hash = createHash('sha256');
      const rest = Buffer.from(header.slice(nl + 1), 'latin1');
      if (rest.length) { hash.update(rest); count += rest.length; }
      return;
    }
    hash.update(d);
    count += d.length;
  });
  sock.on('end', async () => {
    sock.write(`${hash ? hash.digest('hex') : 'none'} ${count}\n`);
    for (let i = 0, left = replyBytes; left > 0; i++, left -= CHUNK) {
      if (!sock.write(reply(i, Math.min(CHUNK, left)))) await new Promise((r) => sock.once('drain', r));
    }
    sock.end();
  });
  sock.on('error', () => {});
}
