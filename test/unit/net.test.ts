import { describe, expect, it } from 'vitest';
import { addressFamily, canonicalAddress, canonicalCidr, cidrFamily, parseCidr } from '../../src/net.js';

describe('CIDR and address helpers (src/net.ts)', () => {
  it('canonicalises IPv4 CIDRs the way iptables-save prints them (host bits cleared, /32 for a host)', () => {
    expect(canonicalCidr('10.10.0.0/16')).toBe('10.10.0.0/16');
    expect(canonicalCidr('10.10.3.7/16')).toBe('10.10.0.0/16');
    expect(canonicalCidr('10.10.0.3')).toBe('10.10.0.3/32');
    expect(canonicalCidr('0.0.0.0/0')).toBe('0.0.0.0/0');
    expect(canonicalCidr('192.168.1.255/25')).toBe('192.168.1.128/25');
    expect(parseCidr('172.16.5.4/12')).toEqual({ family: 'ipv4', address: '172.16.0.0', prefix: 12, cidr: '172.16.0.0/12' });
  });

  it('canonicalises IPv6 CIDRs in RFC 5952 form (lower case, longest zero run compressed)', () => {
    expect(canonicalCidr('FD00:10:0:0:0:0:0:0/112')).toBe('fd00:10::/112');
    expect(canonicalCidr('fd00:10::1:2/112')).toBe('fd00:10::1:0/112');
    expect(canonicalCidr('fd00:10::5/112')).toBe('fd00:10::/112');
    expect(canonicalCidr('fd00::3')).toBe('fd00::3/128');
    expect(canonicalCidr('2001:db8:0:0:1:0:0:1/128')).toBe('2001:db8::1:0:0:1/128');
    expect(canonicalCidr('2001:0db8:0000:0001:0000:0000:0000:0000/64')).toBe('2001:db8:0:1::/64');
    expect(canonicalCidr('::/0')).toBe('::/0');
    expect(canonicalCidr('1:0:2:0:3:0:4:0/128')).toBe('1:0:2:0:3:0:4:0/128');
    expect(canonicalCidr('::ffff:10.0.0.1/128')).toBe('::ffff:10.0.0.1/128');
  });

  it('rejects what is not a CIDR', () => {
    for (const bad of ['', '10.0.0.0/33', '10.0.0/8', '10.0.0.0/', '10.0.0.0/1a', 'fd00::/129', 'fd00:::1/64', 'host', '10.0.0.0/8/8', '1.2.3.4 /32', 'fe80::1%eth0/64', '300.1.1.1/32']) {
      expect(canonicalCidr(bad), bad).toBeUndefined();
    }
  });

  it('tells the family of an address or CIDR', () => {
    expect(addressFamily('169.254.96.16')).toBe('ipv4');
    expect(addressFamily('fd00::96:16')).toBe('ipv6');
    expect(addressFamily('10.0.0.0/8')).toBeUndefined();
    expect(addressFamily('example.com')).toBeUndefined();
    expect(cidrFamily('fd00:10::/112')).toBe('ipv6');
    expect(cidrFamily('10.10.0.0/16')).toBe('ipv4');
    expect(canonicalAddress('FD00:0:0::0001')).toBe('fd00::1');
    expect(canonicalAddress('10.0.0.1/32')).toBeUndefined();
  });
});
