import { describe, expect, it } from 'vitest';
import { LegacyIptablesTable, normaliseOps } from '../../src/netfilter/iptables/iptables-legacy.js';
import type { NativeIptcBinding, NativeTxOp } from '../../src/native/binding.js';
import type { TxOp } from '../../src/netfilter/types.js';
import { LockTimeoutError, SyscallError, TransactionError } from '../../src/errors.js';

function fakeBinding(): NativeIptcBinding & { calls: { ops: NativeTxOp[]; options: unknown }[] } {
  const calls: { ops: NativeTxOp[]; options: unknown }[] = [];
  return {
    calls,
    iptcInfo: async () => ({ size: 10, entries: 2, present: true, builtinLayout: '0:0-10' }),
    iptcRead: async () => ({ chains: [{ name: 'EDGE-MESH', rules: [{ target: 'RETURN', packets: 1, bytes: 2, unknown: [] }, { target: 'X', packets: 0, bytes: 0, unknown: ['conntrack'] }] }], info: { size: 10, entries: 2, present: true, builtinLayout: '0:0-10' } }),
    iptcApply: async (_f, ops, options) => {
      calls.push({ ops, options });
      return { attempts: 1, lockWaitMs: 0, durationMs: 1, tokenAfter: '10/3', builtinLayoutAfter: '0:0-10' };
    },
    iptcBegin: async (_f, _chains, options) => {
      calls.push({ ops: [], options: { begin: options } });
      return { session: 7, snapshot: { chains: [], info: { size: 10, entries: 2, present: true, builtinLayout: '0:0-10' } } };
    },
    iptcCommit: async (session, ops) => {
      calls.push({ ops, options: { commit: session } });
      return { attempts: 1, lockWaitMs: 0, durationMs: 1, tokenAfter: '10/3', builtinLayoutAfter: '0:0-10' };
    },
    iptcAbort: async (session) => {
      calls.push({ ops: [], options: { abort: session } });
    },
  };
}

function rejects(family: 'ipv4' | 'ipv6', ops: unknown[], index: number, message: RegExp): void {
  let err: unknown;
  try {
    normaliseOps(family, ops as TxOp[]);
  } catch (e) {
    err = e;
  }
  expect(err, JSON.stringify(ops)).toBeInstanceOf(TransactionError);
  expect((err as TransactionError).code).toBe('ETRANSACTION');
  expect((err as TransactionError).opIndex).toBe(index);
  expect((err as Error).message).toMatch(message);
}

const ok: TxOp = { op: 'replaceChain', chain: 'EDGE-MESH', rules: [] };

describe('iptables-legacy transaction validation (TypeScript, before the addon)', () => {
  it('refuses a set lookup (dstSet): written without it, the rule would RETURN every address', () => {
    rejects('ipv4', [ok, { op: 'insertRule', chain: 'EDGE-MESH', rule: { dstSet: 'ignored', target: 'RETURN' } }], 1, /dstSet ignored: set lookups are written only by the nftables backend/);
  });

  it('canonicalises CIDRs and DNAT addresses and drops fields the addon does not take', () => {
    const out = normaliseOps('ipv4', [
      { op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.10.3.4/16', src: '192.168.0.1', protocol: 'tcp', comment: 'x', target: 'EDGE-MESH-TCP' } },
      { op: 'replaceChain', chain: 'EDGE-MESH-TCP', rules: [{ target: 'DNAT', toDestination: { address: '169.254.96.16', port: 40001 }, packets: 3, bytes: 4 } as never] },
    ]);
    expect(out).toEqual([
      { op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.10.0.0/16', src: '192.168.0.1/32', protocol: 'tcp', comment: 'x', target: 'EDGE-MESH-TCP' } },
      { op: 'replaceChain', chain: 'EDGE-MESH-TCP', rules: [{ target: 'DNAT', toDestination: { address: '169.254.96.16', port: 40001 } }] },
    ]);
    expect(normaliseOps('ipv6', [{ op: 'insertRule', chain: 'X', rule: { dst: 'FD00:10::5/112', target: 'DNAT', toDestination: { address: 'FD00::0:1' } } }])).toEqual([
      { op: 'insertRule', chain: 'X', rule: { dst: 'fd00:10::/112', target: 'DNAT', toDestination: { address: 'fd00::1' } } },
    ]);
  });

  it('names the offending operation by index with a clear message', () => {
    rejects('ipv4', [ok, { op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.0.0.0/33', target: 'RETURN' } }], 1, /dst "10.0.0.0\/33" is not a CIDR/);
    rejects('ipv4', [ok, ok, { op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: 'fd00::/64', target: 'RETURN' } }], 2, /not an ipv4 CIDR/);
    rejects('ipv6', [{ op: 'insertRule', chain: 'E', rule: { src: '10.0.0.1', target: 'RETURN' } }], 0, /not an ipv6 CIDR/);
    rejects('ipv4', [ok, { op: 'replaceChain', chain: 'A'.repeat(29), rules: [] }], 1, /longer than 28/);
    expect(() => normaliseOps('ipv4', [{ op: 'replaceChain', chain: 'A'.repeat(28), rules: [] }])).not.toThrow();
    rejects('ipv4', [{ op: 'replaceChain', chain: 'has space', rules: [] }], 0, /printable ASCII/);
    rejects('ipv4', [{ op: 'replaceChain', chain: '-X', rules: [] }], 0, /must not start/);
    rejects('ipv4', [{ op: 'replaceChain', chain: '', rules: [] }], 0, /non-empty/);
    rejects('ipv4', [{ op: 'replaceChain', chain: 'RETURN', rules: [] }], 0, /reserved/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { comment: 'x'.repeat(256), target: 'RETURN' } }], 0, /longer than 255 bytes/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { comment: 'é'.repeat(128), target: 'RETURN' } }], 0, /longer than 255 bytes/);
    expect(() => normaliseOps('ipv4', [{ op: 'insertRule', chain: 'E', rule: { comment: 'x'.repeat(255), target: 'RETURN' } }])).not.toThrow();
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { comment: 'a\0b', target: 'RETURN' } }], 0, /NUL/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: 'DNAT' } }], 0, /DNAT needs toDestination/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: 'RETURN', toDestination: { address: '10.0.0.1' } } }], 0, /only valid with target DNAT/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: 'DNAT', toDestination: { address: '10.0.0.1', port: 0 } } }], 0, /port 0 must be 1-65535/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: 'DNAT', toDestination: { address: '10.0.0.1', port: 65536 } } }], 0, /1-65535/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: 'DNAT', toDestination: { address: '10.0.0.1', port: 80.5 } } }], 0, /1-65535/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: 'DNAT', toDestination: { address: 'fd00::1', port: 80 } } }], 0, /not an ipv4 address/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: 'DNAT', toDestination: { address: '10.0.0.0/8' } } }], 0, /not an IP address/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: 'QUEUE' } }], 0, /not supported/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { target: '' } }], 0, /target must be/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', rule: { protocol: 'icmp', target: 'RETURN' } }], 0, /tcp or udp/);
    rejects('ipv4', [{ op: 'insertRule', chain: 'E', position: 0, rule: { target: 'RETURN' } }], 0, /position 0/);
    rejects('ipv4', [{ op: 'moveRule', chain: 'E', rule: { target: 'RETURN' } }], 0, /position undefined/);
    rejects('ipv4', [{ op: 'moveRule', chain: 'E', position: 1.5, rule: { target: 'RETURN' } }], 0, /position 1.5/);
    rejects('ipv4', [{ op: 'replaceChain', chain: 'E' }], 0, /needs rules/);
    rejects('ipv4', [ok, { op: 'renameChain', chain: 'E' }], 1, /unknown operation "renameChain"/);
    rejects('ipv4', [null], 0, /must be an object/);
  });

  it('never calls the addon when validation fails, and passes options and the netns path when it does not', async () => {
    const b = fakeBinding();
    const t = new LegacyIptablesTable({ family: 'ipv4', netns: 'em-x', lockfile: '/tmp/l', lockWaitMs: 100, maxAttempts: 2 }, b);
    await expect(t.apply([ok, { op: 'insertRule', chain: 'E', rule: { dst: 'nope', target: 'RETURN' } }])).rejects.toMatchObject({ code: 'ETRANSACTION', opIndex: 1 });
    expect(b.calls).toHaveLength(0);
    expect(await t.apply([])).toEqual({ attempts: 0, lockWaitMs: 0, durationMs: 0 });
    expect(b.calls).toHaveLength(0);
    await t.apply([ok]);
    expect(b.calls[0]!.options).toEqual({ lockfile: '/tmp/l', lockWaitMs: 100, lockIntervalMs: 20, maxAttempts: 2, netnsPath: '/run/netns/em-x' });
    expect(await t.info()).toEqual({ size: 10, entries: 2, token: '10/2/', builtinLayout: '0:0-10#' });
    const snap = await t.read(['EDGE-MESH']);
    expect(snap.chains.get('EDGE-MESH')).toEqual([{ target: 'RETURN', packets: 1, bytes: 2 }, { target: 'X', packets: 0, bytes: 0, unknown: ['conntrack'] }]);
    await expect(t.read(['bad name'])).rejects.toBeInstanceOf(TypeError);
    expect(() => new LegacyIptablesTable({ family: 'ipv5' as never }, b)).toThrow(TypeError);
    expect(() => new LegacyIptablesTable({ family: 'ipv4', lockWaitMs: -1 }, b)).toThrow(RangeError);
  });

  it('maps native failures to typed errors (lock timeout, transaction with opIndex, errno)', async () => {
    const nativeErr = (code: string, extra: Record<string, unknown> = {}) => Object.assign(new Error(`native ${code}`), { code, errno: 11, syscall: 'flock', ...extra });
    const b = fakeBinding();
    const t = new LegacyIptablesTable({ family: 'ipv4' }, b);
    b.iptcApply = async () => Promise.reject(nativeErr('ELOCKTIMEOUT'));
    await expect(t.apply([ok])).rejects.toBeInstanceOf(LockTimeoutError);
    b.iptcApply = async () => Promise.reject(nativeErr('ETRANSACTION', { opIndex: 0, syscall: 'iptc_create_chain' }));
    await expect(t.apply([ok])).rejects.toMatchObject({ name: 'TransactionError', opIndex: 0 });
    b.iptcApply = async () => Promise.reject(nativeErr('EPERM', { syscall: 'iptc_init', errno: 1 }));
    const e = await t.apply([ok]).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(SyscallError);
    expect(e).toMatchObject({ code: 'EPERM', syscall: 'iptc_init', errno: 1 });
  });
});

describe('LegacyIptablesTable.begin (one read and one commit under one lock)', () => {
  it('commits validated ops on the session, and a bad op aborts the session (lock released) with the op index', async () => {
    const b = fakeBinding();
    const t = new LegacyIptablesTable({ family: 'ipv4', netns: 'x' }, b);
    const tx = await t.begin(['EDGE-MESH']);
    await tx.commit([{ op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.0.0.1', target: 'RETURN' } }]);
    expect(b.calls.map((c) => Object.keys(c.options as object)[0])).toEqual(['begin', 'commit']);
    expect(b.calls[1]!.ops[0]).toMatchObject({ op: 'insertRule', rule: { dst: '10.0.0.1/32' } });
    await expect(tx.commit([])).rejects.toThrow(/already been committed/);

    const tx2 = await t.begin(['EDGE-MESH']);
    await expect(tx2.commit([{ op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.0.0.300', target: 'RETURN' } }])).rejects.toMatchObject({ code: 'ETRANSACTION', opIndex: 0 });
    expect(b.calls.at(-1)!.options).toEqual({ abort: 7 });
    await tx2.abort(); // idempotent
    expect(b.calls.filter((c) => 'abort' in (c.options as object))).toHaveLength(1);
  });
});


describe('the legacy watchdog token (watchToken): the built-in chains digest only when something may have written', () => {
  function digestBinding(opts: { watch: boolean; cpuMs: number }) {
    const state = { size: 10, entries: 2, digest: 'aaaa', lockEvents: 0, digests: 0, quick: 0, watchFails: !opts.watch };
    const b = fakeBinding();
    b.iptcInfo = async (_f, _ns, digest) => {
      if (digest === false) {
        state.quick++;
        return { size: state.size, entries: state.entries, present: true, builtinLayout: '0:0-10' };
      }
      state.digests++;
      return { size: state.size, entries: state.entries, present: true, builtinLayout: '0:0-10', headDigest: state.digest, digestCpuMs: opts.cpuMs };
    };
    b.iptcLockWatch = () => {
      if (state.watchFails) throw Object.assign(new Error('cannot watch the xtables lock file /x: EROFS'), { code: 'EROFS' });
      return 1;
    };
    b.iptcLockEvents = () => {
      const n = state.lockEvents;
      state.lockEvents = 0;
      return n;
    };
    b.iptcLockUnwatch = () => undefined;
    return { b, state };
  }

  it('a quiet lock file costs one IPT_SO_GET_INFO per poll; lock activity, a size change or the cost-scaled period recompute the digest', async () => {
    const { b, state } = digestBinding({ watch: true, cpuMs: 20 }); // 20 ms per digest: every 20 s at 0.1 % of a core
    const t = new LegacyIptablesTable({ family: 'ipv4' }, b);
    const first = await t.watchToken();
    expect(first).toBe('10/2/aaaa');
    expect(state.digests).toBe(1);
    for (let i = 0; i < 5; i++) expect(await t.watchToken()).toBe(first);
    expect([state.digests, state.quick]).toEqual([1, 5]);
    // Someone ran iptables: the digest is recomputed and a same-size reordering shows.
    state.digest = 'bbbb';
    state.lockEvents = 2;
    expect(await t.watchToken()).toBe('10/2/bbbb');
    expect(state.digests).toBe(2);
    // A writer that bypassed the lock but changed the size: seen by IPT_SO_GET_INFO, digest recomputed.
    state.size = 12;
    state.digest = 'cccc';
    expect(await t.watchToken()).toBe('12/2/cccc');
    expect(state.digests).toBe(3);
    t.close();
  });

  it('when the lock file cannot be watched, the adaptive period alone decides (a cheap digest runs every poll)', async () => {
    const { b, state } = digestBinding({ watch: false, cpuMs: 0.01 });
    const t = new LegacyIptablesTable({ family: 'ipv4' }, b);
    await t.watchToken();
    expect(t.lockWatchProblem).toMatch(/EROFS/);
    await new Promise((r) => setTimeout(r, 30));
    state.digest = 'dddd';
    expect(await t.watchToken()).toBe('10/2/dddd'); // 0.01 ms per digest: due after 10 ms
  });
});
