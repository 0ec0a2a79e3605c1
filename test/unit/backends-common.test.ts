// What every backend does alike: a desired rule set of the other family is refused with one
// error (class, code, wording) before any kernel call, and a namespace option is read the same
// way (a bare name is /run/netns/NAME). The namespace named here does not exist: a backend that
// reached the kernel would fail opening it, so nothing here touches any table.
import { describe, expect, it } from 'vitest';
import { ALL_BACKENDS, createBackend } from '../../src/netfilter/factory.js';
import { detectBackend, legacyTablesPresent } from '../../src/netfilter/detect.js';
import { EdgeMeshError, FamilyMismatchError, SyscallError } from '../../src/errors.js';
import { netnsPath } from '../../src/netns-path.js';
import type { DesiredRuleSet, Family } from '../../src/netfilter/rules.js';

const absent = `em-absent-${process.pid}`;
const emptySet = (family: Family): DesiredRuleSet => ({ family, chains: [{ name: 'EDGE-MESH', rules: [] }], jumps: [] });

describe('every backend', () => {
  it('covers the three backends', () => {
    expect([...ALL_BACKENDS].sort()).toEqual(['iptables-legacy', 'iptables-nft', 'nftables']);
  });

  it.each(ALL_BACKENDS.flatMap((b) => [[b, 'ipv4', 'ipv6'], [b, 'ipv6', 'ipv4']] as const))(
    '%s (%s) refuses a %s rule set with FamilyMismatchError EFAMILY, same wording, before touching the kernel',
    async (name, family, other) => {
      const b = createBackend(name, family, { netns: absent });
      const e = await b.sync(emptySet(other)).then(() => undefined, (x: unknown) => x);
      expect(e).toBeInstanceOf(FamilyMismatchError);
      expect(e).toBeInstanceOf(EdgeMeshError);
      expect(e).toMatchObject({ name: 'FamilyMismatchError', code: 'EFAMILY', given: other, expected: family, message: `desired rule set is ${other}, backend is ${family}` });
    },
  );

  it.each(ALL_BACKENDS)('%s reads a bare namespace name as /run/netns/NAME (the open of that path is what fails)', async (name) => {
    const e = await createBackend(name, 'ipv4', { netns: absent }).sync(emptySet('ipv4')).then(() => undefined, (x: unknown) => x);
    expect(e).toBeInstanceOf(SyscallError);
    expect(e).toMatchObject({ code: 'ENOENT' });
    expect((e as Error).message).toContain(`/run/netns/${absent}`);
  });

  it('detection reads the namespace option the same way', async () => {
    // One at a time: a second call started before the first is awaited would reject unobserved.
    for (const call of [() => legacyTablesPresent(absent), () => detectBackend({ netns: absent, families: ['ipv4'] })]) {
      const e = await call().then(() => undefined, (x: unknown) => x);
      expect((e as Error).message).toContain(`/run/netns/${absent}`);
    }
  });
});

describe('netnsPath', () => {
  it('takes a bare name as /run/netns/NAME, a path as is, nothing as our own namespace ("")', () => {
    expect(netnsPath(undefined)).toBe('');
    expect(netnsPath('')).toBe('');
    expect(netnsPath('em-a')).toBe('/run/netns/em-a');
    expect(netnsPath('/proc/1/ns/net')).toBe('/proc/1/ns/net');
    expect(netnsPath('/run/netns/em-a')).toBe('/run/netns/em-a');
  });
});
