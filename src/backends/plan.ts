// The pure half of the iptables backends: from what is live to the one transaction that makes
// it what we want. Touches only our chains and jumps (found by target + comment), in the order
// the kernel needs (a chain exists before anything jumps to it; nothing jumps to a chain when it
// is deleted).
import {
  EDGE_MESH_CHAIN,
  JUMP_CHAINS,
  OWNED_CHAINS,
  sameRule,
  type DesiredRuleSet,
  type JumpChain,
  type LiveRule,
  type Rule,
} from '../rules.js';
import type { TxOp } from './types.js';

/** Chains a plan needs to read: ours and the built-in chains that hold our jumps. */
export const PLAN_CHAINS: readonly string[] = [...JUMP_CHAINS, ...OWNED_CHAINS];

export interface Plan {
  ops: TxOp[];
  added: number;
  removed: number;
  /** Our jump was present but not rule 1 (somebody inserted above it), or was duplicated. */
  orderRepairs: number;
  /** Residue of earlier layouts (a jump to EDGE-MESH without our comment) being removed. */
  residue: number;
}

/** Rules in `a` that have no partner in `b` (multiset difference by sameRule). */
function unmatched(a: readonly Rule[], b: readonly Rule[]): number {
  const used = new Array<boolean>(b.length).fill(false);
  let n = 0;
  for (const r of a) {
    const i = b.findIndex((x, j) => !used[j] && sameRule(r, x));
    if (i < 0) n++;
    else used[i] = true;
  }
  return n;
}

function sameList(a: readonly Rule[], b: readonly Rule[]): boolean {
  return a.length === b.length && a.every((r, i) => sameRule(r, b[i] as Rule));
}

/** A jump into our root chain that is not the one we write: an earlier layout of ours. */
function isResidueJump(r: LiveRule, ours: Rule): boolean {
  return r.target === EDGE_MESH_CHAIN && !sameRule(r, ours) && !r.unknown?.length;
}

/** The operations that turn `live` into `desired`; empty when they are equal. */
export function planSync(desired: DesiredRuleSet, live: ReadonlyMap<string, readonly LiveRule[]>): Plan {
  const ops: TxOp[] = [];
  let added = 0;
  let removed = 0;
  let orderRepairs = 0;
  let residue = 0;

  for (const chain of desired.chains) {
    const current = live.get(chain.name);
    if (current && sameList(chain.rules, current)) continue;
    ops.push({ op: 'replaceChain', chain: chain.name, rules: chain.rules });
    added += unmatched(chain.rules, current ?? []);
    removed += unmatched(current ?? [], chain.rules);
  }

  for (const jump of desired.jumps) {
    const rules = live.get(jump.chain) ?? [];
    const mine = rules.map((r, i) => ({ r, pos: i + 1 })).filter(({ r }) => sameRule(r, jump.rule));
    const stale = rules.filter((r) => isResidueJump(r, jump.rule));
    const first = mine[0];
    if (mine.length === 1 && first?.pos === 1 && stale.length === 0) continue;
    for (const r of stale) ops.push({ op: 'deleteRule', chain: jump.chain, rule: stripCounters(r) });
    residue += stale.length;
    if (mine.length === 0) {
      ops.push({ op: 'insertRule', chain: jump.chain, rule: jump.rule, position: 1 });
      added++;
    } else if (mine.length === 1) {
      if (first && first.pos !== 1) {
        ops.push({ op: 'moveRule', chain: jump.chain, rule: jump.rule, position: 1 });
        orderRepairs++;
      }
    } else {
      // Duplicates: deleting by spec takes the first match each time, so remove them all and
      // put one back at 1.
      for (let k = 0; k < mine.length; k++) ops.push({ op: 'deleteRule', chain: jump.chain, rule: jump.rule });
      ops.push({ op: 'insertRule', chain: jump.chain, rule: jump.rule, position: 1 });
      removed += mine.length - 1;
      orderRepairs++;
    }
  }
  return { ops, added, removed, orderRepairs, residue };
}

/** Everything we own goes: our jumps (and residue jumps of earlier layouts), then our chains. */
export function planCleanup(live: ReadonlyMap<string, readonly LiveRule[]>): { ops: TxOp[]; removed: number } {
  const ops: TxOp[] = [];
  let removed = 0;
  for (const chain of JUMP_CHAINS as readonly JumpChain[]) {
    for (const r of live.get(chain) ?? []) {
      if (r.target === EDGE_MESH_CHAIN && !r.unknown?.length) {
        ops.push({ op: 'deleteRule', chain, rule: stripCounters(r) });
        removed++;
      }
    }
  }
  // EDGE-MESH jumps to EDGE-MESH-TCP: flush both before deleting either.
  const present = OWNED_CHAINS.filter((c) => live.has(c));
  for (const c of present) {
    removed += live.get(c)?.length ?? 0;
    ops.push({ op: 'flushChain', chain: c });
  }
  for (const c of present) {
    ops.push({ op: 'deleteChain', chain: c });
    removed++;
  }
  return { ops, removed };
}

/** The modelled fields of a live rule, as a Rule to match it by. */
export function stripCounters(r: LiveRule): Rule {
  const out: Rule = { target: r.target };
  if (r.src !== undefined) out.src = r.src;
  if (r.dst !== undefined) out.dst = r.dst;
  if (r.dstSet !== undefined) out.dstSet = r.dstSet;
  if (r.protocol !== undefined) out.protocol = r.protocol;
  if (r.comment !== undefined) out.comment = r.comment;
  if (r.toDestination !== undefined) out.toDestination = { ...r.toDestination };
  return out;
}

/** Position (1-based) of the jump `rule` in each hook chain; 0 when missing. */
export function jumpPositions(rule: Rule, live: ReadonlyMap<string, readonly LiveRule[]>): Record<JumpChain, number> {
  const out = { PREROUTING: 0, OUTPUT: 0 } as Record<JumpChain, number>;
  for (const chain of JUMP_CHAINS) out[chain] = (live.get(chain) ?? []).findIndex((r) => sameRule(r, rule)) + 1;
  return out;
}
