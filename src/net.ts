// IP address and CIDR helpers: parse, canonicalise (the form iptables-save prints), family.
import { isIPv4, isIPv6 } from 'node:net';
import type { Family } from './rules.js';

/** Family of an IP address (no prefix), or undefined when it is not one. */
export function addressFamily(address: string): Family | undefined {
  if (isIPv4(address) && /^\d+\.\d+\.\d+\.\d+$/.test(address)) return 'ipv4';
  if (isIPv6(address) && !address.includes('%')) return 'ipv6';
  return undefined;
}

function v4ToBytes(a: string): number[] {
  return a.split('.').map((x) => Number(x));
}

function v6ToBytes(a: string): number[] {
  let addr = a;
  // Embedded IPv4 tail (::ffff:1.2.3.4).
  const m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(addr);
  if (m) {
    const b = v4ToBytes(m[2]!);
    addr = `${m[1]}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const [head, tail] = addr.includes('::') ? addr.split('::') : [addr, undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined ? (tail ? tail.split(':') : []) : [];
  const groups = tail !== undefined ? [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t] : h;
  const out: number[] = [];
  for (const g of groups) {
    const n = parseInt(g, 16);
    out.push((n >> 8) & 0xff, n & 0xff);
  }
  return out;
}

function bytesToV4(b: number[]): string {
  return b.join('.');
}

/** RFC 5952 text (what inet_ntop and iptables print). */
function bytesToV6(b: number[]): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((b[i]! << 8) | b[i + 1]!);
  // IPv4-mapped addresses print with a dotted tail, as glibc does.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${b.slice(12).join('.')}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Canonical address text of its family ("fd00::1", "10.0.0.1"), or undefined when invalid. */
export function canonicalAddress(address: string): string | undefined {
  const fam = addressFamily(address);
  if (fam === 'ipv4') return bytesToV4(v4ToBytes(address));
  if (fam === 'ipv6') return bytesToV6(v6ToBytes(address));
  return undefined;
}

export interface ParsedCidr {
  family: Family;
  /** Network address, host bits cleared, canonical text. */
  address: string;
  prefix: number;
  /** "address/prefix" */
  cidr: string;
}

/**
 * Parses "a.b.c.d/len", "x::/len" or a bare address (a host: /32 or /128), clears host bits as
 * iptables does, and returns the canonical form. Undefined when invalid.
 */
export function parseCidr(text: string): ParsedCidr | undefined {
  if (typeof text !== 'string' || text.length > 64) return undefined;
  const slash = text.indexOf('/');
  const addr = slash < 0 ? text : text.slice(0, slash);
  const family = addressFamily(addr);
  if (!family) return undefined;
  const bits = family === 'ipv4' ? 32 : 128;
  let prefix = bits;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p)) return undefined;
    prefix = Number(p);
    if (prefix > bits) return undefined;
  }
  const bytes = family === 'ipv4' ? v4ToBytes(addr) : v6ToBytes(addr);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, prefix - i * 8));
    const mask = keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
    bytes[i] = bytes[i]! & mask;
  }
  const address = family === 'ipv4' ? bytesToV4(bytes) : bytesToV6(bytes);
  return { family, address, prefix, cidr: `${address}/${prefix}` };
}

/** Canonical "address/prefix", or undefined when invalid. */
export function canonicalCidr(text: string): string | undefined {
  return parseCidr(text)?.cidr;
}

/** Family of a CIDR or address, or undefined. */
export function cidrFamily(text: string): Family | undefined {
  return parseCidr(text)?.family;
}
