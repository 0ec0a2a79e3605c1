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
  iptcInfo(family: Family, netnsPath: string): Promise<NativeTableInfo>;
  iptcRead(family: Family, chains: string[], netnsPath: string): Promise<NativeSnapshot>;
  iptcApply(family: Family, ops: NativeTxOp[], options: NativeApplyOptions): Promise<NativeApplyResult>;
  /** Takes the xtables lock and reads the table once; end with iptcCommit or iptcAbort. */
  iptcBegin(family: Family, chains: string[], options: NativeApplyOptions): Promise<{ session: number; snapshot: NativeSnapshot }>;
  /** Applies ops to the session's read and commits (EAGAIN: re-read and re-apply); ends the session. */
  iptcCommit(session: number, ops: NativeTxOp[]): Promise<NativeApplyResult>;
  /** Ends the session without writing. */
  iptcAbort(session: number): Promise<void>;
}
