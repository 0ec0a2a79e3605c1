// The two interfaces every netfilter backend offers (DESIGN "Backends").
//
// IptablesTable: the low-level table of one family, as libiptc (iptables-legacy) or an
// iptables-nft writer sees it: read chains, apply a transaction atomically.
// NatBackend: what the reconciler drives: converge to a DesiredRuleSet, check order, clean up.
import type { DesiredRuleSet, Family, LiveRule, Rule } from './rules.js';

export const BACKEND_NAMES = ['iptables-legacy', 'iptables-nft', 'nftables'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Cheap fingerprint of a table: changes when anybody writes it (legacy: IPT_SO_GET_INFO). */
export interface TableInfo {
  /** Bytes of the table blob (legacy) or 0. */
  size: number;
  /** Number of entries (legacy) or rules. */
  entries: number;
  /** A token that differs whenever the table may have changed (legacy: `${size}/${entries}/${digest of the built-in chains}`; nft: generation id). */
  token: string;
  /**
   * Legacy only: where the built-in chains' rules start and end in the table blob. A write that
   * touched only user-defined chains (kube-proxy's usual sync) leaves it as it was; one that put
   * a rule into PREROUTING or OUTPUT moves it. Ends with `#` and the built-in chains' digest, so
   * a reordering inside them counts as a move too.
   */
  builtinLayout?: string;
  /** nf_tables only: the generation id the read is consistent with (a transaction planned on it is guarded by it). */
  generation?: number;
}

export interface TableSnapshot {
  family: Family;
  /** The chains asked for that exist, with their rules in order. A missing chain is absent. */
  chains: Map<string, LiveRule[]>;
  info: TableInfo;
}

/**
 * One operation of a transaction: what a plan emits. Our chains are only ever replaced whole
 * (the native minimal edit decides which rules stay, go or come); a built-in chain is only
 * touched at our jump (insert it, move it first, delete a duplicate or residue). Positions are
 * 1-based like iptables -I. Operations that name a rule (deleteRule, moveRule) find it by
 * equality of the modelled fields (sameRule), so that a transaction re-applied on a fresh read
 * after EAGAIN still touches the intended rule.
 */
export type TxOp =
  /** Creates the chain if missing; its contents become exactly `rules`; unchanged rules keep their counters. */
  | { op: 'replaceChain'; chain: string; rules: Rule[] }
  | { op: 'flushChain'; chain: string }
  | { op: 'deleteChain'; chain: string }
  | { op: 'insertRule'; chain: string; rule: Rule; position?: number }
  | { op: 'moveRule'; chain: string; rule: Rule; position: number }
  | { op: 'deleteRule'; chain: string; rule: Rule };

export interface ApplyResult {
  /** Commits attempted (1 + retries after a lost race). */
  attempts: number;
  /** Milliseconds spent waiting for the xtables lock. */
  lockWaitMs: number;
  /** Milliseconds for the whole apply (lock wait, read, commit). */
  durationMs: number;
  /**
   * The change token of the table as our commit left it, read before anybody else could write
   * (legacy: under the xtables lock; nft: the generation our batch made). Every table returns
   * it for a commit; absent only when nothing was committed. The watchdog starts from it.
   */
  tokenAfter?: string;
  /** Legacy: TableInfo.builtinLayout as our commit left it. */
  builtinLayoutAfter?: string;
}

/** A read and a write under one lock (see IptablesTable.begin). */
export interface TableTransaction {
  snapshot: TableSnapshot;
  /** Applies ops to the snapshot's table and commits; ends the transaction. */
  commit(ops: readonly TxOp[]): Promise<ApplyResult>;
  /** Ends the transaction without writing (no-op after commit). */
  abort(): Promise<void>;
}

export interface IptablesTable {
  readonly backend: BackendName;
  readonly family: Family;
  /** Reads the named chains (built-in or user-defined) with their rules and counters. */
  read(chains: readonly string[]): Promise<TableSnapshot>;
  /**
   * Applies every operation in one atomic commit, or none of them. An empty list commits nothing.
   * `basis`: the info of the read the ops were planned on; a table that can tell (nf_tables: its
   * generation) refuses to write when the table changed since, with GenerationChangedError.
   */
  apply(ops: readonly TxOp[], basis?: TableInfo): Promise<ApplyResult>;
  /** Cheap change detection, without reading the table. */
  info(): Promise<TableInfo>;
  /**
   * Optional: the watchdog's token, as info().token but allowed to reuse work while nothing can
   * have changed (legacy: the built-in chains' digest is recomputed only after xtables lock
   * activity or on an adaptive period).
   */
  watchToken?(): Promise<string>;
  /** Optional: the info watchToken computed last, when it is younger than `maxAgeMs` (spares a second digest right after). */
  recentInfo?(maxAgeMs: number): TableInfo | undefined;
  /** Optional: releases what watchToken holds (an inotify descriptor). */
  close?(): void;
  /**
   * Optional: read and commit as one transaction under the table's lock with a single read
   * (libiptc: one iptc_init for both). Tables without it are read, then applied.
   */
  begin?(chains: readonly string[]): Promise<TableTransaction>;
}

export interface SyncOutcome {
  family: Family;
  /** False when live already equalled desired: nothing was written. */
  changed: boolean;
  /** Rules added and removed in our chains. */
  added: number;
  removed: number;
  /** Jumps moved back to position 1 (or re-created) because something else had moved them. */
  orderRepairs: number;
  /** The operations written (empty when unchanged). */
  ops: TxOp[];
  /** nftables: the sets written in the same transaction, with the elements they now hold. */
  sets?: { name: string; family: Family; elements: { key: string; comment?: string }[] }[];
  apply?: ApplyResult;
  durationMs: number;
}

export interface OrderState {
  family: Family;
  /** Position (1-based) of our jump in each hook chain; 0 when missing. nftables: 1 by construction. */
  positions: Record<'PREROUTING' | 'OUTPUT', number>;
  /** Our jump is in both chains, before every jump to a chain it must precede (--order-before); nftables: by priority. */
  ok: boolean;
}

export interface CleanupOutcome {
  family: Family;
  backend: BackendName;
  /** Rules and chains (or tables) removed; 0 when there was nothing of ours. */
  removed: number;
}

export interface StatusReport {
  family: Family;
  backend: BackendName;
  /** Anything of ours (chains, jumps, table) exists in this family's table. */
  present: boolean;
  /** `iptables -nvL` style listing of our chains and the first rules of PREROUTING/OUTPUT. */
  text: string;
  order: OrderState;
}

export interface SyncOptions {
  /** Whether the caller expects a write (the desired state changed). Default true. */
  expectChange?: boolean;
}

/** What the reconciler drives, one per (backend, family). */
export interface NatBackend {
  readonly name: BackendName;
  readonly family: Family;
  /**
   * Reads what we own, writes the difference to `desired` in one transaction; writes nothing when equal.
   * `expectChange: false` (periodic resyncs, watchdog checks) lets a backend look first without
   * locking (legacy: a lock-free read, then the locked read-modify-commit only when something differs).
   */
  sync(desired: DesiredRuleSet, opts?: SyncOptions): Promise<SyncOutcome>;
  /** Token that changes when the table may have changed; cheap (no full read). */
  changeToken(): Promise<string>;
  checkOrder(): Promise<OrderState>;
  /** Optional: releases descriptors the change detection holds. */
  close?(): void;
  /** Removes every rule, jump and chain (or table) we own; also residue of earlier layouts. */
  cleanup(): Promise<CleanupOutcome>;
  status(): Promise<StatusReport>;
}
