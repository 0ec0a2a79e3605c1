// `iptables -t nat -nvL --line-numbers` style listing of rules we read, for `status` and the demo.
import { formatHostPort, type Family, type LiveRule } from '../rules.js';

/** Packet/byte counts as iptables -v prints them: exact up to 99999, then K/M/G/T in steps of 1000. */
export function formatCount(n: number): string {
  if (n <= 99999) return String(n);
  const units = ['K', 'M', 'G', 'T', 'P'];
  let v = n;
  for (const u of units) {
    v = Math.floor(v / 1000);
    if (v <= 9999) return `${v}${u}`;
  }
  return `${v}P`;
}

function anyAddr(family: Family): string {
  return family === 'ipv4' ? '0.0.0.0/0' : '::/0';
}

/** iptables -n prints a /32 (or /128) without the prefix. */
function shortAddr(cidr: string | undefined, family: Family): string {
  if (!cidr) return anyAddr(family);
  const full = family === 'ipv4' ? '/32' : '/128';
  return cidr.endsWith(full) ? cidr.slice(0, -full.length) : cidr;
}

export interface ListedChain {
  name: string;
  rules: readonly LiveRule[];
  /** "policy ACCEPT" for built-in chains; number of references for user chains. */
  header: string;
  /** Show at most this many rules (the rest are summarised); default all. */
  limit?: number;
}

export function renderChains(family: Family, chains: readonly ListedChain[]): string {
  const out: string[] = [];
  for (const c of chains) {
    out.push(`Chain ${c.name} (${c.header})`);
    const rows: string[][] = [['num', 'pkts', 'bytes', 'target', 'prot', 'opt', 'in', 'out', 'source', 'destination', '']];
    const shown = c.limit === undefined ? c.rules : c.rules.slice(0, c.limit);
    shown.forEach((r, i) => {
      let extra = r.comment !== undefined ? `/* ${r.comment} */` : '';
      if (r.unknown?.length) extra += `${extra ? ' ' : ''}(also: ${r.unknown.join(', ')})`;
      if (r.target === 'DNAT' && r.toDestination) extra += ` to:${formatHostPort(r.toDestination.address, r.toDestination.port)}`;
      rows.push([
        String(i + 1),
        formatCount(r.packets),
        formatCount(r.bytes),
        r.target,
        r.protocol ?? 'all',
        '--',
        '*',
        '*',
        shortAddr(r.src, family),
        shortAddr(r.dst, family),
        extra.trim(),
      ]);
    });
    const widths = rows[0]!.map((_, col) => Math.max(...rows.map((row) => (row[col] ?? '').length)));
    for (const row of rows) {
      out.push(
        row
          .map((cell, col) => (col === 1 || col === 2 ? cell.padStart(widths[col]!) : cell.padEnd(widths[col]!)))
          .join(' ')
          .trimEnd(),
      );
    }
    if (c.limit !== undefined && c.rules.length > c.limit) out.push(`... ${c.rules.length - c.limit} more rules`);
    out.push('');
  }
  return out.join('\n');
}
