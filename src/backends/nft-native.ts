// Declaration of the addon's nf_tables surface (native/nft_binding.cc over native/nft_core.cc).
// Only the nft backends and detection call it; every call takes the path of a network
// namespace to work in ('' or undefined: the caller's own), entered on the worker thread.
import type { Family, Rule } from '../rules.js';
import type { TxOp } from './types.js';

/** 'xt': rules in the shape iptables-nft writes (ip/ip6 nat); 'nft': native nftables expressions. */
export type NftDialect = 'xt' | 'nft';
export type NftHook = 'prerouting' | 'input' | 'output' | 'postrouting';

/** A rule as read; `dstSet` (a set lookup) only in the 'nft' dialect. */
export interface NftLiveRule extends Rule {
  packets: number;
  bytes: number;
  /** The kernel's rule handle (stable for the rule's life). */
  handle: number;
  unknown?: string[];
}

export interface NftChain {
  name: string;
  handle: number;
  base: boolean;
  hook?: NftHook | 'forward' | 'unknown';
  priority?: number;
  type?: string;
  policy?: 'accept' | 'drop' | 'other';
  /** References to the chain (jumps and, for some kernels, rules). */
  use: number;
  rules: NftLiveRule[];
}

/** An element of an address set: key is a host CIDR ("10.0.0.3/32"), as a rule's dst. */
export interface NftSetElement {
  key: string;
  comment?: string;
}

export interface NftLiveSetElement extends NftSetElement {
  packets: number;
  bytes: number;
  /** Parts the backend does not model (flags, timeouts); such an element is rewritten. */
  unknown?: true;
}

export interface NftSet {
  name: string;
  handle: number;
  /** nft datatype id of the key: 7 ipv4_addr, 8 ipv6_addr. */
  keyType: number;
  keyLen: number;
  flags: number;
  /** Every element carries a counter (the set's expression). */
  counter: boolean;
  /** The shape the backend writes: an address set of the family, no flags, with counters. */
  ours: boolean;
  elements: NftLiveSetElement[];
}

/** "This set holds exactly these elements" (created when missing, with a counter per element). */
export interface NftSetSpec {
  name: string;
  elements: readonly NftSetElement[];
}

export interface NftReadRequest {
  netns?: string;
  family: Family;
  table: string;
  dialect: NftDialect;
  /** The chains to read; omitted: every chain of the table (only for small tables). */
  chains?: readonly string[];
  /** False: chain headers only. Default true. */
  withRules?: boolean;
  /** Sets to read with their elements (missing ones are absent from the result). */
  sets?: readonly string[];
}

export interface NftReadResult {
  /** Generation id the read is consistent with. */
  genid: number;
  tableExists: boolean;
  /** The chains that exist, in the order asked (or the kernel's order). */
  chains: NftChain[];
  /** The sets asked for that exist. */
  sets: NftSet[];
}

export interface NftBaseChain {
  name: string;
  hook: NftHook;
  priority: number;
}

export interface NftApplyRequest {
  netns?: string;
  family: Family;
  table: string;
  dialect: NftDialect;
  /**
   * 'nft' dialect: make these base chains (type nat, policy accept) exist with exactly this hook
   * and priority (a chain with another hook/priority is deleted and created again), creating the
   * table if needed. 'xt' dialect: not used; iptables-nft's nat base chains are created on demand.
   */
  baseChains?: readonly NftBaseChain[];
  /**
   * 'nft' dialect: sets written in the same batch, before the rules that look them up. Elements
   * are added and removed by key, so the counters of those that stay are kept. A live set of
   * another shape is deleted and created anew in the same batch, with the rules that look it up.
   */
  sets?: readonly NftSetSpec[];
  ops: readonly TxOp[];
  /** Batches refused because the ruleset changed since it was read are retried; default 5. */
  maxAttempts?: number;
}

export interface NftApplyResult {
  attempts: number;
  /** Netlink messages in the committed batch; 0 when nothing needed writing (no batch sent). */
  messages: number;
  /** Generation id after the commit. */
  genid: number;
}

export interface NftRawRule {
  handle: number;
  /** Each expression of NFTA_RULE_EXPRESSIONS as hex in brackets; counters as "[counter]". */
  exprs: string;
  compat: string;
  userdata: string;
}

export interface NativeNftBinding {
  nftGenId(netns?: string): Promise<number>;
  nftRead(req: NftReadRequest): Promise<NftReadResult>;
  nftApply(req: NftApplyRequest): Promise<NftApplyResult>;
  /** Deletes a whole table in one batch; false when it did not exist. */
  nftDeleteTable(netns: string | undefined, family: Family, table: string): Promise<boolean>;
  nftListTables(netns?: string): Promise<{ family: 'ip' | 'ip6' | 'inet' | 'arp' | 'bridge' | 'netdev' | 'unknown'; name: string }[]>;
  /** Raw rule attributes of a chain (diagnostics; byte-for-byte comparison with iptables-nft). */
  nftRawRules(netns: string | undefined, family: Family, table: string, chain: string): Promise<NftRawRule[]>;
  /** Contents of /proc/net/<name> as seen from inside the namespace; null when absent. */
  readProcNet(netns: string | undefined, name: string): Promise<string | null>;
}
