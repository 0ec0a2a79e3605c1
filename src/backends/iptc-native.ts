// Declaration of the addon's libiptc surface (native/iptc_binding.cc). Only the
// iptables-legacy backend calls these; every function returns a Promise settled off the JS
// thread, throws TypeError synchronously on a wrong argument type, and rejects with an Error
// carrying code/errno/syscall (and opIndex for ETRANSACTION).
import type { Family, Protocol } from '../rules.js';

export interface NativeRuleSpec {
  src?: string;
  dst?: string;
  protocol?: Protocol;
  comment?: string;
  target: string;
  toDestination?: { address: string; port?: number };
}

export interface NativeLiveRule extends NativeRuleSpec {
  packets: number;
  bytes: number;
  /** Matches, flags and options read but not modelled ("conntrack", "in-interface", "!dst"...). */
  unknown: string[];
}

export type NativeTxOp =
  | { op: 'createChain' | 'flushChain' | 'deleteChain'; chain: string }
  | { op: 'insertRule'; chain: string; rule: NativeRuleSpec; position?: number }
  | { op: 'appendRule' | 'deleteRule'; chain: string; rule: NativeRuleSpec }
  | { op: 'deleteRuleAt'; chain: string; position: number }
  | { op: 'replaceRule' | 'moveRule'; chain: string; rule: NativeRuleSpec; position: number }
  | { op: 'replaceChain'; chain: string; rules: NativeRuleSpec[] };

export interface NativeTableInfo {
  size: number;
  entries: number;
  /** False when the nat table does not exist in the namespace (info/read never create it). */
  present: boolean;
  /** Offsets of the built-in chains' first rules and policies (see TableInfo.builtinLayout). */
  builtinLayout: string;
  /** Digest of the built-in chains' entries without counters; '' when the table is absent. */
  headDigest?: string;
  /** CPU ms the digest took (thread time, the kernel's copy included). */
  digestCpuMs?: number;
}

export interface NativeApplyOptions {
  /** The xtables lock file; empty: $XTABLES_LOCKFILE or /run/xtables.lock. */
  lockfile?: string;
  lockWaitMs?: number;
  lockIntervalMs?: number;
  maxAttempts?: number;
  /** Network namespace file (/run/netns/NAME); empty: the process's own. */
  netnsPath?: string;
}

export interface NativeApplyResult {
  attempts: number;
  lockWaitMs: number;
  durationMs: number;
  /** info() token of the table right after our commit, read under the lock. */
  tokenAfter: string;
  builtinLayoutAfter: string;
}

export interface NativeSnapshot {
  chains: { name: string; rules: NativeLiveRule[] }[];
  info: NativeTableInfo;
}

export interface NativeIptcBinding {
  /** `digest` false: IPT_SO_GET_INFO only (headDigest ''). */
  iptcInfo(family: Family, netnsPath: string, digest?: boolean): Promise<NativeTableInfo>;
  /** Starts noticing opens/closes of the xtables lock file (created when missing); returns a watch id. Synchronous. */
  iptcLockWatch?(lockfile?: string): number;
  /** Opens/closes of the lock file since the last call. Synchronous, never blocks. */
  iptcLockEvents?(watch: number): number;
  iptcLockUnwatch?(watch: number): void;
  iptcRead(family: Family, chains: string[], netnsPath: string): Promise<NativeSnapshot>;
  iptcApply(family: Family, ops: NativeTxOp[], options: NativeApplyOptions): Promise<NativeApplyResult>;
  /** Takes the xtables lock and reads the table once; end with iptcCommit or iptcAbort. */
  iptcBegin(family: Family, chains: string[], options: NativeApplyOptions): Promise<{ session: number; snapshot: NativeSnapshot }>;
  /** Applies ops to the session's read and commits (EAGAIN: re-read and re-apply); ends the session. */
  iptcCommit(session: number, ops: NativeTxOp[]): Promise<NativeApplyResult>;
  /** Ends the session without writing. */
  iptcAbort(session: number): Promise<void>;
}
