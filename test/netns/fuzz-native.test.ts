// Fuzzing the addon's JS boundary: a seeded, deterministic generator calls every entry point the
// addon exports (iptcInfo, iptcRead, iptcApply; originalDst when the proxy part is compiled in)
// with random and hostile arguments: wrong types, getters and Proxies that throw, 1 MB strings,
// NaN/Infinity/negative numbers, closed and negative fds, chain names of 29+ characters, comments
// over 255 bytes, invalid CIDRs, 100 000-op transactions, polluted prototypes. Every call must
// throw a TypeError, throw the error our own hostile getter threw, reject with an Error carrying a
// string `code`, or succeed: never crash the process, never anything else.
//
// Safety: whatever the fuzzer generates, a call that could reach the kernel carries this suite's
// own namespace path (/run/netns/em-fuzz-...): apply options always hold it as an own, read-only
// data property, and the netnsPath arguments of info/read are either that path or values the
// binding refuses before any kernel call (an empty path, undefined or null, which would mean "the
// host's namespace", are never generated). A tripwire compares the host's table lists before
// and after. Reproduce a run with EDGEMESH_FUZZ_SEED=<seed> (printed), scale it with EDGEMESH_FUZZ_RUNS.
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { native } from '../../src/native/load.js';
import { Netns, describeNetns } from '../helpers/netns.js';

type Fn = (...args: unknown[]) => unknown;
const b = native() as unknown as Record<string, unknown>;
const fn = (name: string): Fn | undefined => (typeof b[name] === 'function' ? (b[name] as Fn) : undefined);

const SEED = Number(process.env.EDGEMESH_FUZZ_SEED ?? 0x5eed_2024) >>> 0;
const RUNS = Math.min(Math.max(Number(process.env.EDGEMESH_FUZZ_RUNS ?? 3000), 100), 200_000);

// ---- deterministic randomness (mulberry32) ----

class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = seed >>> 0;
  }
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length)] as T;
  }
}

/** Thrown by our hostile getters and Proxies: the binding may let it through, unchanged. */
class FuzzGetterError extends Error {}

const MB = 'A'.repeat(1 << 20);
const MB_UNICODE = '\u00e9'.repeat(1 << 19); // 1 MB of UTF-8
const longChain = (n: number): string => 'C'.repeat(n);

function hostileNumber(r: Rng): number {
  return r.pick([NaN, Infinity, -Infinity, -1, -0, 0, 1.5, 2 ** 31, 2 ** 32 + 1, 2 ** 53, -(2 ** 53), Number.MAX_VALUE, Number.MIN_VALUE, 65535, 65536, r.int(70000) - 1000]);
}

function hostileString(r: Rng): string {
  return r.pick([
    '',
    MB,
    MB_UNICODE,
    longChain(28),
    longChain(29),
    longChain(4097),
    'EDGE-MESH',
    'a\u0000b',
    '\ud800',
    '\udfff\ud800',
    '💥'.repeat(70),
    'c'.repeat(255),
    'c'.repeat(256),
    'é'.repeat(128), // 256 bytes in UTF-8
    '-j',
    '!',
    'A B',
    '%n%s%x',
    '../../etc/passwd',
    String(r.int(1e9)),
  ]);
}

function throwingGetterObject(keys: readonly string[]): object {
  const o: Record<string, unknown> = {};
  for (const k of keys)
    Object.defineProperty(o, k, {
      enumerable: true,
      get() {
        throw new FuzzGetterError(`getter ${k}`);
      },
    });
  return o;
}

const throwingProxy = (): object =>
  new Proxy(
    {},
    {
      get(_t, k) {
        throw new FuzzGetterError(`proxy get ${String(k)}`);
      },
      has() {
        throw new FuzzGetterError('proxy has');
      },
      ownKeys() {
        throw new FuzzGetterError('proxy ownKeys');
      },
    },
  );

/** Any JS value, weighted towards the awkward ones. */
function anyValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 2 ? 9 : 13)) {
    case 0:
      return undefined;
    case 1:
      return null;
    case 2:
      return r.chance(0.5);
    case 3:
      return hostileNumber(r);
    case 4:
      return hostileString(r);
    case 5:
      return BigInt(r.int(1000)) - 500n;
    case 6:
      return Symbol('fuzz');
    case 7:
      return () => 'fn';
    case 8:
      return r.pick([new Date(NaN), /re/, Buffer.from('buf'), new Uint8Array(3), new Map(), Promise.resolve(1)]);
    case 9:
      return throwingGetterObject(r.pick([['op', 'chain'], ['target'], ['address', 'port'], ['length']]));
    case 10:
      return throwingProxy();
    case 11:
      return Array.from({ length: r.int(4) }, () => anyValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(4); i > 0; i--) o[r.pick(['op', 'chain', 'rule', 'rules', 'position', 'target', 'dst', 'src', 'comment', 'toDestination', 'x'])] = anyValue(r, depth + 1);
      return o;
    }
  }
}

const CIDRS = {
  ipv4: ['10.10.0.0/16', '10.10.0.3/32', '10.10.0.3', '0.0.0.0/0', '10.10.0.7/24', '10.0.0.0/33', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/1a', '999.1.1.1/32', ' 10.0.0.1', '10.0.0.1 ', '10.1', '0x0a.0.0.1', 'fd00::/64', '10.0.0.0/0032', '10.0.0.0//8'],
  ipv6: ['fd00:10::/112', 'fd00:10::3/128', '::/0', 'fd00::1', '::ffff:10.0.0.1/128', 'fd00::/129', 'fd00:::1/64', 'fd00::/-1', '10.0.0.0/8', 'fe80::1%lo/64', '::/', '[::1]/128'],
};
const ADDRS = { ipv4: ['169.254.96.16', '10.10.0.1', '0.0.0.0', '255.255.255.255', '1.2.3', '::1'], ipv6: ['fd00::96:16', '::1', '::', 'fd00::96:16%lo', '169.254.96.16'] };
const TARGETS = ['RETURN', 'ACCEPT', 'DROP', 'DNAT', 'EDGE-MESH', 'EDGE-MESH-TCP', 'FUZZ-A', 'PREROUTING', 'NOPE', longChain(29), '', 'a b', '-x'];
const CHAINS = ['EDGE-MESH', 'EDGE-MESH-TCP', 'FUZZ-A', 'FUZZ-B', 'PREROUTING', 'OUTPUT', 'INPUT', 'POSTROUTING', 'RETURN', 'DNAT', longChain(28), longChain(29), '', '-x', '!x', 'a b', 'é'];
// The operations a plan emits, then names the bindings refuse (two of them operations that no longer exist).
const OPS = ['replaceChain', 'replaceChain', 'flushChain', 'deleteChain', 'insertRule', 'deleteRule', 'moveRule', 'createChain', 'appendRule', 'frobnicate', ''];
type Family = 'ipv4' | 'ipv6';

function rule(r: Rng, f: Family): unknown {
  if (r.chance(0.02)) return anyValue(r, 1);
  const o: Record<string, unknown> = r.chance(0.05) ? Object.create({ target: 'RETURN', dst: '10.0.0.0/8' }) : {};
  if (r.chance(0.4)) o.dst = r.chance(0.97) ? r.pick(CIDRS[f]) : anyValue(r, 2);
  if (r.chance(0.2)) o.src = r.chance(0.97) ? r.pick(CIDRS[f]) : anyValue(r, 2);
  if (r.chance(0.3)) o.protocol = r.chance(0.9) ? r.pick(['tcp', 'udp']) : r.pick(['icmp', 'TCP', 6, '']);
  if (r.chance(0.5)) o.comment = r.chance(0.97) ? r.pick(['edgemesh root chain', 'ignore a/b service', 'c'.repeat(255), 'c'.repeat(256), 'é'.repeat(128), 'nul\u0000inside', '']) : anyValue(r, 2);
  if (r.chance(0.99)) o.target = r.chance(0.97) ? r.pick(TARGETS) : anyValue(r, 2);
  if (o.target === 'DNAT' || r.chance(0.05)) {
    o.toDestination = r.chance(0.85)
      ? { address: r.chance(0.9) ? r.pick(ADDRS[f]) : anyValue(r, 2), ...(r.chance(0.7) ? { port: r.chance(0.7) ? 1 + r.int(65535) : r.chance(0.5) ? hostileNumber(r) : anyValue(r, 2) } : {}) }
      : anyValue(r, 2);
  }
  return o;
}

function op(r: Rng, f: Family): unknown {
  if (r.chance(0.02)) return anyValue(r, 1);
  if (r.chance(0.01)) return throwingGetterObject(['op', 'chain', 'rule']);
  const o: Record<string, unknown> = {};
  o.op = r.chance(0.98) ? r.pick(OPS) : anyValue(r, 2);
  o.chain = r.chance(0.98) ? r.pick(CHAINS) : anyValue(r, 2);
  if (r.chance(0.9)) o.rule = rule(r, f);
  if (r.chance(0.85)) o.position = r.chance(0.9) ? 1 + r.int(4) : hostileNumber(r);
  if (o.op === 'replaceChain' || r.chance(0.05)) o.rules = r.chance(0.95) ? Array.from({ length: r.int(4) }, () => rule(r, f)) : anyValue(r, 2);
  return o;
}

interface Tally {
  calls: number;
  ok: number;
  typeError: number;
  getterError: number;
  codes: Map<string, number>;
}
const tally: Tally = { calls: 0, ok: 0, typeError: 0, getterError: 0, codes: new Map() };
const failures: string[] = [];

function describeArgs(args: unknown[]): string {
  const s = (v: unknown): string => {
    if (typeof v === 'string') return v.length > 60 ? `"${v.slice(0, 20)}…"(${v.length})` : JSON.stringify(v);
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'symbol' || typeof v === 'function') return String(typeof v);
    if (Array.isArray(v)) return v.length > 5 ? `[${v.length} items]` : `[${v.map(s).join(',')}]`;
    if (v && typeof v === 'object') {
      try {
        const entries = Object.entries(v as Record<string, unknown>);
        return `{${entries.map(([k, x]) => `${k}:${s(x)}`).join(',')}}`;
      } catch {
        return '{hostile}';
      }
    }
    return String(v);
  };
  return args.map(s).join(', ');
}

/** Calls the binding and classifies the outcome; anything outside the contract is recorded. */
async function probe(name: string, f: Fn, args: unknown[]): Promise<void> {
  tally.calls++;
  let result: unknown;
  try {
    result = f(...args);
  } catch (e) {
    if (e instanceof TypeError) tally.typeError++;
    else if (e instanceof FuzzGetterError) tally.getterError++;
    else if (e instanceof Error && typeof (e as Error & { code?: unknown }).code === 'string') {
      const code = (e as Error & { code: string }).code;
      tally.codes.set(code, (tally.codes.get(code) ?? 0) + 1);
    }
    else failures.push(`${name}(${describeArgs(args)}) threw ${String(e)}`);
    return;
  }
  if (!(result instanceof Promise)) {
    if (name === 'originalDst' && result && typeof result === 'object') tally.ok++;
    else failures.push(`${name}(${describeArgs(args)}) returned ${String(result)} instead of a Promise`);
    return;
  }
  try {
    await result;
    tally.ok++;
  } catch (e) {
    const code = (e as { code?: unknown } | undefined)?.code;
    if (e instanceof Error && typeof code === 'string' && code.length > 0) tally.codes.set(code, (tally.codes.get(code) ?? 0) + 1);
    else failures.push(`${name}(${describeArgs(args)}) rejected with ${String(e)} (no code)`);
  }
}

let ns: Netns;
let dir = '';
let lockfile = '';
const tablesLists = (): string =>
  ['ip_tables_names', 'ip6_tables_names']
    .map((f) => {
      try {
        return readFileSync(`/proc/self/net/${f}`, 'utf8');
      } catch {
        return `${f}: absent`;
      }
    })
    .join('|');
let hostTablesBefore = '';

describeNetns('fuzzing the native boundary (seeded, in a namespace of its own)', () => {
  beforeAll(async () => {
    hostTablesBefore = tablesLists();
    ns = await Netns.create('fuzz');
    dir = mkdtempSync(join(tmpdir(), 'em-fuzz-'));
    lockfile = join(dir, 'xtables.lock');
    console.log(`fuzz-native: seed ${SEED} (EDGEMESH_FUZZ_SEED), ${RUNS} calls (EDGEMESH_FUZZ_RUNS), namespace ${ns.name}`);
  });
  afterAll(async () => {
    await ns?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Apply options that always carry our namespace as an own, read-only data property. */
  function applyOptions(r: Rng): unknown {
    // Types the binding refuses outright (never undefined: that would mean the host's namespace).
    if (r.chance(0.05)) return r.pick<unknown>([null, 0, 'opts', true, [], () => 0, Symbol('o'), 1n]);
    const base: Record<string, unknown> = r.chance(0.1) ? Object.create({ netnsPath: '', lockfile: '/nonexistent-dir/proto.lock' }) : {};
    if (r.chance(0.05)) Object.defineProperties(base, Object.getOwnPropertyDescriptors(throwingGetterObject([r.pick(['lockfile', 'lockWaitMs', 'maxAttempts'])])));
    else {
      // Never an empty lockfile: it falls back to $XTABLES_LOCKFILE or the host's /run/xtables.lock,
      // harmless to take but it would make a concurrently running iptables wait.
      base.lockfile = r.chance(0.95) ? lockfile : r.pick<unknown>([MB, 7, '/nonexistent-dir/x.lock']);
      if (r.chance(0.3)) base.lockWaitMs = r.chance(0.7) ? r.int(2000) : hostileNumber(r);
      if (r.chance(0.2)) base.lockIntervalMs = r.chance(0.7) ? 1 + r.int(50) : hostileNumber(r);
      if (r.chance(0.2)) base.maxAttempts = r.chance(0.7) ? 1 + r.int(5) : hostileNumber(r);
    }
    Object.defineProperty(base, 'netnsPath', { value: ns.path, enumerable: true, writable: false, configurable: false });
    return base;
  }

  /** A netnsPath argument for info/read: ours, or one the binding refuses before touching any namespace. */
  function netnsArg(r: Rng): unknown {
    if (r.chance(0.85)) return ns.path;
    return r.pick<unknown>([MB, 42, {}, [], true, Symbol('ns'), '/nonexistent/netns', '/dev/null', dir, `${ns.path}-gone`]);
  }

  function family(r: Rng): unknown {
    return r.chance(0.92) ? r.pick(['ipv4', 'ipv6']) : r.pick<unknown>(['IPv4', 'ipv5', '', 4, null, undefined, MB, {}]);
  }

  it(`${RUNS} seeded calls of iptcInfo/iptcRead/iptcApply (and originalDst if present) throw TypeError, reject with a code, or succeed`, async () => {
    const r = new Rng(SEED);
    const info = fn('iptcInfo');
    const read = fn('iptcRead');
    const apply = fn('iptcApply');
    expect(info && read && apply, 'the iptc entry points are exported').toBeTruthy();
    const originalDst = fn('originalDst');
    if (!originalDst) console.log('fuzz-native: originalDst is not in this build of the addon; not fuzzed');
    const known = new Set(['iptcInfo', 'iptcRead', 'iptcApply', 'originalDst']);
    for (const k of Object.keys(b)) if (typeof b[k] === 'function' && !known.has(k)) console.log(`fuzz-native: ${k} is exported but not fuzzed here`);

    // fds for originalDst: a closed one, a regular file, stdio, out of range.
    const tmpFile = join(dir, 'not-a-socket');
    const fileFd = openSync(tmpFile, 'w');
    const closedFd = openSync(tmpFile, 'r');
    closeSync(closedFd);

    const started = Date.now();
    for (let i = 0; i < RUNS && Date.now() - started < 90_000; i++) {
      const which = r.int(originalDst ? 10 : 9);
      if (which === 0) {
        // A missing netnsPath argument would mean the host: only with no family or one the binding refuses first.
        await probe('iptcInfo', info!, r.chance(0.1) ? [r.pick<unknown>(['ipv5', 4, null, MB])].slice(0, r.int(2)) : [family(r), netnsArg(r)]);
      } else if (which === 1) {
        const chains = r.chance(0.85) ? Array.from({ length: r.int(6) }, () => (r.chance(0.9) ? r.pick(CHAINS) : anyValue(r, 2))) : anyValue(r, 1);
        await probe('iptcRead', read!, [family(r), chains, netnsArg(r)]);
      } else if (which === 9) {
        const fd = r.pick<unknown>([-1, closedFd, fileFd, 0, 2, 2 ** 31, 1.5, NaN, Infinity, '3', null, undefined, {}]);
        await probe('originalDst', originalDst!, r.chance(0.05) ? [] : [fd]);
      } else {
        const fam = r.chance(0.5) ? 'ipv4' : 'ipv6';
        const ops = r.chance(0.95) ? Array.from({ length: 1 + r.int(3) }, () => op(r, fam)) : anyValue(r, 1);
        await probe('iptcApply', apply!, [r.chance(0.97) ? fam : family(r), ops, applyOptions(r)]);
      }
    }
    closeSync(fileFd);

    // The 1 MB and 100 000-element cases, each once, explicitly.
    const o = { lockfile, netnsPath: ns.path };
    const big: unknown[][] = [
      ['ipv4', Array.from({ length: 100_000 }, () => null), o],
      ['ipv4', Array.from({ length: 100_000 }, (_, k) => ({ op: 'insertRule', chain: 'NOT-THERE', rule: { dst: `10.${(k >> 16) & 255}.${(k >> 8) & 255}.${k & 255}/32`, target: 'RETURN' } })), o],
      ['ipv6', [...Array.from({ length: 99_999 }, () => ({ op: 'replaceChain', chain: 'X', rules: [] })), { op: 'replaceChain', chain: longChain(29), rules: [] }], o],
      ['ipv4', [{ op: 'replaceChain', chain: 'FUZZ-BIG', rules: Array.from({ length: 100_000 }, () => ({ target: 'RETURN', comment: 'c'.repeat(256) })) }], o],
      ['ipv4', [{ op: 'replaceChain', chain: MB, rules: [] }], o],
      ['ipv4', [{ op: 'insertRule', chain: 'FUZZ-A', rule: { target: 'RETURN', comment: MB_UNICODE } }], o],
      ['ipv4', new Array(100_000), o], // holes read as undefined
    ];
    for (const args of big) await probe('iptcApply', apply!, args);
    await probe('iptcRead', read!, ['ipv4', Array.from({ length: 5000 }, () => 'EDGE-MESH'), ns.path]);

    // Prototype pollution: an empty op object inherits everything from Object.prototype.
    const polluted = { op: 'replaceChain', chain: 'POLLUTED', rules: [], target: 'RETURN', netnsPath: '' };
    for (const [k, v] of Object.entries(polluted)) Object.defineProperty(Object.prototype, k, { value: v, configurable: true, writable: true });
    let pending: unknown;
    try {
      pending = apply!('ipv4', [{}], { lockfile, netnsPath: ns.path });
    } catch (e) {
      pending = Promise.reject(e);
    } finally {
      for (const k of Object.keys(polluted)) delete (Object.prototype as Record<string, unknown>)[k];
    }
    await probe('iptcApply(polluted)', () => pending, []);

    // Concurrency: 64 calls in flight at once on the worker pool.
    const rc = new Rng(SEED ^ 0xc0ffee);
    await Promise.all(
      Array.from({ length: 64 }, () => {
        const fam = rc.chance(0.5) ? 'ipv4' : 'ipv6';
        return rc.chance(0.5) ? probe('iptcApply', apply!, [fam, [op(rc, fam)], applyOptions(rc)]) : probe('iptcRead', read!, [fam, [rc.pick(CHAINS)], ns.path]);
      }),
    );

    const codes = Object.fromEntries([...tally.codes].sort((a, b2) => b2[1] - a[1]));
    console.log(
      `fuzz-native: ${tally.calls} calls in ${Date.now() - started} ms: ${tally.ok} succeeded, ${tally.typeError} TypeError, ${tally.getterError} getter errors passed through, rejected by code ${JSON.stringify(codes)}`,
    );
    expect(failures.slice(0, 20)).toEqual([]);
    // The generator reached every kind of outcome: otherwise it proved less than it claims.
    expect(tally.ok).toBeGreaterThan(50);
    expect(tally.typeError).toBeGreaterThan(50);
    expect(tally.getterError).toBeGreaterThan(0);
    expect(tally.codes.get('ETRANSACTION') ?? 0).toBeGreaterThan(50);
    expect(tally.codes.has('ENOENT'), 'a missing namespace or lock directory rejects with ENOENT').toBe(true);
  });

  it('the namespace table is still well-formed, the host namespace kept its tables as they were, and the addon still works', async () => {
    const save = await ns.run('iptables-legacy-save', ['-t', 'nat']);
    expect(save.stdout).toMatch(/^\*nat$/m);
    expect(save.stdout).toMatch(/^COMMIT$/m);
    // The polluted replaceChain ran in our namespace only.
    expect(save.stdout).toMatch(/^:POLLUTED /m);
    expect(tablesLists()).toBe(hostTablesBefore);
    const res = await (fn('iptcApply')!('ipv4', [{ op: 'replaceChain', chain: 'FUZZ-OK', rules: [{ target: 'RETURN', dst: '10.0.0.1/32' }] }], { lockfile, netnsPath: ns.path }) as Promise<{ attempts: number }>);
    expect(res.attempts).toBe(1);
    const snap = (await fn('iptcRead')!('ipv4', ['FUZZ-OK'], ns.path)) as { chains: { name: string; rules: unknown[] }[] };
    expect(snap.chains).toEqual([{ name: 'FUZZ-OK', rules: [expect.objectContaining({ dst: '10.0.0.1/32', target: 'RETURN' })] }]);
  });
});
