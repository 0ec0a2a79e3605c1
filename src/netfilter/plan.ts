// The pure half of the iptables backends: from what is live to the one transaction that makes
// it what we want. Touches only our chains and jumps (found by target + comment), in the order
// the kernel needs (a chain exists before anything jumps to it; nothing jumps to a chain when it
// is deleted).
import {
  DEFAULT_ORDER_BEFORE,
  ORDER_BEFORE_ANY,
  EDGE_MESH_CHAIN,
  JUMP_CHAINS,
  OWNED_CHAINS,
  sameRule,
  type DesiredRuleSet,
  type JumpChain,
  type LiveRule,
  type Rule,
} from './rules.js';
import type { TxOp } from './types.js';

/** Chains a plan needs to read: ours and the built-in chains that hold our jumps. */
export const PLAN_CHAINS: readonly string[] = [...JUMP_CHAINS, ...OWNED_CHAINS];

export interface Plan {
  ops: TxOp[];
  added: number;
  removed: number;
  /** Our jump was present but behind a chain of orderBefore (somebody inserted above it), or was duplicated. */
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

/**
 * 1-based position of the first rule of `rules` that our jump must precede (a jump to a chain of
 * `before`; with `*` any rule that is not ours), or 0 when there is none.
 */
export function firstGuarded(rules: readonly LiveRule[], ours: Rule, before: readonly string[] = DEFAULT_ORDER_BEFORE): number {
  const any = before.includes(ORDER_BEFORE_ANY);
  const i = rules.findIndex((r) => !sameRule(r, ours) && (any || before.includes(r.target)));
  return i + 1;
}

/**
 * The operations that turn `live` into `desired`; empty when they are equal.
 *
 * Ordering policy: a missing jump is inserted at rule 1. A present jump stays where it is as long
 * as no jump to a chain of `desired.orderBefore` (kube-proxy's Service DNAT chains) comes before
 * it, so another agent that keeps its own jump at rule 1 (Calico Felix, Antrea, Istio CNI) is not
 * fought. When one does come before it, our jump moves to just above the first of them: never
 * above rules that were already ahead of that one. `*` in orderBefore makes it strict rule 1.
 */
export function planSync(desired: DesiredRuleSet, live: ReadonlyMap<string, readonly LiveRule[]>): Plan {
  const before = desired.orderBefore ?? DEFAULT_ORDER_BEFORE;
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
    const guard = firstGuarded(rules, jump.rule, before);
    const ahead = (pos: number) => guard === 0 || pos < guard;
    if (mine.length === 1 && first && ahead(first.pos) && stale.length === 0) continue;
    for (const r of stale) ops.push({ op: 'deleteRule', chain: jump.chain, rule: stripCounters(r) });
    residue += stale.length;
    if (mine.length === 0) {
      ops.push({ op: 'insertRule', chain: jump.chain, rule: jump.rule, position: 1 });
      added++;
    } else if (mine.length === 1) {
      if (first && !ahead(first.pos)) {
        // Just above the first guarded rule, counted once the stale jumps deleted above are gone
        // (ours is below it, so taking ours out does not shift it).
        const staleAbove = rules.slice(0, guard - 1).filter((r) => isResidueJump(r, jump.rule)).length;
        ops.push({ op: 'moveRule', chain: jump.chain, rule: jump.rule, position: guard - staleAbove });
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

/** Whether our jump holds the ordering invariant in each hook chain: present, and before every guarded rule. */
export function orderHolds(rule: Rule, live: ReadonlyMap<string, readonly LiveRule[]>, before: readonly string[] = DEFAULT_ORDER_BEFORE): boolean {
  return JUMP_CHAINS.every((chain) => {
    const rules = live.get(chain) ?? [];
    const pos = rules.findIndex((r) => sameRule(r, rule)) + 1;
    const guard = firstGuarded(rules, rule, before);
    return pos > 0 && (guard === 0 || pos < guard);
  });
}

/** Position (1-based) of the jump `rule` in each hook chain; 0 when missing. */
export function jumpPositions(rule: Rule, live: ReadonlyMap<string, readonly LiveRule[]>): Record<JumpChain, number> {
  const out = { PREROUTING: 0, OUTPUT: 0 } as Record<JumpChain, number>;
  for (const chain of JUMP_CHAINS) out[chain] = (live.get(chain) ?? []).findIndex((r) => sameRule(r, rule)) + 1;
  return out;
}
