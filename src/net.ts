// IP address and CIDR parsing, canonical text and ordering. Pure and self-contained: callers
// wrap the reason of a NetParseError with the flag or field they were parsing.
import type { Family } from './netfilter/rules.js';

/** A malformed address, CIDR or host:port. `message` is the reason only ("prefix length must be 0-32"). */
export class NetParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NetParseError';
  }
}

export interface ParsedIp {
  family: Family;
  /** The address as an unsigned integer (32 or 128 bits). */
  value: bigint;
  /** Canonical text: dotted quad, or RFC 5952 for IPv6. */
  text: string;
}

export interface ParsedCidr {
  family: Family;
  /** The network address (host bits cleared). */
  network: bigint;
  prefix: number;
  /** Canonical "network/prefix". */
  text: string;
}

export interface HostPort {
  family: Family;
  /** Canonical address, without brackets. */
  address: string;
  port: number;
}

export const familyBits = (family: Family): number => (family === 'ipv4' ? 32 : 128);

function parseIPv4(text: string): bigint | string {
  const parts = text.split('.');
  if (parts.length !== 4) return 'not an IPv4 address';
  let value = 0n;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p)) return 'not an IPv4 address';
    if (p.length > 1 && p.startsWith('0')) return `octet "${p}" has a leading zero (ambiguous)`;
    const n = Number(p);
    if (n > 255) return `octet ${n} out of range 0-255`;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIPv6(text: string): bigint | string {
  if (text.includes('%')) return 'zone index not allowed';
  let head = text;
  let tailV4: bigint | undefined;
  const lastColon = text.lastIndexOf(':');
  if (lastColon >= 0 && text.slice(lastColon + 1).includes('.')) {
    const v4 = parseIPv4(text.slice(lastColon + 1));
    if (typeof v4 === 'string') return `embedded IPv4: ${v4}`;
    tailV4 = v4;
    head = text.slice(0, lastColon + 1) + '0:0'; // placeholder for two groups
  }
  const halves = head.split('::');
  if (halves.length > 2) return 'more than one "::"';
  const parseGroups = (s: string): number[] | string => {
    if (s === '') return [];
    const out: number[] = [];
    for (const g of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return `bad group "${g}"`;
      out.push(parseInt(g, 16));
    }
    return out;
  };
  const left = parseGroups(halves[0] ?? '');
  if (typeof left === 'string') return left;
  let groups: number[];
  if (halves.length === 2) {
    const right = parseGroups(halves[1] ?? '');
    if (typeof right === 'string') return right;
    const missing = 8 - left.length - right.length;
    if (missing < 1) return 'too many groups';
    groups = [...left, ...new Array<number>(missing).fill(0), ...right];
  } else {
    groups = left;
    if (groups.length !== 8) return 'wrong number of groups';
  }
  let value = 0n;
  for (const g of groups) value = (value << 16n) | BigInt(g);
  if (tailV4 !== undefined) value = (value & ~0xffffffffn) | tailV4;
  return value;
}

function formatIPv4(value: bigint): string {
  return [24n, 16n, 8n, 0n].map((s) => String((value >> s) & 0xffn)).join('.');
}

function formatIPv6(value: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((value >> BigInt(i * 16)) & 0xffffn));
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on ties.
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
  // As glibc's inet_ntop (which the native backends print with): the embedded IPv4 address of
  // an IPv4-compatible (::a.b.c.d) or IPv4-mapped (::ffff:a.b.c.d) address is dotted.
  if (bestStart === 0 && (bestLen === 6 || (bestLen === 5 && groups[5] === 0xffff))) {
    const v4 = formatIPv4(value & 0xffffffffn);
    return bestLen === 6 ? `::${v4}` : `::ffff:${v4}`;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function formatIp(family: Family, value: bigint): string {
  return family === 'ipv4' ? formatIPv4(value) : formatIPv6(value);
}

/** Parses an IPv4 or IPv6 address; throws NetParseError with the reason. */
export function parseIp(text: string): ParsedIp {
  if (typeof text !== 'string' || text === '') throw new NetParseError('empty address');
  const family: Family = text.includes(':') ? 'ipv6' : 'ipv4';
  const v = family === 'ipv4' ? parseIPv4(text) : parseIPv6(text);
  if (typeof v === 'string') throw new NetParseError(v);
  return { family, value: v, text: formatIp(family, v) };
}

/** The family of a valid address, undefined for anything else. */
export function ipFamily(text: string): Family | undefined {
  try {
    return parseIp(text).family;
  } catch {
    return undefined;
  }
}

/** Parses "addr/prefix"; host bits are cleared ("10.96.1.0/12" -> 10.96.0.0/12). */
export function parseCidr(text: string): ParsedCidr {
  if (typeof text !== 'string' || text === '') throw new NetParseError('empty CIDR');
  const slash = text.indexOf('/');
  if (slash < 0) throw new NetParseError('missing "/prefix-length"');
  const ip = parseIp(text.slice(0, slash));
  const bits = familyBits(ip.family);
  const p = text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(p) || Number(p) > bits) throw new NetParseError(`prefix length must be 0-${bits}`);
  const prefix = Number(p);
  const mask = prefixMask(ip.family, prefix);
  const network = ip.value & mask;
  return { family: ip.family, network, prefix, text: `${formatIp(ip.family, network)}/${prefix}` };
}

function prefixMask(family: Family, prefix: number): bigint {
  const bits = BigInt(familyBits(family));
  const all = (1n << bits) - 1n;
  return prefix === 0 ? 0n : (all << (bits - BigInt(prefix))) & all;
}

export function canonicalCidr(text: string): string {
  return parseCidr(text).text;
}

/** "ip/32" or "ip/128" in canonical form. */
export function hostCidr(ip: string): string {
  const p = parseIp(ip);
  return `${p.text}/${familyBits(p.family)}`;
}

export function cidrContains(cidr: ParsedCidr, ip: ParsedIp): boolean {
  return cidr.family === ip.family && (ip.value & prefixMask(cidr.family, cidr.prefix)) === cidr.network;
}

/** True when one of the two contains the other. */
export function cidrsOverlap(a: ParsedCidr, b: ParsedCidr): boolean {
  if (a.family !== b.family) return false;
  const p = Math.min(a.prefix, b.prefix);
  const m = prefixMask(a.family, p);
  return (a.network & m) === (b.network & m);
}

/** Orders IPv4 before IPv6, then numerically. Accepts text or parsed addresses. */
export function compareIps(a: string | ParsedIp, b: string | ParsedIp): number {
  const pa = typeof a === 'string' ? parseIp(a) : a;
  const pb = typeof b === 'string' ? parseIp(b) : b;
  if (pa.family !== pb.family) return pa.family === 'ipv4' ? -1 : 1;
  return pa.value < pb.value ? -1 : pa.value > pb.value ? 1 : 0;
}

/** Parses "IP:PORT" or "[IPv6]:PORT". `allowZero`: port 0 (a listener that picks a free port). */
export function parseHostPort(text: string, opts: { allowZero?: boolean } = {}): HostPort {
  if (typeof text !== 'string' || text === '') throw new NetParseError('empty address');
  let host: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') throw new NetParseError('expected "[IPv6]:PORT"');
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!host.includes(':')) throw new NetParseError('brackets are only for IPv6 addresses');
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) throw new NetParseError('missing ":PORT"');
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(':')) throw new NetParseError('an IPv6 address must be written "[addr]:port"');
  }
  const ip = parseIp(host);
  const port = opts.allowZero && portText === '0' ? 0 : parsePort(portText);
  return { family: ip.family, address: ip.text, port };
}

/** A port number 1-65535 from text; throws NetParseError. */
export function parsePort(text: string): number {
  if (!/^\d{1,5}$/.test(text)) throw new NetParseError(`port "${text}" is not a number`);
  const n = Number(text);
  if (n < 1 || n > 65535) throw new NetParseError(`port ${n} out of range 1-65535`);
  return n;
}

export function formatHostPortText(hp: { address: string; port: number }): string {
  return hp.address.includes(':') ? `[${hp.address}]:${hp.port}` : `${hp.address}:${hp.port}`;
}

// Lenient forms for validators that word their own errors (the rule backends): undefined
// instead of an exception. A bare address is a host CIDR, as iptables reads `-d 10.0.0.1`.

/** Family of an address, undefined when it is not one. */
export const addressFamily = ipFamily;

/** Canonical text of an address, or undefined. */
export function canonicalAddress(text: string): string | undefined {
  try {
    return parseIp(text).text;
  } catch {
    return undefined;
  }
}

/** Parses "addr/prefix" or a bare address (a host), or undefined when invalid. */
export function tryParseCidr(text: string): ParsedCidr | undefined {
  if (typeof text !== 'string' || text.length > 64) return undefined;
  try {
    return parseCidr(text.includes('/') ? text : hostCidr(text));
  } catch {
    return undefined;
  }
}

// Canonical CIDRs by input text: a full sync checks every rule of the desired state (10 000
// ignore rules on a big cluster) and the texts repeat from sync to sync. Pure, so safe to memo;
// bounded by clearing.
const cidrMemo = new Map<string, { family: Family; text: string } | null>();
/** tryParseCidr's family and canonical text, memoised; undefined when not a CIDR or address. */
export function memoCanonicalCidr(text: string): { family: Family; text: string } | undefined {
  let hit = cidrMemo.get(text);
  if (hit === undefined) {
    const p = tryParseCidr(text);
    hit = p ? { family: p.family, text: p.text } : null;
    if (cidrMemo.size >= 1 << 16) cidrMemo.clear();
    cidrMemo.set(text, hit);
  }
  return hit ?? undefined;
}

/** Family of a CIDR or bare address, or undefined. */
export function cidrFamily(text: string): Family | undefined {
  return tryParseCidr(text)?.family;
}
