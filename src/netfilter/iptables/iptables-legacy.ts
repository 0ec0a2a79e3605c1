// The iptables-legacy backend's table: the nat table of one family through libiptc (the addon),
// one atomic iptc_commit per transaction under the xtables lock. Input is validated and worded
// here; the addon re-checks only so that bad input can never crash the process.
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';
import { TransactionError, nativeCall } from '../../errors.js';
import { native } from '../../native/load.js';
import { addressFamily, canonicalAddress, memoCanonicalCidr } from '../../net.js';
import { netnsPath } from '../../netns-path.js';
import type { Family, LiveRule, Rule } from '../rules.js';
import type { NativeApplyOptions, NativeIptcBinding, NativeRuleSpec, NativeSnapshot, NativeTxOp } from '../../native/binding.js';
import type { ApplyResult, IptablesTable, TableInfo, TableSnapshot, TableTransaction, TxOp } from '../types.js';

export interface LegacyIptablesOptions {
  family: Family;
  /** Network namespace: a path (/run/netns/NAME, /proc/PID/ns/net) or a bare name (= /run/netns/NAME). Default: the process's own. */
  netns?: string;
  /** The xtables lock file. Default: $XTABLES_LOCKFILE or /run/xtables.lock (as iptables). */
  lockfile?: string;
  /** Longest wait for the lock, like `iptables -w`. Default 5000 ms. */
  lockWaitMs?: number;
  /** Poll interval while waiting for the lock, like `iptables -W`. Default 20 ms. */
  lockIntervalMs?: number;
  /** Commits attempted when the kernel reports a lost race (EAGAIN). Default 5. */
  maxAttempts?: number;
}

/** Longest user chain name (XT_EXTENSION_MAXNAMELEN 29, NUL included). */
export const MAX_CHAIN_NAME = 28;
/** Longest comment (XT_MAX_COMMENT_LEN 256, NUL included). */
export const MAX_COMMENT_BYTES = 255;
const VERDICTS = new Set(['RETURN', 'ACCEPT', 'DROP']);
const RESERVED = new Set([...VERDICTS, 'DNAT', 'QUEUE']);

/** Why `name` is not a valid chain name, or undefined when it is. */
export function chainNameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'chain name must be a non-empty string';
  if (Buffer.byteLength(name) > MAX_CHAIN_NAME) return `chain name "${name.slice(0, 40)}" is longer than ${MAX_CHAIN_NAME} characters`;
  if (/^[-!]/.test(name)) return `chain name "${name}" must not start with "-" or "!"`;
  if (!/^[\x21-\x7e]+$/.test(name)) return `chain name "${name}" must be printable ASCII without spaces`;
  return undefined;
}

function fail(index: number, message: string): never {
  throw new TransactionError(`operation ${index}: ${message}`, index);
}

function isPosition(p: unknown): p is number {
  return typeof p === 'number' && Number.isInteger(p) && p >= 1 && p <= 0x7fffffff;
}

/** Checks a rule against `family` and returns it in the addon's canonical form. Throws TransactionError. */
export function normaliseRule(family: Family, rule: Rule, index: number): NativeRuleSpec {
  if (typeof rule !== 'object' || rule === null) fail(index, 'rule must be an object');
  const out: NativeRuleSpec = { target: '' };
  if (rule.dstSet !== undefined) fail(index, `dstSet ${String(rule.dstSet)}: set lookups are written only by the nftables backend`);
  for (const key of ['src', 'dst'] as const) {
    const v = rule[key];
    if (v === undefined) continue;
    const parsed = typeof v === 'string' ? memoCanonicalCidr(v) : undefined;
    if (!parsed) fail(index, `${key} "${String(v).slice(0, 64)}" is not a CIDR`);
    if (parsed.family !== family) fail(index, `${key} ${v} is not an ${family} CIDR`);
    out[key] = parsed.text;
  }
  if (rule.protocol !== undefined) {
    if (rule.protocol !== 'tcp' && rule.protocol !== 'udp') fail(index, `protocol "${String(rule.protocol)}" must be tcp or udp`);
    out.protocol = rule.protocol;
  }
  if (rule.comment !== undefined) {
    if (typeof rule.comment !== 'string') fail(index, 'comment must be a string');
    if (Buffer.byteLength(rule.comment) > MAX_COMMENT_BYTES) fail(index, `comment is longer than ${MAX_COMMENT_BYTES} bytes`);
    if (rule.comment.includes('\0')) fail(index, 'comment must not contain NUL');
    out.comment = rule.comment;
  }
  if (typeof rule.target !== 'string' || rule.target.length === 0) fail(index, 'target must be a non-empty string');
  if (!VERDICTS.has(rule.target) && rule.target !== 'DNAT') {
    const problem = chainNameProblem(rule.target);
    if (problem) fail(index, `target: ${problem}`);
    if (RESERVED.has(rule.target)) fail(index, `target ${rule.target} is not supported`);
  }
  out.target = rule.target;
  if (rule.target === 'DNAT') {
    const d = rule.toDestination;
    if (!d || typeof d !== 'object') fail(index, 'DNAT needs toDestination');
    const address = typeof d.address === 'string' ? canonicalAddress(d.address) : undefined;
    if (!address) fail(index, `DNAT address "${String(d.address).slice(0, 64)}" is not an IP address`);
    if (addressFamily(address) !== family) fail(index, `DNAT address ${address} is not an ${family} address`);
    out.toDestination = { address };
    if (d.port !== undefined) {
      if (typeof d.port !== 'number' || !Number.isInteger(d.port) || d.port < 1 || d.port > 65535) fail(index, `DNAT port ${String(d.port)} must be 1-65535`);
      out.toDestination.port = d.port;
    }
  } else if (rule.toDestination !== undefined) {
    fail(index, `toDestination is only valid with target DNAT (target is ${rule.target})`);
  }
  return out;
}

/** Validates a whole transaction and returns it in the addon's form. Throws TransactionError naming the first bad op. */
export function normaliseOps(family: Family, ops: readonly TxOp[]): NativeTxOp[] {
  // Checked as unknown: Array.isArray narrows a readonly array to any[], which would untype every op below.
  const list: unknown = ops;
  if (!Array.isArray(list)) throw new TransactionError('a transaction must be an array of operations');
  return ops.map((op, i): NativeTxOp => {
    if (typeof op !== 'object' || op === null) fail(i, 'operation must be an object');
    const chainProblem = chainNameProblem(op.chain);
    if (chainProblem) fail(i, chainProblem);
    const chain = op.chain;
    switch (op.op) {
      case 'replaceChain':
        if (RESERVED.has(chain)) fail(i, `chain name ${chain} is reserved`);
        if (!Array.isArray(op.rules)) fail(i, 'replaceChain needs rules (an array)');
        return { op: op.op, chain, rules: op.rules.map((r: Rule) => normaliseRule(family, r, i)) };
      case 'flushChain':
      case 'deleteChain':
        return { op: op.op, chain };
      case 'insertRule':
        if (op.position !== undefined && !isPosition(op.position)) fail(i, `position ${String(op.position)} must be an integer >= 1`);
        return op.position === undefined
          ? { op: op.op, chain, rule: normaliseRule(family, op.rule, i) }
          : { op: op.op, chain, rule: normaliseRule(family, op.rule, i), position: op.position };
      case 'deleteRule':
        return { op: op.op, chain, rule: normaliseRule(family, op.rule, i) };
      case 'moveRule':
        if (!isPosition(op.position)) fail(i, `position ${String(op.position)} must be an integer >= 1`);
        return { op: op.op, chain, rule: normaliseRule(family, op.rule, i), position: op.position };
      default:
        fail(i, `unknown operation "${String((op as { op: unknown }).op)}"`);
    }
  });
}

/**
 * The change token: size and entry count, plus the digest of the built-in chains (a rewrite that
 * keeps size and count, such as a jump deleted and re-inserted at rule 1, changes the digest).
 */
function toInfo(i: { size: number; entries: number; builtinLayout: string; headDigest?: string }): TableInfo {
  const digest = i.headDigest ?? '';
  return { size: i.size, entries: i.entries, token: `${i.size}/${i.entries}/${digest}`, builtinLayout: `${i.builtinLayout}#${digest}` };
}

/**
 * The digest of the built-in chains costs one partial IPT_SO_GET_ENTRIES, which the kernel pays
 * per entry of the whole table (it sums every rule's counters first): about 15 ms of CPU on
 * 10 000 kube-proxy services. Without xtables lock activity it is recomputed only this often,
 * scaled to its cost so that it stays near 0.1 % of a core: on a small table every watchdog
 * poll, on 10 000 services every 15-45 s (the cost is measured as CPU time, so more under load).
 */
export const DIGEST_CPU_SHARE = 0.001;
/** Longest interval between two digests while the lock file stays quiet. */
export const DIGEST_MAX_INTERVAL_MS = 60_000;

export class LegacyIptablesTable implements IptablesTable {
  readonly backend = 'iptables-legacy' as const;
  readonly family: Family;
  private readonly netnsPath: string;
  private readonly applyOptions: NativeApplyOptions;
  private readonly binding: NativeIptcBinding;
  private watch: number | undefined;
  /** Why the lock file cannot be watched (then only the adaptive period applies). */
  lockWatchProblem: string | undefined;
  private last: { size: number; entries: number; builtinLayout: string; token: string; at: number; everyMs: number; info: TableInfo } | undefined;
  /** Digests computed by watchToken (for tests and the bench). */
  digests = 0;

  constructor(options: LegacyIptablesOptions, binding?: NativeIptcBinding) {
    if (options.family !== 'ipv4' && options.family !== 'ipv6') throw new TypeError(`family must be "ipv4" or "ipv6", got ${String(options.family)}`);
    const num = (v: number | undefined, name: string, min: number, max: number, dflt: number): number => {
      if (v === undefined) return dflt;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer in [${min}, ${max}]`);
      return v;
    };
    this.family = options.family;
    this.netnsPath = netnsPath(options.netns);
    this.applyOptions = {
      lockfile: options.lockfile ?? process.env.XTABLES_LOCKFILE ?? '/run/xtables.lock',
      lockWaitMs: num(options.lockWaitMs, 'lockWaitMs', 0, 3_600_000, 5000),
      lockIntervalMs: num(options.lockIntervalMs, 'lockIntervalMs', 1, 60_000, 20),
      maxAttempts: num(options.maxAttempts, 'maxAttempts', 1, 1000, 5),
      netnsPath: this.netnsPath,
    };
    this.binding = binding ?? native();
  }

  async read(chains: readonly string[]): Promise<TableSnapshot> {
    checkChains(chains);
    return this.toSnapshot(await nativeCall(() => this.binding.iptcRead(this.family, [...chains], this.netnsPath)));
  }

  /**
   * Takes the xtables lock and reads the table once; commit() applies ops to that same read and
   * commits (one read + one commit under one lock, as iptables-restore), abort() lets go. The
   * caller must end the transaction with one of them, also on failure.
   */
  async begin(chains: readonly string[]): Promise<TableTransaction> {
    checkChains(chains);
    const { session, snapshot } = await nativeCall(() => this.binding.iptcBegin(this.family, [...chains], this.applyOptions));
    let open = true;
    const end = () => {
      if (!open) throw new Error('this iptables transaction has already been committed or aborted');
      open = false;
    };
    return {
      snapshot: this.toSnapshot(snapshot),
      commit: async (ops) => {
        let nativeOps;
        try {
          nativeOps = normaliseOps(this.family, ops);
        } catch (e) {
          end();
          await nativeCall(() => this.binding.iptcAbort(session));
          throw e;
        }
        end();
        return nativeCall(() => this.binding.iptcCommit(session, nativeOps));
      },
      abort: async () => {
        if (!open) return;
        open = false;
        await nativeCall(() => this.binding.iptcAbort(session));
      },
    };
  }

  private toSnapshot(snap: NativeSnapshot): TableSnapshot {
    const map = new Map<string, LiveRule[]>();
    for (const c of snap.chains) {
      map.set(
        c.name,
        c.rules.map((r) => {
          const { unknown, ...rest } = r;
          return unknown.length ? { ...rest, unknown } : rest;
        }),
      );
    }
    return { family: this.family, chains: map, info: toInfo(snap.info) };
  }

  async apply(ops: readonly TxOp[]): Promise<ApplyResult> {
    const nativeOps = normaliseOps(this.family, ops);
    if (nativeOps.length === 0) return { attempts: 0, lockWaitMs: 0, durationMs: 0 };
    return nativeCall(() => this.binding.iptcApply(this.family, nativeOps, this.applyOptions));
  }

  async info(): Promise<TableInfo> {
    return toInfo(await nativeCall(() => this.binding.iptcInfo(this.family, this.netnsPath)));
  }

  /**
   * The watchdog's token: info().token, with the built-in chains' digest reused while nothing can
   * have changed. Every iptables-legacy command and iptables-restore opens the xtables lock file,
   * so lock activity since the last poll, a change of size, entry count or hook offsets, or the
   * adaptive period (DIGEST_CPU_SHARE) running out recomputes it; otherwise one IPT_SO_GET_INFO
   * (0.1 ms) is all a poll costs. A writer that bypasses the lock and keeps the table's size is
   * seen when the period runs out.
   */
  async watchToken(): Promise<string> {
    const events = this.lockEvents();
    const last = this.last;
    const now = performance.now();
    if (last && events === 0 && now - last.at < last.everyMs) {
      const quick = await nativeCall(() => this.binding.iptcInfo(this.family, this.netnsPath, false));
      if (quick.size === last.size && quick.entries === last.entries && quick.builtinLayout === last.builtinLayout) return last.token;
    }
    const full = await nativeCall(() => this.binding.iptcInfo(this.family, this.netnsPath, true));
    this.digests++;
    const cpuMs = full.digestCpuMs ?? 0;
    const everyMs = Math.min(DIGEST_MAX_INTERVAL_MS, cpuMs / DIGEST_CPU_SHARE);
    const info = toInfo(full);
    this.last = { size: full.size, entries: full.entries, builtinLayout: full.builtinLayout, token: info.token, at: performance.now(), everyMs, info };
    return info.token;
  }

  recentInfo(maxAgeMs: number): TableInfo | undefined {
    return this.last && performance.now() - this.last.at <= maxAgeMs ? this.last.info : undefined;
  }

  /** Opens/closes of the xtables lock file since the last call; 1 when it cannot be watched (so every poll digests). */
  private lockEvents(): number {
    const b = this.binding;
    if (!b.iptcLockWatch || !b.iptcLockEvents) return 1;
    try {
      if (this.watch === undefined) {
        if (this.lockWatchProblem) return 0; // adaptive period only
        this.watch = b.iptcLockWatch(this.applyOptions.lockfile);
        return 1;
      }
      return b.iptcLockEvents(this.watch);
    } catch (e) {
      this.lockWatchProblem = (e as Error).message;
      this.close();
      return 1;
    }
  }

  close(): void {
    if (this.watch !== undefined) this.binding.iptcLockUnwatch?.(this.watch);
    this.watch = undefined;
  }
}

function checkChains(chains: readonly string[]): void {
  for (const c of chains) {
    const problem = chainNameProblem(c);
    if (problem) throw new TypeError(problem);
  }
}
