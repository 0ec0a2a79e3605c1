import { describe, expect, it } from 'vitest';
import { addressFamily, canonicalAddress, cidrFamily, tryParseCidr } from '../../src/net.js';

const lenientCidr = (t: string): string | undefined => tryParseCidr(t)?.text;
import { canonicalCidr, cidrContains, compareIps, hostCidr, ipFamily, parseCidr, parseHostPort, parseIp } from '../../src/net.js';

describe('net', () => {
  it('parses and canonicalizes IPv4 and IPv6 (RFC 5952)', () => {
    expect(parseIp('10.0.0.1')).toEqual({ family: 'ipv4', value: 0x0a000001n, text: '10.0.0.1' });
    expect(parseIp('2001:DB8:0:0:1:0:0:1').text).toBe('2001:db8::1:0:0:1');
    expect(parseIp('::').text).toBe('::');
    expect(parseIp('::ffff:10.0.0.1').text).toBe('::ffff:10.0.0.1');
    expect(parseIp('fd00:0:0:0:0:0:0:1').text).toBe('fd00::1');
    expect(parseIp('1:0:0:2:0:0:0:3').text).toBe('1:0:0:2::3');
  });

  it.each(['10.0.0', '10.0.0.256', '010.0.0.1', '1::2::3', 'fe80::1%eth0', '1:2:3:4:5:6:7:8:9', 'abc', ''])('rejects %j', (t) => {
    expect(() => parseIp(t)).toThrow();
    expect(ipFamily(t)).toBeUndefined();
  });

  it('parses CIDRs, clears host bits, checks the prefix', () => {
    expect(canonicalCidr('10.96.1.0/12')).toBe('10.96.0.0/12');
    expect(canonicalCidr('FD00:10::/108')).toBe('fd00:10::/108');
    expect(() => parseCidr('10.10.0.0/33')).toThrow('prefix length must be 0-32');
    expect(() => parseCidr('fd00::/129')).toThrow('prefix length must be 0-128');
    expect(() => parseCidr('10.10.0.0')).toThrow('missing "/prefix-length"');
    expect(cidrContains(parseCidr('10.10.0.0/16'), parseIp('10.10.255.1'))).toBe(true);
    expect(cidrContains(parseCidr('10.10.0.0/16'), parseIp('10.11.0.1'))).toBe(false);
    expect(cidrContains(parseCidr('0.0.0.0/0'), parseIp('1.2.3.4'))).toBe(true);
  });

  it('orders IPv4 before IPv6, numerically', () => {
    expect(['fd00::1', '10.0.0.10', '10.0.0.9', '::1', '9.0.0.0'].sort(compareIps)).toEqual(['9.0.0.0', '10.0.0.9', '10.0.0.10', '::1', 'fd00::1']);
    expect(hostCidr('FD00::1')).toBe('fd00::1/128');
    expect(hostCidr('10.0.0.1')).toBe('10.0.0.1/32');
  });

  it('parses host:port with bracketed IPv6', () => {
    expect(parseHostPort('169.254.96.16:40001')).toEqual({ family: 'ipv4', address: '169.254.96.16', port: 40001 });
    expect(parseHostPort('[FD00::1]:80')).toEqual({ family: 'ipv6', address: 'fd00::1', port: 80 });
    expect(() => parseHostPort('fd00::1:80')).toThrow('[addr]:port');
    expect(() => parseHostPort('10.0.0.1:0')).toThrow('port 0 out of range 1-65535');
    expect(() => parseHostPort('10.0.0.1')).toThrow('missing ":PORT"');
    expect(() => parseHostPort('[10.0.0.1]:80')).toThrow('brackets are only for IPv6');
  });
});


describe('lenient CIDR and address helpers used by the rule backends (src/net.ts)', () => {
  it('canonicalises IPv4 CIDRs the way iptables-save prints them (host bits cleared, /32 for a host)', () => {
    expect(lenientCidr('10.10.0.0/16')).toBe('10.10.0.0/16');
    expect(lenientCidr('10.10.3.7/16')).toBe('10.10.0.0/16');
    expect(lenientCidr('10.10.0.3')).toBe('10.10.0.3/32');
    expect(lenientCidr('0.0.0.0/0')).toBe('0.0.0.0/0');
    expect(lenientCidr('192.168.1.255/25')).toBe('192.168.1.128/25');
    expect(tryParseCidr('172.16.5.4/12')?.text).toBe('172.16.0.0/12');
  });

  it('canonicalises IPv6 CIDRs in RFC 5952 form (lower case, longest zero run compressed)', () => {
    expect(lenientCidr('FD00:10:0:0:0:0:0:0/112')).toBe('fd00:10::/112');
    expect(lenientCidr('fd00:10::1:2/112')).toBe('fd00:10::1:0/112');
    expect(lenientCidr('fd00:10::5/112')).toBe('fd00:10::/112');
    expect(lenientCidr('fd00::3')).toBe('fd00::3/128');
    expect(lenientCidr('2001:db8:0:0:1:0:0:1/128')).toBe('2001:db8::1:0:0:1/128');
    expect(lenientCidr('2001:0db8:0000:0001:0000:0000:0000:0000/64')).toBe('2001:db8:0:1::/64');
    expect(lenientCidr('::/0')).toBe('::/0');
    expect(lenientCidr('1:0:2:0:3:0:4:0/128')).toBe('1:0:2:0:3:0:4:0/128');
    expect(lenientCidr('::ffff:10.0.0.1/128')).toBe('::ffff:10.0.0.1/128');
  });

  it('rejects what is not a CIDR', () => {
    for (const bad of ['', '10.0.0.0/33', '10.0.0/8', '10.0.0.0/', '10.0.0.0/1a', 'fd00::/129', 'fd00:::1/64', 'host', '10.0.0.0/8/8', '1.2.3.4 /32', 'fe80::1%eth0/64', '300.1.1.1/32']) {
      expect(lenientCidr(bad), bad).toBeUndefined();
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
