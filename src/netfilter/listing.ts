// `iptables -t nat -nvL --line-numbers` style listing of rules we read, for `status` and the demo.
import { formatHostPort, renderRule, type Family, type LiveRule } from './rules.js';
import type { SyncOutcome, TxOp } from './types.js';

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

/** One address as iptables -n and nft print it: a /32 (or /128) without the prefix. */
export function withoutHostPrefix(cidr: string, family: Family): string {
  const full = family === 'ipv4' ? '/32' : '/128';
  return cidr.endsWith(full) ? cidr.slice(0, -full.length) : cidr;
}

function shortAddr(cidr: string | undefined, family: Family): string {
  return cidr ? withoutHostPrefix(cidr, family) : anyAddr(family);
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

/**
 * A set and all its elements in ipset's save notation (`create`, then one `add` per element),
 * the iptables-world counterpart of the nftables ignore set; `-m set --match-set` looks it up.
 */
export function renderSet(s: NonNullable<SyncOutcome['sets']>[number]): string[] {
  return [
    `create ${s.name} hash:ip family ${s.family === 'ipv4' ? 'inet' : 'inet6'} counters comment`,
    ...s.elements.map((e) => `add ${s.name} ${withoutHostPrefix(e.key, s.family)}${e.comment === undefined ? '' : ` comment ${JSON.stringify(e.comment)}`}`),
  ];
}

/** A transaction in iptables-save words, one line per rule touched, for `run --once` and logs. */
export function renderOps(ops: readonly TxOp[]): string[] {
  const lines: string[] = [];
  for (const op of ops) {
    switch (op.op) {
      case 'flushChain':
        lines.push(`-F ${op.chain}`);
        break;
      case 'deleteChain':
        lines.push(`-X ${op.chain}`);
        break;
      case 'replaceChain':
        lines.push(`:${op.chain} - [0:0]`, ...op.rules.map((r) => renderRule(op.chain, r)));
        break;
      case 'insertRule':
        lines.push(renderRule(op.chain, op.rule, '-I').replace(/^-I (\S+)/, `-I $1 ${op.position ?? 1}`));
        break;
      case 'deleteRule':
        lines.push(renderRule(op.chain, op.rule, '-D'));
        break;
      case 'moveRule':
        lines.push(`${renderRule(op.chain, op.rule, '-D')}`, renderRule(op.chain, op.rule, '-I').replace(/^-I (\S+)/, `-I $1 ${op.position}`));
        break;
    }
  }
  return lines;
}
