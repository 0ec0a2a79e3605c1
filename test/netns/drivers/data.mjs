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
