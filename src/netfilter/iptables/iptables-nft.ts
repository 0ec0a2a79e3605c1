// The iptables-nft table: our chains and jumps inside the `ip`/`ip6` `nat` tables that
// iptables-nft manages, written through libnftnl in one netlink batch per transaction, in
// exactly the shape `iptables-nft` itself writes (so `iptables-nft -t nat -nvL`, `-save` and
// kube-proxy's own iptables-nft-restore keep working on the table). Never touches a legacy
// (x_tables) table: nothing here opens one.
import { nativeCall } from '../../errors.js';
import { native } from '../../native/load.js';
import { netnsPath } from '../../netns-path.js';
import type { Family, LiveRule } from '../rules.js';
import type { ApplyResult, IptablesTable, TableInfo, TableSnapshot, TxOp } from '../types.js';
import type { NftLiveRule } from '../../native/binding.js';

export interface NftTableOptions {
  /** Network namespace: a path (/run/netns/NAME, /proc/PID/ns/net) or a bare name (= /run/netns/NAME). Default: the agent's own. */
  netns?: string;
  /** apply() without the read it was planned on (cleanup): batches refused because someone wrote in between are re-applied to a fresh read this many times; default 5. */
  maxAttempts?: number;
}

/** A LiveRule without the nft handle (the handle is an nft detail the model does not carry). */
export function toLiveRule(r: NftLiveRule): LiveRule {
  const out: LiveRule = { target: r.target, packets: r.packets, bytes: r.bytes };
  if (r.src !== undefined) out.src = r.src;
  if (r.dst !== undefined) out.dst = r.dst;
  if (r.dstSet !== undefined) out.dstSet = r.dstSet;
  if (r.protocol !== undefined) out.protocol = r.protocol;
  if (r.comment !== undefined) out.comment = r.comment;
  if (r.toDestination !== undefined) out.toDestination = r.toDestination;
  if (r.unknown?.length) out.unknown = r.unknown;
  return out;
}

export class NftIptablesTable implements IptablesTable {
  readonly backend = 'iptables-nft' as const;
  readonly family: Family;
  readonly table = 'nat';
  private readonly netns: string;
  private readonly maxAttempts: number;

  constructor(family: Family, opts: NftTableOptions = {}) {
    if (family !== 'ipv4' && family !== 'ipv6') throw new TypeError(`family must be 'ipv4' or 'ipv6', not ${String(family)}`);
    this.family = family;
    this.netns = netnsPath(opts.netns);
    this.maxAttempts = opts.maxAttempts ?? 5;
  }

  /** Reads the named chains (built-in or ours) with rules in handle order and their counters. */
  async read(chains: readonly string[]): Promise<TableSnapshot> {
    const res = await nativeCall(() =>
      native().nftRead({ netns: this.netns, family: this.family, table: this.table, dialect: 'xt', chains: [...new Set(chains)] }),
    );
    const map = new Map<string, LiveRule[]>();
    let entries = 0;
    for (const c of res.chains) {
      map.set(c.name, c.rules.map(toLiveRule));
      entries += c.rules.length;
    }
    return { family: this.family, chains: map, info: { size: 0, entries, token: genToken(res.genid), generation: res.genid } };
  }

  /**
   * All operations in one nf_tables batch. With `basis` (the read they were planned on) the batch
   * carries its generation id, and a table changed since is refused with GenerationChangedError
   * (nothing written: read and plan again); without, the ops are re-applied to a fresh read.
   */
  async apply(ops: readonly TxOp[], basis?: TableInfo): Promise<ApplyResult> {
    const t0 = performance.now();
    if (ops.length === 0) return { attempts: 0, lockWaitMs: 0, durationMs: 0 };
    const genid = basis?.generation;
    const res = await nativeCall(() =>
      native().nftApply({
        netns: this.netns,
        family: this.family,
        table: this.table,
        dialect: 'xt',
        ops,
        ...(genid === undefined ? { maxAttempts: this.maxAttempts } : { genid }),
      }),
    );
    // nf_tables needs no xtables lock: concurrent writers are serialised by the generation id.
    return { attempts: res.attempts, lockWaitMs: 0, durationMs: performance.now() - t0, tokenAfter: genToken(res.genid) };
  }

  /** The nf_tables generation id (NFT_MSG_GETGEN): one netlink round trip, no table read. */
  async info(): Promise<TableInfo> {
    const genid = await nativeCall(() => native().nftGenId(this.netns));
    return { size: 0, entries: 0, token: genToken(genid) };
  }
}

export const genToken = (genid: number): string => `nftgen:${genid}`;
