import { describe, expect, it } from 'vitest';
import { canonicalCidr, cidrContains, compareIps, hostCidr, ipFamily, parseCidr, parseHostPort, parseIp } from '../../src/net.js';

describe('net', () => {
  it('parses and canonicalizes IPv4 and IPv6 (RFC 5952)', () => {
    expect(parseIp('10.0.0.1')).toEqual({ family: 'ipv4', value: 0x0a000001n, text: '10.0.0.1' });
    expect(parseIp('2001:DB8:0:0:1:0:0:1').text).toBe('2001:db8::1:0:0:1');
    expect(parseIp('::').text).toBe('::');
    expect(parseIp('::ffff:10.0.0.1').text).toBe('::ffff:a00:1');
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
