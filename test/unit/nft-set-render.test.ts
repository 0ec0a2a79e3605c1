// The ignore set of the nftables backend as the operator sees it: in `status` (nft list
// syntax), in `run --once` (ipset notation beside iptables rules), and in rule comparison.
import { describe, expect, it } from 'vitest';
import { renderSet } from '../../src/netfilter/listing.js';
import type { NftSet } from '../../src/native/binding.js';
import { renderNftTable } from '../../src/netfilter/nftables/nftables.js';
import { renderRule, sameRule } from '../../src/netfilter/rules.js';

const lookup = { dstSet: 'ignored', comment: 'ignored services', target: 'RETURN' };

describe('the nftables ignore set, rendered', () => {
  it('a set lookup is its own rule: not equal to the same rule without it, and rendered as iptables writes a set match', () => {
    expect(sameRule(lookup, { comment: 'ignored services', target: 'RETURN' })).toBe(false);
    expect(sameRule(lookup, { ...lookup })).toBe(true);
    expect(renderRule('EDGE-MESH', lookup)).toBe('-A EDGE-MESH -m set --match-set ignored dst -m comment --comment "ignored services" -j RETURN');
  });

  it('run --once shows the set in ipset save notation, addresses without their host prefix', () => {
    expect(renderSet({ name: 'ignored', family: 'ipv6', elements: [{ key: 'fd00:10::3/128', comment: 'ignore kube-system/coredns service' }, { key: 'fd00:10::1/128' }] })).toEqual([
      'create ignored hash:ip family inet6 counters comment',
      'add ignored fd00:10::3 comment "ignore kube-system/coredns service"',
      'add ignored fd00:10::1',
    ]);
  });

  it('status lists the set before the chains, elements sorted by address with their counters, as nft list does', () => {
    const set: NftSet = {
      name: 'ignored',
      handle: 1,
      keyType: 7,
      keyLen: 4,
      flags: 0,
      counter: true,
      ours: true,
      elements: [
        { key: '10.10.0.10/32', comment: 'ignore b/y service', packets: 2, bytes: 120 },
        { key: '10.10.0.9/32', comment: 'ignore a/x service', packets: 0, bytes: 0 },
      ],
    };
    const text = renderNftTable('ipv4', 'edgemesh', true, [{ name: 'EDGE-MESH', handle: 2, base: false, use: 1, rules: [{ ...lookup, packets: 5, bytes: 300, handle: 3 }] }], [set]);
    expect(text).toBe(
      [
        'table ip edgemesh {',
        '\tset ignored {',
        '\t\ttype ipv4_addr',
        '\t\tcounter',
        '\t\telements = { 10.10.0.9 counter packets 0 bytes 0 comment "ignore a/x service",',
        '\t\t\t     10.10.0.10 counter packets 2 bytes 120 comment "ignore b/y service" }',
        '\t}',
        '',
        '\tchain EDGE-MESH {',
        '\t\tip daddr @ignored counter packets 5 bytes 300 return comment "ignored services"',
        '\t}',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('a set of another shape is listed as such, not as ours', () => {
    const odd: NftSet = { name: 'ignored', handle: 1, keyType: 13, keyLen: 2, flags: 1, counter: false, ours: false, elements: [] };
    expect(renderNftTable('ipv4', 'edgemesh', true, [], [odd])).toContain('# not the address set with counters this backend writes: key type 13, length 2, flags 1');
  });
});
