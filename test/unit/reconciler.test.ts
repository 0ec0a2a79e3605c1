import { afterEach, describe, expect, it } from 'vitest';
import { IptablesNatBackend } from '../../src/netfilter/iptables/iptables.js';
import { Reconciler, type SyncReport } from '../../src/netfilter/reconciler.js';
import { EDGE_MESH_CHAIN, type Family } from '../../src/netfilter/rules.js';
import type { FamilyIntent } from '../../src/intent/desired.js';
import { parseHostPort, parseIp } from '../../src/net.js';
import { MemoryTable } from '../helpers/memory-table.js';

/** The ipv4 intent of ignoring `ips` (for the service a/b), with no service CIDR. */
function set(ips: string[]): Partial<Record<Family, FamilyIntent>> {
  return { ipv4: { family: 'ipv4', ignored: ips.map((ip) => ({ ip: parseIp(ip), service: 'a/b' })), serviceCidrs: [], proxy: parseHostPort('169.254.96.16:40001') } };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await sleep(10);
  }
}

let rec: Reconciler | undefined;
afterEach(async () => {
  await rec?.stop();
  rec = undefined;
});

describe('Reconciler', () => {
  it('writes nothing before the sources have listed everything once', async () => {
    const t = new MemoryTable();
    let desired: Partial<Record<Family, FamilyIntent>> | undefined;
    rec = new Reconciler({ backends: [new IptablesNatBackend(t)], desired: () => desired, minSyncPeriodMs: 20, syncPeriodMs: 60_000, orderCheckPeriodMs: 50 });
    const reports: SyncReport[] = [];
    rec.on('sync', (r) => reports.push(r));
    rec.start();
    await until(() => reports.length === 1);
    expect(reports[0]!.skipped).toBe('not-synced');
    expect(t.commits).toBe(0);
    desired = set(['10.0.0.1']);
    rec.requestSync('event');
    await until(() => t.commits === 1);
    expect(rec.stats.firstSyncDone).toBe(true);
    // The first sync with something to write is the initial one, though an event asked for it;
    // the next change is an event again.
    await until(() => reports.length === 2);
    expect(reports.map((r) => r.reason)).toEqual(['initial', 'initial']);
    expect(reports[1]!.skipped).toBeUndefined();
    desired = set(['10.0.0.1', '10.0.0.2']);
    rec.requestSync('event');
    await until(() => reports.length === 3);
    expect(reports[2]!.reason).toBe('event');
  });

  it('beforeFirstWrite runs once, after the sources listed and before the first table read; its failure is logged, the sync goes on', async () => {
    const t = new MemoryTable();
    let desired: Partial<Record<Family, FamilyIntent>> | undefined;
    const calls: number[] = [];
    const warnings: string[] = [];
    const log = { debug: () => undefined, info: () => undefined, warn: (_: object, m?: string) => warnings.push(String(m)), error: () => undefined };
    rec = new Reconciler({
      backends: [new IptablesNatBackend(t)],
      desired: () => desired,
      minSyncPeriodMs: 10,
      syncPeriodMs: 60_000,
      orderCheckPeriodMs: 60_000,
      log,
      beforeFirstWrite: () => {
        calls.push(t.reads);
        throw new Error('no addon');
      },
    });
    const reports: SyncReport[] = [];
    rec.on('sync', (r) => reports.push(r));
    rec.start();
    await until(() => reports.length === 1);
    expect(calls).toEqual([]); // nothing listed yet: not called
    desired = set(['10.0.0.1']);
    rec.requestSync('event');
    await until(() => t.commits === 1);
    desired = set(['10.0.0.1', '10.0.0.2']);
    rec.requestSync('event');
    await until(() => t.commits === 2);
    expect(calls).toEqual([0]); // once, before the table was first read
    expect(warnings).toEqual(['before the first sync: no addon']);
    expect(reports.filter((r) => !r.skipped).every((r) => r.ok)).toBe(true);
  });

  it('coalesces a burst of events into at most one sync per min-sync-period', async () => {
    const t = new MemoryTable();
    let ips = ['10.0.0.1'];
    rec = new Reconciler({ backends: [new IptablesNatBackend(t)], desired: () => set(ips), minSyncPeriodMs: 200, syncPeriodMs: 60_000, orderCheckPeriodMs: 10_000 });
    rec.start();
    await until(() => t.commits === 1);
    const t0 = Date.now();
    for (let i = 2; i < 50; i++) {
      ips = [...ips, `10.0.0.${i}`];
      rec.requestSync('event');
    }
    await until(() => t.chains.get(EDGE_MESH_CHAIN)!.length === 49);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150);
    expect(t.commits).toBe(2);
  });

  it('repairs the order within one watchdog period when another writer inserts above our jump', async () => {
    const t = new MemoryTable();
    rec = new Reconciler({ backends: [new IptablesNatBackend(t)], desired: () => set([]), minSyncPeriodMs: 1000, syncPeriodMs: 60_000, orderCheckPeriodMs: 50 });
    rec.start();
    await until(() => t.commits === 1);
    t.foreignInsert('PREROUTING', { comment: 'kubernetes service portals', target: 'KUBE-SERVICES' }, 1);
    const t0 = Date.now();
    await until(() => t.chains.get('PREROUTING')![0]!.target === EDGE_MESH_CHAIN);
    expect(Date.now() - t0).toBeLessThan(1000); // not held back by min-sync-period
    expect(rec.stats.orderRepairs).toBe(1);
  });

  it('a desired state that throws is a failed sync (reported, retried with backoff), not an unhandled rejection', async () => {
    const t = new MemoryTable();
    let broken = true;
    rec = new Reconciler({
      backends: [new IptablesNatBackend(t)],
      desired: () => {
        if (broken) throw new Error('bad service in the store');
        return set(['10.0.0.3']);
      },
      minSyncPeriodMs: 20,
      syncPeriodMs: 60_000,
      orderCheckPeriodMs: 10_000,
    });
    const reports: SyncReport[] = [];
    rec.on('sync', (r) => reports.push(r));
    rec.start();
    await until(() => reports.length >= 1);
    expect(reports[0]).toMatchObject({ ok: false });
    expect(reports[0]!.error!.message).toBe('bad service in the store');
    expect(t.commits).toBe(0);
    broken = false;
    await until(() => t.commits === 1);
    expect(reports.at(-1)).toMatchObject({ ok: true, reason: 'retry' });
  });

  it('retries a failed write with backoff and converges', async () => {
    const t = new MemoryTable();
    t.failNext = Object.assign(new Error('iptc_commit: Resource temporarily unavailable'), { code: 'EAGAIN' });
    rec = new Reconciler({ backends: [new IptablesNatBackend(t)], desired: () => set(['10.0.0.9']), minSyncPeriodMs: 30, syncPeriodMs: 60_000, orderCheckPeriodMs: 10_000 });
    const reports: SyncReport[] = [];
    rec.on('sync', (r) => reports.push(r));
    rec.start();
    await until(() => t.commits === 1);
    expect(reports[0]!.ok).toBe(false);
    expect(reports[0]!.error!.message).toMatch(/temporarily unavailable/);
    expect(reports.at(-1)!.reason).toBe('retry');
    expect(rec.stats.failures).toBe(1);
  });

  it('a periodic full resync restores rules someone deleted even when the change token did not move', async () => {
    const t = new MemoryTable();
    rec = new Reconciler({ backends: [new IptablesNatBackend(t)], desired: () => set(['10.0.0.1']), minSyncPeriodMs: 10, syncPeriodMs: 150, orderCheckPeriodMs: 10_000 });
    rec.start();
    await until(() => t.commits === 1);
    t.chains.get(EDGE_MESH_CHAIN)!.length = 0; // silent edit: generation untouched
    await until(() => t.chains.get(EDGE_MESH_CHAIN)!.length === 1);
  });

  it('after a write it keeps the token the commit returned and reads none: a foreign write right after ours is still seen by the watchdog', async () => {
    const t = new MemoryTable();
    const backend = new IptablesNatBackend(t);
    let tokenReads = 0;
    const changeToken = backend.changeToken.bind(backend);
    backend.changeToken = () => {
      tokenReads++;
      return changeToken();
    };
    // A foreign writer that lands right after each of our commits, before anybody could read a token.
    const apply = t.apply.bind(t);
    let writes = 0;
    t.apply = async (ops) => {
      const res = await apply(ops);
      if (ops.length > 0 && writes++ === 0) t.foreignInsert('PREROUTING', { target: 'KUBE-SERVICES' });
      return res;
    };
    rec = new Reconciler({ backends: [backend], desired: () => set(['10.0.0.1']), minSyncPeriodMs: 10, syncPeriodMs: 60_000, orderCheckPeriodMs: 40 });
    await rec.syncNow('initial');
    expect(tokenReads).toBe(1); // the one before the sync, none after the write
    rec.start();
    // The watchdog compares with the token our commit left, so the foreign insert counts as a change and is repaired.
    await until(() => writes === 2);
    expect(t.chains.get('PREROUTING')![0]!.target).toBe(EDGE_MESH_CHAIN);
  });

  it('tells the backend whether a write is expected: yes for initial and event syncs, no for periodic resyncs and watchdog checks', async () => {
    const t = new MemoryTable();
    const backend = new IptablesNatBackend(t);
    const seen: (boolean | undefined)[] = [];
    const sync = backend.sync.bind(backend);
    backend.sync = (d, o) => {
      seen.push(o?.expectChange);
      return sync(d, o);
    };
    rec = new Reconciler({ backends: [backend], desired: () => set(['10.0.0.1']), minSyncPeriodMs: 10, syncPeriodMs: 60_000, orderCheckPeriodMs: 40 });
    rec.start();
    await until(() => seen.length === 1); // initial
    rec.requestSync('event');
    await until(() => seen.length === 2);
    t.foreignInsert('PREROUTING', { target: 'KUBE-SERVICES' });
    await until(() => seen.length === 3); // the watchdog's order sync
    await rec.syncNow('periodic');
    expect(seen).toEqual([true, true, false, false]);
    expect(t.chains.get('PREROUTING')![0]!.target).toBe(EDGE_MESH_CHAIN);
  });

  describe('health (kube-proxy\'s rule)', () => {
    it('stays healthy while the sources never answer (syncs skipped), however long: nothing is late', async () => {
      const t = new MemoryTable();
      rec = new Reconciler({ backends: [new IptablesNatBackend(t)], desired: () => undefined, minSyncPeriodMs: 5, syncPeriodMs: 20, orderCheckPeriodMs: 50 });
      rec.start();
      for (let i = 0; i < 5; i++) rec.requestSync('event');
      await sleep(100);
      expect(rec.stats.queuedSince).toBeUndefined();
      expect(rec.health(1, Date.now() + 3_600_000)).toEqual({ ok: true });
      expect(rec.stats.firstSyncDone).toBe(false);
    });

    it('a queued change is cleared by the sync that applies it; a failing write makes it unhealthy only past the bound', async () => {
      const t = new MemoryTable();
      rec = new Reconciler({ backends: [new IptablesNatBackend(t)], desired: () => set(['10.10.0.1']), minSyncPeriodMs: 5, syncPeriodMs: 60_000, orderCheckPeriodMs: 60_000, maxBackoffMs: 60_000 });
      rec.start();
      await until(() => rec!.stats.firstSyncDone);
      expect(rec.stats.queuedSince).toBeUndefined();
      t.failNext = Object.assign(new Error('iptc_commit: Invalid argument'), { code: 'EINVAL' });
      // a foreign change to our chain, then an event: the write fails
      t.chains.get(EDGE_MESH_CHAIN)!.splice(0, 1);
      const failed = new Promise<SyncReport>((r) => rec!.once('sync', r));
      rec.requestSync('event');
      expect((await failed).ok).toBe(false);
      const since = rec.stats.failingSince!;
      expect(since).toBeGreaterThan(0);
      expect(rec.health(10_000, since + 9_000).ok).toBe(true);
      const late = rec.health(10_000, since + 11_000);
      expect(late.ok).toBe(false);
      expect(late.reason).toMatch(/syncs failing for 11s \(1 in a row; bound 10s\)/);
      await rec.syncNow('manual');
      expect(rec.stats.failingSince).toBeUndefined();
      expect(rec.health(10_000, since + 11_000).ok).toBe(true);
    });
  });
});

describe('Reconciler: the generation a sync includes', () => {
  it('a successful report names the source generation read before desired(); a failed one names none', async () => {
    const t = new MemoryTable();
    let gen = 7;
    let ips = ['10.0.0.1'];
    rec = new Reconciler({
      backends: [new IptablesNatBackend(t)],
      desired: () => {
        gen++; // a change arriving while the sync runs is not in it
        return set(ips);
      },
      generation: () => gen,
      minSyncPeriodMs: 0,
      syncPeriodMs: 60_000,
      orderCheckPeriodMs: 1000,
    });
    const ok = await rec.syncNow();
    expect(ok.ok).toBe(true);
    expect(ok.generation).toBe(7);
    ips = ['10.0.0.2'];
    t.failNext = new Error('boom');
    const bad = await rec.syncNow();
    expect(bad.ok).toBe(false);
    expect(bad.generation).toBeUndefined();
  });
});
