import { describe, expect, it } from 'vitest';
import { IptablesNatBackend } from '../../src/netfilter/iptables/iptables.js';
import { planSync } from '../../src/netfilter/plan.js';
import { EDGE_MESH_CHAIN, EDGE_MESH_TCP_CHAIN, ROOT_JUMP_RULE, type DesiredRuleSet, type Rule } from '../../src/netfilter/rules.js';
import type { TableInfo, TableTransaction, TxOp } from '../../src/netfilter/types.js';
import { MemoryTable } from '../helpers/memory-table.js';

const kubeJump: Rule = { comment: 'kubernetes service portals', target: 'KUBE-SERVICES' };

function desired(ignored: string[]): DesiredRuleSet {
  return {
    family: 'ipv4',
    chains: [
      { name: EDGE_MESH_TCP_CHAIN, rules: [{ protocol: 'tcp', comment: 'edgemesh tcp proxy', target: 'DNAT', toDestination: { address: '169.254.96.16', port: 40001 } }] },
      {
        name: EDGE_MESH_CHAIN,
        rules: [
          ...ignored.map((ip) => ({ dst: `${ip}/32`, comment: `ignore ns/${ip} service`, target: 'RETURN' })),
          { dst: '10.10.0.0/16', protocol: 'tcp' as const, comment: 'tcp service proxy', target: EDGE_MESH_TCP_CHAIN },
        ],
      },
    ],
    jumps: [
      { chain: 'PREROUTING', rule: ROOT_JUMP_RULE },
      { chain: 'OUTPUT', rule: ROOT_JUMP_RULE },
    ],
  };
}

describe('planSync and the iptables NatBackend', () => {
  it('creates our chains before the jumps that need them, jumps at rule 1 ahead of kube-proxy', async () => {
    const t = new MemoryTable();
    t.foreignInsert('PREROUTING', kubeJump);
    t.foreignInsert('OUTPUT', kubeJump);
    const b = new IptablesNatBackend(t);
    const out = await b.sync(desired(['10.10.0.3', '10.10.0.1']));
    expect(out.changed).toBe(true);
    expect(out.ops.map((o) => `${o.op} ${o.chain}`)).toEqual([
      'replaceChain EDGE-MESH-TCP',
      'replaceChain EDGE-MESH',
      'insertRule PREROUTING',
      'insertRule OUTPUT',
    ]);
    expect(t.chains.get('PREROUTING')!.map((r) => r.target)).toEqual(['EDGE-MESH', 'KUBE-SERVICES']);
    expect(t.chains.get('OUTPUT')!.map((r) => r.target)).toEqual(['EDGE-MESH', 'KUBE-SERVICES']);
    expect(out.added).toBe(6);
    expect((await b.checkOrder()).ok).toBe(true);
  });

  it('writes nothing at all when live equals desired', async () => {
    const t = new MemoryTable();
    const b = new IptablesNatBackend(t);
    await b.sync(desired(['10.10.0.3']));
    const commits = t.commits;
    const again = await b.sync(desired(['10.10.0.3']));
    expect(again.changed).toBe(false);
    expect(again.ops).toEqual([]);
    expect(t.commits).toBe(commits);
  });

  it('moves our jump back to rule 1 when kube-proxy inserts above it, counting one repair per chain', async () => {
    const t = new MemoryTable();
    const b = new IptablesNatBackend(t);
    await b.sync(desired([]));
    t.foreignInsert('PREROUTING', kubeJump, 1);
    t.foreignInsert('OUTPUT', kubeJump, 1);
    expect((await b.checkOrder()).positions).toEqual({ PREROUTING: 2, OUTPUT: 2 });
    const out = await b.sync(desired([]));
    expect(out.orderRepairs).toBe(2);
    expect(out.ops.every((o) => o.op === 'moveRule')).toBe(true);
    expect((await b.checkOrder()).ok).toBe(true);
    expect(t.chains.get('PREROUTING')!.map((r) => r.target)).toEqual(['EDGE-MESH', 'KUBE-SERVICES']);
  });

  it('removes residue of earlier layouts (a jump to EDGE-MESH without our comment) and duplicates', async () => {
    const t = new MemoryTable();
    const b = new IptablesNatBackend(t);
    await b.sync(desired([]));
    t.foreignInsert('PREROUTING', { target: EDGE_MESH_CHAIN }, 2);
    t.foreignInsert('OUTPUT', ROOT_JUMP_RULE, 2);
    const out = await b.sync(desired([]));
    expect(out.changed).toBe(true);
    expect(t.chains.get('PREROUTING')!.filter((r) => r.target === EDGE_MESH_CHAIN)).toHaveLength(1);
    expect(t.chains.get('OUTPUT')!.filter((r) => r.target === EDGE_MESH_CHAIN)).toHaveLength(1);
    expect((await b.checkOrder()).ok).toBe(true);
  });

  it('never plans an edit of a foreign rule, even one that jumps to our chain with matches we do not model', () => {
    const live = new Map([
      ['PREROUTING', [{ target: EDGE_MESH_CHAIN, unknown: ['in-interface'], packets: 0, bytes: 0 }, { ...ROOT_JUMP_RULE, packets: 0, bytes: 0 }]],
      ['OUTPUT', [{ ...ROOT_JUMP_RULE, packets: 0, bytes: 0 }]],
    ]);
    // ours is at 2 behind a rule that does not DNAT Service traffic: it stays, the foreign rule too
    expect(planSync({ ...desired([]), chains: [] }, live).ops).toEqual([]);
    // with strict rule 1 ours moves above it, and the foreign rule is still never deleted
    const strict = planSync({ ...desired([]), chains: [], orderBefore: ['*'] }, live);
    expect(strict.ops).toEqual([{ op: 'moveRule', chain: 'PREROUTING', rule: ROOT_JUMP_RULE, position: 1 }]);
  });

  describe('ordering policy: ahead of every chain that DNATs Service traffic, not necessarily rule 1', () => {
    const felix: Rule = { comment: 'cali:felix', target: 'cali-PREROUTING' };
    const live = (...targets: string[]) =>
      new Map([
        ['PREROUTING', targets.map((t) => (t === 'ours' ? { ...ROOT_JUMP_RULE, packets: 0, bytes: 0 } : { ...(t === 'felix' ? felix : { comment: t, target: t }), packets: 0, bytes: 0 }))],
        ['OUTPUT', [{ ...ROOT_JUMP_RULE, packets: 0, bytes: 0 }]],
        ['EDGE-MESH', desired([]).chains[1]!.rules.map((r) => ({ ...r, packets: 0, bytes: 0 }))],
        ['EDGE-MESH-TCP', desired([]).chains[0]!.rules.map((r) => ({ ...r, packets: 0, bytes: 0 }))],
      ]);

    it('a missing jump is inserted at rule 1, even above another agent\'s rule', () => {
      const plan = planSync(desired([]), live('felix', 'KUBE-SERVICES'));
      expect(plan.ops).toEqual([{ op: 'insertRule', chain: 'PREROUTING', rule: ROOT_JUMP_RULE, position: 1 }]);
    });

    it('behind a non-DNAT rule and ahead of KUBE-SERVICES: nothing to do (another agent keeps rule 1)', () => {
      expect(planSync(desired([]), live('felix', 'ours', 'KUBE-SERVICES')).ops).toEqual([]);
      expect(planSync(desired([]), live('felix', 'other', 'ours')).ops).toEqual([]);
    });

    it('behind KUBE-SERVICES (or any chain of the list): moved to just above the first of them, not above the rules ahead of it', () => {
      expect(planSync(desired([]), live('felix', 'KUBE-SERVICES', 'ours')).ops).toEqual([{ op: 'moveRule', chain: 'PREROUTING', rule: ROOT_JUMP_RULE, position: 2 }]);
      expect(planSync(desired([]), live('KUBE-PORTALS-CONTAINER', 'felix', 'ours')).ops).toEqual([{ op: 'moveRule', chain: 'PREROUTING', rule: ROOT_JUMP_RULE, position: 1 }]);
      expect(planSync(desired([]), live('felix', 'KUBE-NODEPORTS', 'KUBE-SERVICES', 'ours')).orderRepairs).toBe(1);
    });

    it('the list is configurable: a chain left out of it may stay ahead; "*" is strict rule 1', () => {
      expect(planSync({ ...desired([]), orderBefore: ['KUBE-NODEPORTS'] }, live('KUBE-SERVICES', 'ours')).ops).toEqual([]);
      expect(planSync({ ...desired([]), orderBefore: ['*'] }, live('felix', 'ours', 'KUBE-SERVICES')).ops).toEqual([{ op: 'moveRule', chain: 'PREROUTING', rule: ROOT_JUMP_RULE, position: 1 }]);
    });

    it('a Felix-like writer that insists on rule 1 and our repairs settle after one write each (simulated on the in-memory table)', async () => {
      const t = new MemoryTable();
      t.foreignInsert('PREROUTING', kubeJump);
      t.foreignInsert('OUTPUT', kubeJump);
      const b = new IptablesNatBackend(t);
      let ours = 0;
      let theirs = 0;
      const felixFirst = async () => {
        for (const c of ['PREROUTING', 'OUTPUT']) {
          const rules = t.chains.get(c)!;
          if (rules[0]?.target === felix.target) continue;
          const i = rules.findIndex((r) => r.target === felix.target);
          if (i >= 0) rules.splice(i, 1);
          t.foreignInsert(c, felix);
          theirs++;
        }
      };
      for (let round = 0; round < 10; round++) {
        if ((await b.sync(desired([]), { expectChange: false })).changed) ours++;
        await felixFirst();
      }
      expect(ours).toBe(1);
      expect(theirs).toBe(2); // one per chain
      expect((await b.checkOrder()).ok).toBe(true);
      expect(t.chains.get('PREROUTING')!.map((r) => r.target)).toEqual(['cali-PREROUTING', 'EDGE-MESH', 'KUBE-SERVICES']);
    });
  });

  it('keeps counters of unchanged ignore rules when one is added (replaceChain is a minimal edit)', async () => {
    const t = new MemoryTable();
    const b = new IptablesNatBackend(t);
    await b.sync(desired(['10.10.0.1']));
    t.chains.get(EDGE_MESH_CHAIN)![0]!.packets = 42;
    const out = await b.sync(desired(['10.10.0.1', '10.10.0.3']));
    expect(out.added).toBe(1);
    expect(out.removed).toBe(0);
    expect(t.chains.get(EDGE_MESH_CHAIN)![0]!.packets).toBe(42);
  });

  it('cleanup removes jumps, residue and both chains and leaves kube-proxy alone', async () => {
    const t = new MemoryTable();
    t.foreignInsert('PREROUTING', kubeJump);
    const b = new IptablesNatBackend(t);
    await b.sync(desired(['10.10.0.1']));
    t.foreignInsert('OUTPUT', { target: EDGE_MESH_CHAIN }, 3);
    const res = await b.cleanup();
    expect(res.removed).toBeGreaterThan(0);
    expect(t.chains.has(EDGE_MESH_CHAIN)).toBe(false);
    expect(t.chains.has(EDGE_MESH_TCP_CHAIN)).toBe(false);
    expect(t.chains.get('PREROUTING')).toEqual([{ ...kubeJump, packets: 0, bytes: 0 }]);
    expect(t.chains.get('OUTPUT')).toEqual([]);
    expect((await b.cleanup()).removed).toBe(0);
  });

  it('status lists our chains and the first rules of PREROUTING/OUTPUT like iptables -nvL', async () => {
    const t = new MemoryTable();
    t.foreignInsert('PREROUTING', kubeJump);
    const b = new IptablesNatBackend(t);
    await b.sync(desired(['10.10.0.3']));
    t.chains.get(EDGE_MESH_CHAIN)![0]!.packets = 2655000;
    const s = await b.status();
    expect(s.text).toMatch(/Chain EDGE-MESH \(2 references\)/);
    expect(s.text).toMatch(/1 +2655K +0 +RETURN +all +-- +\* +\* +0\.0\.0\.0\/0 +10\.10\.0\.3 +\/\* ignore ns\/10\.10\.0\.3 service \*\//);
    expect(s.text).toMatch(/DNAT +tcp .* to:169\.254\.96\.16:40001/);
    expect(s.order.ok).toBe(true);
  });

  describe('the lock-free look first (legacy: expectChange false)', () => {
    /** A MemoryTable with begin() (the locked read of legacy) and the legacy built-in layout signal. */
    class LockingTable extends MemoryTable {
      begins = 0;
      override async info(): Promise<TableInfo> {
        const layout = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING'].map((c) => this.chains.get(c)!.length).join(',');
        return { ...(await super.info()), builtinLayout: layout };
      }
      async begin(chains: readonly string[]): Promise<TableTransaction> {
        this.begins++;
        this.reads--; // the snapshot below is the transaction's read, not a lock-free one
        const snapshot = await this.read(chains);
        return { snapshot, commit: (ops: readonly TxOp[]) => this.apply(ops), abort: async () => undefined };
      }
    }

    it('a check that finds nothing to do reads without the lock; a user-chain write by kube-proxy keeps it lock-free; a rule above our jump goes straight to the locked repair', async () => {
      const t = new LockingTable();
      t.chains.set('KUBE-SERVICES', []);
      const b = new IptablesNatBackend(t);
      const want = desired(['10.10.0.3']);
      // An event sync (a change is expected): the locked read-modify-commit, no look first.
      expect((await b.sync(want)).changed).toBe(true);
      expect({ begins: t.begins, reads: t.reads }).toEqual({ begins: 1, reads: 0 });
      // A periodic resync with nothing to do: one lock-free read, no lock, no commit.
      const commits = t.commits;
      expect((await b.sync(want, { expectChange: false })).changed).toBe(false);
      expect({ begins: t.begins, reads: t.reads, commits: t.commits }).toEqual({ begins: 1, reads: 1, commits });
      // kube-proxy rewrites its own chain: the built-ins did not move, so still lock-free.
      t.chains.get('KUBE-SERVICES')!.push({ dst: '10.10.0.9/32', target: 'RETURN', packets: 0, bytes: 0 });
      t.generation++;
      expect((await b.sync(want, { expectChange: false })).changed).toBe(false);
      expect({ begins: t.begins, reads: t.reads }).toEqual({ begins: 1, reads: 2 });
      // kube-proxy restarts and puts its jump above ours: the layout moved, the repair takes the lock at once.
      t.foreignInsert('PREROUTING', kubeJump);
      const repair = await b.sync(want, { expectChange: false });
      expect(repair.orderRepairs).toBe(1);
      expect({ begins: t.begins, reads: t.reads }).toEqual({ begins: 2, reads: 2 });
      expect(t.chains.get('PREROUTING')!.map((r) => r.target)).toEqual(['EDGE-MESH', 'KUBE-SERVICES']);
      // A foreign change to our own chain is found by the lock-free look, then written under the lock.
      t.chains.get('EDGE-MESH')!.splice(0, 1);
      t.generation++;
      const fixed = await b.sync(want, { expectChange: false });
      expect(fixed.added).toBe(1);
      expect({ begins: t.begins, reads: t.reads }).toEqual({ begins: 3, reads: 3 });
    });
  });
});
