// An in-memory IptablesTable for the reconciler's unit tests (no privileges). It applies TxOps
// with the same all-or-nothing semantics the kernel backends promise; the netns suites check
// the real kernel.
import { sameRule, type Family, type LiveRule, type Rule } from '../../src/netfilter/rules.js';
import type { ApplyResult, BackendName, IptablesTable, TableInfo, TableSnapshot, TxOp } from '../../src/netfilter/types.js';

const BUILTIN = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'];

export class MemoryTable implements IptablesTable {
  readonly backend: BackendName = 'iptables-legacy';
  readonly family: Family;
  chains = new Map<string, LiveRule[]>(BUILTIN.map((c) => [c, []]));
  generation = 0;
  commits = 0;
  reads = 0;
  failNext: Error | undefined;

  constructor(family: Family = 'ipv4') {
    this.family = family;
  }

  async read(chains: readonly string[]): Promise<TableSnapshot> {
    this.reads++;
    const out = new Map<string, LiveRule[]>();
    for (const c of chains) {
      const rules = this.chains.get(c);
      if (rules) out.set(c, rules.map((r) => ({ ...r })));
    }
    return { family: this.family, chains: out, info: await this.info() };
  }

  async info(): Promise<TableInfo> {
    const entries = [...this.chains.values()].reduce((n, r) => n + r.length, 0);
    return { size: entries * 100, entries, token: `g${this.generation}` };
  }

  /** A foreign writer (kube-proxy): inserts a rule at a position without a transaction. */
  foreignInsert(chain: string, rule: Rule, position = 1): void {
    const rules = this.chains.get(chain);
    if (!rules) throw new Error(`no chain ${chain}`);
    rules.splice(position - 1, 0, { ...rule, packets: 0, bytes: 0 });
    this.generation++;
  }

  async apply(ops: readonly TxOp[]): Promise<ApplyResult> {
    if (this.failNext) {
      const e = this.failNext;
      this.failNext = undefined;
      throw e;
    }
    const next = new Map([...this.chains].map(([k, v]) => [k, v.map((r) => ({ ...r }))]));
    const live = (r: Rule): LiveRule => ({ ...r, packets: 0, bytes: 0 });
    ops.forEach((op, i) => {
      const fail = (m: string): never => {
        throw Object.assign(new Error(`op ${i} (${op.op} ${op.chain}): ${m}`), { code: 'ETRANSACTION', opIndex: i });
      };
      const rules = next.get(op.chain);
      switch (op.op) {
        case 'flushChain':
          if (!rules) fail('no such chain');
          next.set(op.chain, []);
          break;
        case 'deleteChain':
          if (!rules) fail('no such chain');
          if (rules!.length) fail('chain not empty');
          for (const [, rs] of next) if (rs.some((r) => r.target === op.chain)) fail('chain referenced');
          next.delete(op.chain);
          break;
        case 'insertRule':
          if (!rules) fail('no such chain');
          rules!.splice((op.position ?? 1) - 1, 0, live(op.rule));
          break;
        case 'deleteRule': {
          const k = rules?.findIndex((r) => sameRule(r, op.rule)) ?? -1;
          if (k < 0) fail('no such rule');
          rules!.splice(k, 1);
          break;
        }
        case 'moveRule': {
          const k = rules?.findIndex((r) => sameRule(r, op.rule)) ?? -1;
          if (k < 0) fail('no such rule');
          const [r] = rules!.splice(k, 1);
          rules!.splice(op.position - 1, 0, r!);
          break;
        }
        case 'replaceChain': {
          const old = rules ?? [];
          const used = new Set<number>();
          next.set(
            op.chain,
            op.rules.map((r) => {
              const k = old.findIndex((o, j) => !used.has(j) && sameRule(o, r));
              if (k >= 0) {
                used.add(k);
                return { ...old[k]! };
              }
              return live(r);
            }),
          );
          break;
        }
      }
    });
    if (ops.length > 0) {
      this.chains = next;
      this.generation++;
      this.commits++;
    }
    return { attempts: 1, lockWaitMs: 0, durationMs: 0, tokenAfter: (await this.info()).token };
  }
}
