// NatBackend over any IptablesTable (iptables-legacy through libiptc, iptables-nft through
// libnftnl): read our chains and the hook chains, plan the difference, apply it in one
// transaction; nothing is written when live equals desired.
import { performance } from 'node:perf_hooks';
import { FamilyMismatchError, GenerationChangedError } from '../../errors.js';
import { DEFAULT_ORDER_BEFORE, EDGE_MESH_CHAIN, JUMP_CHAINS, OWNED_CHAINS, ROOT_JUMP_RULE, type DesiredRuleSet, type Family } from '../rules.js';
import { renderChains, type ListedChain } from '../listing.js';
import { PLAN_CHAINS, jumpPositions, orderHolds, planCleanup, planSync, type Plan } from '../plan.js';
import type { ApplyResult, BackendName, CleanupOutcome, IptablesTable, NatBackend, OrderState, StatusReport, SyncOptions, SyncOutcome, TableSnapshot } from '../types.js';

/** Reads and plans of one sync when another writer keeps changing an nf_tables table under us. */
export const REPLANS = 5;

export class IptablesNatBackend implements NatBackend {
  readonly name: BackendName;
  readonly family: Family;
  readonly table: IptablesTable;
  private lastBuiltinLayout: string | undefined;
  /** Chains our jump must precede: what checkOrder() and status() call "in order". */
  readonly orderBefore: readonly string[];

  constructor(table: IptablesTable, orderBefore: readonly string[] = DEFAULT_ORDER_BEFORE) {
    this.table = table;
    this.orderBefore = orderBefore;
    this.name = table.backend;
    this.family = table.family;
  }

  async sync(desired: DesiredRuleSet, opts: SyncOptions = {}): Promise<SyncOutcome> {
    if (desired.family !== this.family) throw new FamilyMismatchError(desired.family, this.family);
    const t0 = performance.now();
    let plan: Plan;
    // A check that probably finds nothing to do reads without the lock first (legacy: one
    // IPT_SO_GET_ENTRIES, no libiptc cache, no xtables lock held while kube-proxy waits) -
    // unless the built-in chains moved since we last saw them: then somebody wrote PREROUTING,
    // OUTPUT or their neighbours (a kube-proxy restart inserting its jump), a repair is likely,
    // and the locked read-modify-commit goes first.
    if (this.table.begin && opts.expectChange === false && !(await this.builtinsMoved())) {
      const live = await this.table.read(PLAN_CHAINS);
      this.lastBuiltinLayout = live.info.builtinLayout;
      plan = planSync(desired, live.chains);
      if (plan.ops.length === 0) return this.outcome(plan, t0);
    }
    for (let attempt = 1; ; attempt++) {
      // One read for planning and writing where the table offers it (legacy: under the xtables
      // lock). Elsewhere (nf_tables) the write carries the read it was planned on: a table
      // changed in between is refused with nothing written, and we read and plan again.
      const tx = this.table.begin ? await this.table.begin(PLAN_CHAINS) : undefined;
      let live: TableSnapshot;
      try {
        live = tx?.snapshot ?? (await this.table.read(PLAN_CHAINS));
        this.lastBuiltinLayout = live.info.builtinLayout;
        plan = planSync(desired, live.chains);
      } catch (e) {
        await tx?.abort();
        throw e;
      }
      if (plan.ops.length === 0) {
        await tx?.abort();
        return this.outcome(plan, t0);
      }
      let apply: ApplyResult;
      try {
        apply = tx ? await tx.commit(plan.ops) : await this.table.apply(plan.ops, live.info);
      } catch (e) {
        if (e instanceof GenerationChangedError && attempt < REPLANS) continue;
        throw e;
      }
      this.lastBuiltinLayout = apply.builtinLayoutAfter;
      // Batches refused because the table changed under them count as attempts too.
      return { ...this.outcome(plan, t0), apply: { ...apply, attempts: apply.attempts + attempt - 1 } };
    }
  }

  /** Whether the built-in chains' place in the table changed since our last read or commit (legacy). */
  private async builtinsMoved(): Promise<boolean> {
    if (this.lastBuiltinLayout === undefined) return false;
    // The watchdog poll that asked for this sync has just read it (legacy: a digest of the head).
    const now = (this.table.recentInfo?.(100) ?? (await this.table.info())).builtinLayout;
    return now !== undefined && now !== this.lastBuiltinLayout;
  }

  private outcome(plan: Plan, t0: number): SyncOutcome {
    return {
      family: this.family,
      changed: plan.ops.length > 0,
      added: plan.added,
      removed: plan.removed,
      orderRepairs: plan.orderRepairs,
      ops: plan.ops,
      durationMs: performance.now() - t0,
    };
  }

  async changeToken(): Promise<string> {
    return this.table.watchToken ? this.table.watchToken() : (await this.table.info()).token;
  }

  close(): void {
    this.table.close?.();
  }

  async checkOrder(): Promise<OrderState> {
    const snap = await this.table.read(JUMP_CHAINS);
    const positions = jumpPositions(ROOT_JUMP_RULE, snap.chains);
    return { family: this.family, positions, ok: orderHolds(ROOT_JUMP_RULE, snap.chains, this.orderBefore) };
  }

  async cleanup(): Promise<CleanupOutcome> {
    const snap = await this.table.read(PLAN_CHAINS);
    const { ops, removed } = planCleanup(snap.chains);
    if (ops.length > 0) await this.table.apply(ops);
    return { family: this.family, backend: this.name, removed };
  }

  async status(): Promise<StatusReport> {
    const snap = await this.table.read(PLAN_CHAINS);
    const positions = jumpPositions(ROOT_JUMP_RULE, snap.chains);
    const listed: ListedChain[] = [];
    for (const c of JUMP_CHAINS) listed.push({ name: c, rules: snap.chains.get(c) ?? [], header: 'policy ACCEPT', limit: 5 });
    for (const c of OWNED_CHAINS) {
      const rules = snap.chains.get(c);
      if (!rules) continue;
      let refs = 0;
      for (const [, rs] of snap.chains) refs += rs.filter((r) => r.target === c).length;
      listed.push({ name: c, rules, header: `${refs} references` });
    }
    const missing = OWNED_CHAINS.filter((c) => !snap.chains.has(c));
    let text = renderChains(this.family, listed);
    if (missing.length) text += `(${missing.join(', ')} not present)\n`;
    if (!snap.chains.has(EDGE_MESH_CHAIN) && positions.PREROUTING + positions.OUTPUT === 0) text += 'no edgemesh rules in this table\n';
    return {
      family: this.family,
      backend: this.name,
      present: missing.length < OWNED_CHAINS.length || positions.PREROUTING + positions.OUTPUT > 0,
      text,
      order: { family: this.family, positions, ok: orderHolds(ROOT_JUMP_RULE, snap.chains, this.orderBefore) },
    };
  }
}
