// Reads what tcpdump wrote (classic pcap, Ethernet, IPv4/TCP) and puts the TCP streams back
// together, for tests that check which bytes crossed a link: no plaintext, TLS records only.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { Netns } from './netns.js';

export interface TcpFlow {
  /** "src:sport>dst:dport", the direction of the first SYN seen (the connecting side first). */
  key: string;
  client: string;
  server: string;
  /** Payload from the connecting side, and from the accepting side, in sequence order. */
  up: Buffer;
  down: Buffer;
  /** Whether the SYN of each direction was captured (the streams start at their beginning). */
  complete: boolean;
  /** Bytes missing in a stream (a gap in sequence numbers). */
  gaps: number;
}

interface Half {
  isn?: number;
  segs: Map<number, Buffer>;
}

/** Parses a pcap file (linktype Ethernet) and reassembles every IPv4 TCP connection in it. */
export function tcpFlows(pcap: Buffer): TcpFlow[] {
  if (pcap.length < 24) return [];
  const magic = pcap.readUInt32LE(0);
  const le = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!le && pcap.readUInt32BE(0) !== 0xa1b2c3d4 && pcap.readUInt32BE(0) !== 0xa1b23c4d) throw new Error('not a pcap file');
  const u32 = (o: number) => (le ? pcap.readUInt32LE(o) : pcap.readUInt32BE(o));
  const linktype = u32(20);
  if (linktype !== 1) throw new Error(`pcap linktype ${linktype}: only Ethernet (1) is read here`);
  const halves = new Map<string, Half>();
  const order: string[] = [];
  let off = 24;
  while (off + 16 <= pcap.length) {
    const incl = u32(off + 8);
    const pkt = pcap.subarray(off + 16, off + 16 + incl);
    off += 16 + incl;
    if (pkt.length < 14 + 20 || pkt.readUInt16BE(12) !== 0x0800) continue;
    const ip = pkt.subarray(14);
    const ihl = (ip[0]! & 0x0f) * 4;
    if (ip[9] !== 6) continue;
    const totalLen = ip.readUInt16BE(2);
    const src = `${ip[12]}.${ip[13]}.${ip[14]}.${ip[15]}`;
    const dst = `${ip[16]}.${ip[17]}.${ip[18]}.${ip[19]}`;
    const tcp = ip.subarray(ihl, totalLen);
    if (tcp.length < 20) continue;
    const sport = tcp.readUInt16BE(0);
    const dport = tcp.readUInt16BE(2);
    const seq = tcp.readUInt32BE(4);
    const doff = (tcp[12]! >> 4) * 4;
    const flags = tcp[13]!;
    const key = `${src}:${sport}>${dst}:${dport}`;
    let h = halves.get(key);
    if (!h) {
      h = { segs: new Map() };
      halves.set(key, h);
      order.push(key);
    }
    if (flags & 0x02) h.isn = seq;
    const payload = tcp.subarray(doff);
    if (payload.length > 0 && !h.segs.has(seq)) h.segs.set(seq, Buffer.from(payload));
  }

  const assemble = (h: Half | undefined): { data: Buffer; gaps: number; started: boolean } => {
    if (!h || h.segs.size === 0) return { data: Buffer.alloc(0), gaps: 0, started: h?.isn !== undefined };
    const base = h.isn !== undefined ? (h.isn + 1) >>> 0 : Math.min(...h.segs.keys());
    const parts = [...h.segs.entries()].map(([s, b]) => ({ rel: (s - base) >>> 0, b })).sort((a, b) => a.rel - b.rel);
    const out: Buffer[] = [];
    let at = 0;
    let gaps = 0;
    for (const { rel, b } of parts) {
      if (rel + b.length <= at) continue; // a retransmission of what we have
      if (rel > at) {
        gaps += rel - at;
        at = rel;
      }
      out.push(b.subarray(at - rel));
      at = rel + b.length;
    }
    return { data: Buffer.concat(out), gaps, started: h.isn !== undefined };
  };

  const flows: TcpFlow[] = [];
  const seen = new Set<string>();
  for (const key of order) {
    if (seen.has(key)) continue;
    const [a, b] = key.split('>') as [string, string];
    const rev = `${b}>${a}`;
    seen.add(key);
    seen.add(rev);
    const h = halves.get(key)!;
    const r = halves.get(rev);
    // The connecting side is the one whose SYN came without an ACK: the first seen, as a rule.
    const up = assemble(h);
    const down = assemble(r);
    flows.push({ key, client: a, server: b, up: up.data, down: down.data, complete: up.started && down.started, gaps: up.gaps + down.gaps });
  }
  return flows;
}

export interface TlsRecords {
  /** Every record is well formed and they chain to the end of the bytes exactly. */
  ok: boolean;
  count: number;
  types: Record<number, number>;
  /** Why not ok: the offset and what was found there. */
  error?: string;
}

/**
 * Checks that `b` is a sequence of TLS records: content type 0x14..0x17, record version 0x0303
 * (0x0301 allowed for the very first record when `firstMayBe0301`: a TLS 1.3 ClientHello's
 * legacy record version), length at most 2^14 + 256, each record ending where the next begins
 * and the last one at the end of `b`.
 */
export function tlsRecords(b: Buffer, firstMayBe0301 = false): TlsRecords {
  const types: Record<number, number> = {};
  let off = 0;
  let count = 0;
  while (off < b.length) {
    if (off + 5 > b.length) return { ok: false, count, types, error: `a record header cut at ${off} of ${b.length}` };
    const type = b[off]!;
    const ver = b.readUInt16BE(off + 1);
    const len = b.readUInt16BE(off + 3);
    if (type < 0x14 || type > 0x17) return { ok: false, count, types, error: `content type 0x${type.toString(16)} at ${off}` };
    if (ver !== 0x0303 && !(ver === 0x0301 && count === 0 && firstMayBe0301)) return { ok: false, count, types, error: `version 0x${ver.toString(16)} at ${off}` };
    if (len > (1 << 14) + 256) return { ok: false, count, types, error: `length ${len} at ${off}` };
    if (off + 5 + len > b.length) return { ok: false, count, types, error: `record at ${off} of length ${len} runs past the end (${b.length})` };
    types[type] = (types[type] ?? 0) + 1;
    count++;
    off += 5 + len;
  }
  return { ok: true, count, types };
}

/** tcpdump in a namespace writing a pcap, bounded by packet count (-c) and time (timeout). */
export async function capture(ns: Netns, iface: string, file: string, o: { filter?: string; maxPackets?: number; maxSeconds?: number } = {}) {
  const child: ChildProcess = ns.spawn('timeout', ['-s', 'INT', String(o.maxSeconds ?? 30), 'tcpdump', '-i', iface, '-nn', '-U', '--immediate-mode', '-s', '0', '-Z', 'root', '-c', String(o.maxPackets ?? 5000), '-w', file, ...(o.filter ?? 'tcp').split(' ')]);
  let stderr = '';
  const exited = new Promise<void>((r) => child.on('exit', () => r()));
  await new Promise<void>((resolveP, reject) => {
    const timer = setTimeout(() => reject(new Error(`tcpdump on ${iface}: not listening in 5 s: ${stderr}`)), 5_000);
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
      if (stderr.includes('listening on')) {
        clearTimeout(timer);
        resolveP();
      }
    });
    child.on('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`tcpdump on ${iface} exited ${c}: ${stderr}`));
    });
  });
  return {
    async stop(): Promise<Buffer> {
      if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGINT');
      await exited;
      return readFileSync(file);
    },
  };
}
