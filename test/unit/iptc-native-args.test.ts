// Wrong types passed straight to the addon throw TypeError synchronously (never a crash), and
// values that pass the type checks but are invalid are refused by the core's own validation
// (ETRANSACTION with opIndex) before any lock, namespace or kernel call: no root needed.
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { native } from '../../src/native/load.js';

const b = native() as unknown as Record<string, (...args: unknown[]) => unknown>;
const dir = mkdtempSync(join(tmpdir(), 'em-iptc-unit-'));
const lockfile = join(dir, 'never-created.lock');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function typeError(fn: () => unknown, message?: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(TypeError);
  if (message) expect((err as Error).message).toMatch(message);
}

const rule = { target: 'RETURN' };

describe('native iptc binding argument checks', () => {
  it('exports the iptc functions', () => {
    expect(typeof b.iptcRead).toBe('function');
    expect(typeof b.iptcApply).toBe('function');
    expect(typeof b.iptcInfo).toBe('function');
    expect(native().modules.includes('iptc')).toBe(true);
  });

  it('throws TypeError for wrong argument types of iptcInfo/iptcRead', () => {
    typeError(() => b.iptcInfo!(), /family/);
    typeError(() => b.iptcInfo!(4, ''), /family/);
    typeError(() => b.iptcInfo!('ipv5', ''), /family/);
    typeError(() => b.iptcInfo!('ipv4', 12), /netnsPath/);
    typeError(() => b.iptcRead!('ipv4', 'PREROUTING', ''), /chains must be an array/);
    typeError(() => b.iptcRead!('ipv4', [1], ''), /chains\[0\]/);
    typeError(() => b.iptcRead!('ipv4', ['x'.repeat(1 << 20)], ''), /too long/);
    typeError(() => b.iptcRead!('ipv4', [{ toString: () => 'X' }], ''), /must be a string/);
  });

  it('throws TypeError for malformed ops (missing fields, wrong numbers, huge strings) instead of crashing', () => {
    const bad: [unknown, RegExp][] = [
      [null, /ops\[0\] must be an object/],
      [[], /ops\[0\] must be an object/],
      [{}, /ops\[0\]\.op must be a string/],
      [{ op: 'frobnicate', chain: 'X' }, /not a known operation/],
      [{ op: 'replaceChain' }, /ops\[0\]\.chain must be a string/],
      [{ op: 'replaceChain', chain: 5 }, /chain must be a string/],
      [{ op: 'insertRule', chain: 'X' }, /rule must be an object/],
      [{ op: 'insertRule', chain: 'X', rule: {} }, /rule\.target must be a string/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'RETURN', dst: 10 } }, /rule\.dst must be a string/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'RETURN', protocol: 'icmp' } }, /protocol/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'RETURN', comment: null } }, /comment must be a string/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'DNAT', toDestination: 'x' } }, /toDestination must be an object/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'DNAT', toDestination: {} } }, /address must be a string/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'DNAT', toDestination: { address: '1.2.3.4', port: 70000 } } }, /port must be an integer/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'DNAT', toDestination: { address: '1.2.3.4', port: 'http' } } }, /port must be a number/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'DNAT', toDestination: { address: '1.2.3.4', port: NaN } } }, /port must be an integer/],
      [{ op: 'insertRule', chain: 'X', rule, position: -1 }, /position must be an integer/],
      [{ op: 'insertRule', chain: 'X', rule, position: 2 ** 40 }, /position must be an integer/],
      [{ op: 'moveRule', chain: 'X', rule }, /position must be a number/],
      [{ op: 'moveRule', chain: 'X', rule, position: 1.5 }, /position must be an integer/],
      [{ op: 'replaceChain', chain: 'X' }, /rules must be an array/],
      [{ op: 'replaceChain', chain: 'X', rules: [rule, 3] }, /rules\[1\] must be an object/],
      [{ op: 'replaceChain', chain: 'x'.repeat(5_000_000), rules: [] }, /too long/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'RETURN', comment: 'c'.repeat(100_000) } }, /too long/],
    ];
    for (const [op, msg] of bad) typeError(() => b.iptcApply!('ipv4', [op], { lockfile }), msg);
    typeError(() => b.iptcApply!('ipv4', { length: 1 }, {}), /ops must be an array/);
    typeError(() => b.iptcApply!('ipv4', [], 'opts'), /options must be an object/);
    typeError(() => b.iptcApply!('ipv4', [], { lockWaitMs: '5s' }), /lockWaitMs/);
    typeError(() => b.iptcApply!('ipv4', [], { maxAttempts: 0 }), /maxAttempts/);
    typeError(() => b.iptcApply!('ipv4', [], { lockfile: 1 }), /lockfile/);
    typeError(() => b.iptcApply!('ipv4', [], { netnsPath: {} }), /netnsPath/);
  });

  it('knows only the operations a plan emits: createChain, appendRule, deleteRuleAt and replaceRule are refused by both bindings', () => {
    for (const op of ['createChain', 'appendRule', 'deleteRuleAt', 'replaceRule']) {
      typeError(() => b.iptcApply!('ipv4', [{ op, chain: 'X', rule, position: 1 }], { lockfile }), /ops\[0\]\.op is not a known operation/);
      typeError(() => b.nftApply!({ family: 'ipv4', table: 'nat', dialect: 'xt', ops: [{ op, chain: 'X', rule, position: 1 }] }), /ops\[0\]\.op is not a known operation/);
    }
  });

  it('refuses invalid values in the core with ETRANSACTION and the op index, before taking the lock', async () => {
    const cases: [unknown, RegExp][] = [
      [{ op: 'insertRule', chain: 'X', rule: { target: 'RETURN', dst: '10.0.0.0/99' } }, /invalid destination CIDR/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'RETURN', src: 'fd00::/64' } }, /invalid source CIDR/],
      [{ op: 'replaceChain', chain: 'C'.repeat(29), rules: [] }, /invalid chain name/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'RETURN', comment: 'c'.repeat(256) } }, /comment longer than 255/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'DNAT' } }, /DNAT needs a destination/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'DNAT', toDestination: { address: 'fd00::1' } } }, /invalid DNAT address/],
      [{ op: 'insertRule', chain: 'X', rule: { target: 'bad target' } }, /invalid target/],
    ];
    for (const [op, msg] of cases) {
      const err = await (b.iptcApply!('ipv4', [{ op: 'replaceChain', chain: 'OK', rules: [] }, op], { lockfile }) as Promise<unknown>).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect(err).toMatchObject({ code: 'ETRANSACTION', opIndex: 1 });
      expect((err as Error).message).toMatch(msg);
    }
    expect(existsSync(lockfile)).toBe(false);
  });
});
