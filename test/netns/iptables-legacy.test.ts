// The iptables-legacy backend against the real kernel, each test in namespaces of its own.
// Locks: tests never hold /run/xtables.lock (it is shared by every namespace on the machine);
// every apply here and every iptables CLI call use a private lock file.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { LegacyIptablesTable } from '../../src/netfilter/iptables/iptables-legacy.js';
import type { TxOp } from '../../src/netfilter/types.js';
import { LockTimeoutError, TransactionError } from '../../src/errors.js';
import { type Family, type Rule, sameRule } from '../../src/netfilter/rules.js';
import { loadKubeProxyIptables } from '../helpers/fixtures.js';
import { Netns, describeNetns } from '../helpers/netns.js';

let dir = '';
let lockfile = '';
const namespaces: Netns[] = [];
const children: ChildProcess[] = [];

async function newNs(label: string): Promise<Netns> {
  const ns = await Netns.create(label);
  namespaces.push(ns);
  return ns;
}

function cliEnv(): NodeJS.ProcessEnv {
  return { ...process.env, XTABLES_LOCKFILE: lockfile };
}

const save = (ns: Netns, family: Family) => ns.run(family === 'ipv4' ? 'iptables-legacy-save' : 'ip6tables-legacy-save', ['-t', 'nat']).then((r) => r.stdout);
const cli = (ns: Netns, family: Family, args: string[]) => ns.run(family === 'ipv4' ? 'iptables-legacy' : 'ip6tables-legacy', ['-w', '-t', 'nat', ...args], { env: cliEnv() });

/** Save output without the timestamp comments and with counters zeroed. */
function norm(text: string): string[] {
  return text
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.replace(/\[\d+:\d+\]/, '[0:0]'));
}

function table(ns: Netns, family: Family, extra: Partial<ConstructorParameters<typeof LegacyIptablesTable>[0]> = {}): LegacyIptablesTable {
  return new LegacyIptablesTable({ family, netns: ns.name, lockfile, ...extra });
}

interface Layout {
  family: Family;
  ignored: { ip: string; ns: string; name: string }[];
  cidr: string;
  proxy: { address: string; port: number };
  /** The lines iptables-legacy-save must show for our chains. */
  lines: string[];
}

const V4: Layout = {
  family: 'ipv4',
  ignored: [
    { ip: '10.10.0.3/32', ns: 'kube-system', name: 'coredns' },
    { ip: '10.10.0.1/32', ns: 'default', name: 'kubernetes' },
  ],
  cidr: '10.10.0.0/16',
  proxy: { address: '169.254.96.16', port: 40001 },
  lines: [
    '-A PREROUTING -m comment --comment "edgemesh root chain" -j EDGE-MESH',
    '-A OUTPUT -m comment --comment "edgemesh root chain" -j EDGE-MESH',
    '-A EDGE-MESH -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN',
    '-A EDGE-MESH -d 10.10.0.1/32 -m comment --comment "ignore default/kubernetes service" -j RETURN',
    '-A EDGE-MESH -d 10.10.0.0/16 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP',
    '-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination 169.254.96.16:40001',
  ],
};

const V6: Layout = {
  family: 'ipv6',
  ignored: [
    { ip: 'fd00:10::3/128', ns: 'kube-system', name: 'coredns' },
    { ip: 'fd00:10::1/128', ns: 'default', name: 'kubernetes' },
  ],
  cidr: 'fd00:10::/112',
  proxy: { address: 'fd00::96:16', port: 40001 },
  lines: [
    '-A PREROUTING -m comment --comment "edgemesh root chain" -j EDGE-MESH',
    '-A OUTPUT -m comment --comment "edgemesh root chain" -j EDGE-MESH',
    '-A EDGE-MESH -d fd00:10::3/128 -m comment --comment "ignore kube-system/coredns service" -j RETURN',
    '-A EDGE-MESH -d fd00:10::1/128 -m comment --comment "ignore default/kubernetes service" -j RETURN',
    '-A EDGE-MESH -d fd00:10::/112 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP',
    '-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination [fd00::96:16]:40001',
  ],
};

const rootJump: Rule = { comment: 'edgemesh root chain', target: 'EDGE-MESH' };

function layoutChains(l: Layout): { edgeMesh: Rule[]; tcp: Rule[] } {
  return {
    edgeMesh: [
      ...l.ignored.map((s) => ({ dst: s.ip, comment: `ignore ${s.ns}/${s.name} service`, target: 'RETURN' })),
      { dst: l.cidr, protocol: 'tcp' as const, comment: 'tcp service proxy', target: 'EDGE-MESH-TCP' },
    ],
    tcp: [{ protocol: 'tcp' as const, comment: 'edgemesh tcp proxy', target: 'DNAT', toDestination: l.proxy }],
  };
}

function layoutOps(l: Layout): TxOp[] {
  const c = layoutChains(l);
  return [
    { op: 'replaceChain', chain: 'EDGE-MESH-TCP', rules: c.tcp },
    { op: 'replaceChain', chain: 'EDGE-MESH', rules: c.edgeMesh },
    { op: 'insertRule', chain: 'PREROUTING', rule: rootJump, position: 1 },
    { op: 'insertRule', chain: 'OUTPUT', rule: rootJump, position: 1 },
  ];
}

/** The same layout written by the iptables CLI, one command per rule. */
function layoutCli(l: Layout): string[][] {
  const c = layoutChains(l);
  const ruleArgs = (r: Rule): string[] => [
    ...(r.dst ? ['-d', r.dst] : []),
    ...(r.protocol ? ['-p', r.protocol] : []),
    ...(r.comment !== undefined ? ['-m', 'comment', '--comment', r.comment] : []),
    '-j',
    r.target,
    ...(r.toDestination ? ['--to-destination', l.family === 'ipv6' ? `[${r.toDestination.address}]:${r.toDestination.port}` : `${r.toDestination.address}:${r.toDestination.port}`] : []),
  ];
  return [
    ['-N', 'EDGE-MESH-TCP'],
    ...c.tcp.map((r) => ['-A', 'EDGE-MESH-TCP', ...ruleArgs(r)]),
    ['-N', 'EDGE-MESH'],
    ...c.edgeMesh.map((r) => ['-A', 'EDGE-MESH', ...ruleArgs(r)]),
    ['-I', 'PREROUTING', '1', ...ruleArgs(rootJump)],
    ['-I', 'OUTPUT', '1', ...ruleArgs(rootJump)],
  ];
}

function isOurs(line: string): boolean {
  return line.includes('EDGE-MESH');
}

describeNetns('iptables-legacy backend (libiptc) in network namespaces', () => {
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'em-iptc-'));
    lockfile = join(dir, 'xtables.lock');
  });
  afterEach(async () => {
    for (const c of children.splice(0)) killHolder(c);
    for (const ns of namespaces.splice(0)) await ns.destroy();
  });
  afterAll(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const layout of [V4, V6]) {
    const fam = layout.family;

    it(`${fam}: applies the seed layout on top of kube-proxy's rules, jumps at rule 1, kube-proxy lines unchanged`, async () => {
      const ns = await newNs('layout');
      await loadKubeProxyIptables(ns, 'legacy', fam);
      const before = norm(await save(ns, fam));
      expect(before.some((l) => l.startsWith('-A KUBE-SERVICES'))).toBe(true);
      const t = table(ns, fam);
      const res = await t.apply(layoutOps(layout));
      expect(res.attempts).toBe(1);
      const after = norm(await save(ns, fam));
      for (const line of layout.lines) expect(after).toContain(line);
      expect(after.find((l) => l.startsWith('-A PREROUTING '))).toBe(layout.lines[0]);
      expect(after.find((l) => l.startsWith('-A OUTPUT '))).toBe(layout.lines[1]);
      // Everything that is not ours is byte-identical, in the same order.
      expect(after.filter((l) => !isOurs(l))).toEqual(before);
      expect(after.filter(isOurs)).toEqual([':EDGE-MESH - [0:0]', ':EDGE-MESH-TCP - [0:0]', ...layout.lines]);

      // Reading back gives the rules as typed data, the jumps at position 1.
      const snap = await t.read(['PREROUTING', 'OUTPUT', 'EDGE-MESH', 'EDGE-MESH-TCP', 'NOT-THERE']);
      expect(snap.chains.has('NOT-THERE')).toBe(false);
      const c = layoutChains(layout);
      for (const hook of ['PREROUTING', 'OUTPUT']) {
        const rules = snap.chains.get(hook)!;
        expect(sameRule(rules[0]!, rootJump)).toBe(true);
        // kube-proxy's own jump follows ours and is recognisably not ours.
        expect(rules[1]).toMatchObject({ target: 'KUBE-SERVICES', comment: 'kubernetes service portals' });
      }
      const em = snap.chains.get('EDGE-MESH')!;
      expect(em).toHaveLength(c.edgeMesh.length);
      em.forEach((r, i) => expect(sameRule(r, c.edgeMesh[i]!)).toBe(true));
      expect(snap.chains.get('EDGE-MESH-TCP')).toEqual([
        { protocol: 'tcp', comment: 'edgemesh tcp proxy', target: 'DNAT', toDestination: layout.proxy, packets: 0, bytes: 0 },
      ]);
      expect(snap.info.token).toBe((await t.info()).token);

      // kube-proxy's rules with matches we do not model are read as somebody else's.
      const kube = await t.read(['KUBE-SERVICES', 'KUBE-MARK-MASQ', 'KUBE-POSTROUTING']);
      const all = [...kube.chains.values()].flat();
      expect(all.length).toBeGreaterThan(3);
      expect(all.some((r) => r.unknown?.length)).toBe(true);
      expect(all.find((r) => r.target === 'MARK')?.unknown).toContain('MARK-options');

      // Applying the same desired chains again changes nothing.
      const token = (await t.info()).token;
      await t.apply(layoutOps(layout).slice(0, 2));
      expect((await t.info()).token).toBe(token);
      expect(norm(await save(ns, fam))).toEqual(after);
    });

    it(`${fam}: what we write is what ${fam === 'ipv4' ? 'iptables' : 'ip6tables'}-legacy -A writes for the same arguments`, async () => {
      const ours = await newNs('ours');
      const theirs = await newNs('cli');
      await loadKubeProxyIptables(ours, 'legacy', fam);
      await loadKubeProxyIptables(theirs, 'legacy', fam);
      await table(ours, fam).apply(layoutOps(layout));
      for (const args of layoutCli(layout)) await cli(theirs, fam, args);
      expect(norm(await save(ours, fam))).toEqual(norm(await save(theirs, fam)));
      // Same blob size and entry count: the entries have the same layout (revisions, sizes).
      expect((await table(ours, fam).info()).token).toBe((await table(theirs, fam).info()).token);
      // And the CLI finds our rules with -C (it compares the raw entries, matches and target data).
      for (const args of layoutCli(layout).filter((a) => a[0] === '-A')) await cli(ours, fam, ['-C', ...args.slice(1)]);
      for (const hook of ['PREROUTING', 'OUTPUT']) await cli(ours, fam, ['-C', hook, '-m', 'comment', '--comment', 'edgemesh root chain', '-j', 'EDGE-MESH']);
    });
  }

  it('a transaction with a failing operation in the middle changes nothing', async () => {
    const ns = await newNs('atomic');
    await loadKubeProxyIptables(ns, 'legacy', 'ipv4');
    const t = table(ns, 'ipv4');
    await t.apply(layoutOps(V4));
    const before = await save(ns, 'ipv4');
    const good: TxOp[] = [
      { op: 'replaceChain', chain: 'EM-NEW', rules: [{ dst: '10.1.0.0/16', target: 'RETURN' }] },
      { op: 'insertRule', chain: 'EM-NEW', rule: { dst: '10.2.0.0/16', target: 'RETURN' }, position: 2 },
      { op: 'flushChain', chain: 'EDGE-MESH' },
    ];
    const bad: { op: TxOp; why: RegExp }[] = [
      { op: { op: 'deleteRule', chain: 'EDGE-MESH', rule: { dst: '10.99.0.1/32', target: 'RETURN' } }, why: /no such rule/ },
      { op: { op: 'insertRule', chain: 'EDGE-MESH', rule: { target: 'NO-SUCH-CHAIN' } }, why: /does not exist/ },
      { op: { op: 'deleteChain', chain: 'EDGE-MESH-TCP' }, why: /cannot delete chain/ },
      { op: { op: 'replaceChain', chain: 'PREROUTING', rules: [] }, why: /built-in chain PREROUTING/ },
      { op: { op: 'insertRule', chain: 'PREROUTING', rule: { target: 'RETURN' }, position: 99 }, why: /position 99 is beyond the end/ },
      { op: { op: 'moveRule', chain: 'PREROUTING', rule: { target: 'KUBE-SERVICES' }, position: 1 }, why: /no such rule/ },
      { op: { op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.0.0.0/33', target: 'RETURN' } }, why: /not a CIDR/ },
    ];
    for (const b of bad) {
      const err = await t.apply([...good, b.op, { op: 'insertRule', chain: 'EM-NEW', rule: { target: 'ACCEPT' } }]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransactionError);
      expect((err as TransactionError).code).toBe('ETRANSACTION');
      expect((err as TransactionError).opIndex).toBe(3);
      expect((err as Error).message).toMatch(b.why);
      expect(await save(ns, 'ipv4').then((s) => norm(s))).toEqual(norm(before));
    }
  });

  it('waits for the xtables lock, fails with ELOCKTIMEOUT after the timeout, succeeds when released in time', async () => {
    const ns = await newNs('lock');
    const t = table(ns, 'ipv4', { lockWaitMs: 600, lockIntervalMs: 10 });
    const holder = holdLock(lockfile, 20);
    await waitLocked(lockfile, true);
    const t0 = Date.now();
    const err = await t.apply([{ op: 'replaceChain', chain: 'EM-LOCK', rules: [] }]).catch((e: unknown) => e);
    const waited = Date.now() - t0;
    expect(err).toBeInstanceOf(LockTimeoutError);
    expect((err as LockTimeoutError).code).toBe('ELOCKTIMEOUT');
    expect((err as LockTimeoutError).syscall).toBe('flock');
    expect((err as Error).message).toContain(lockfile);
    expect((err as Error).message).toContain('600 ms');
    expect(waited).toBeGreaterThanOrEqual(550);
    expect(waited).toBeLessThan(5000);
    expect((await t.read(['EM-LOCK'])).chains.size).toBe(0);
    killHolder(holder);
    await waitLocked(lockfile, false);

    // Held for ~300 ms, we wait up to 3 s: we get it after the holder lets go.
    children.push(holdLock(lockfile, 0.3));
    await waitLocked(lockfile, true);
    const res = await table(ns, 'ipv4', { lockWaitMs: 3000, lockIntervalMs: 10 }).apply([{ op: 'replaceChain', chain: 'EM-LOCK', rules: [] }]);
    expect(res.lockWaitMs).toBeGreaterThan(100);
    expect(res.lockWaitMs).toBeLessThan(3000);
    expect((await t.read(['EM-LOCK'])).chains.has('EM-LOCK')).toBe(true);
  });

  it('a concurrent iptables-legacy -w writer and 200 of our transactions both end exactly as intended', async () => {
    const ns = await newNs('race');
    await loadKubeProxyIptables(ns, 'legacy', 'ipv4');
    const t = table(ns, 'ipv4', { lockWaitMs: 20_000, lockIntervalMs: 5 });
    await t.apply([{ op: 'replaceChain', chain: 'EM-OURS', rules: [] }]);
    await cli(ns, 'ipv4', ['-N', 'WRITER']);
    const N = 240;
    // Appends N rules, deleting every third right after adding it.
    const script = `i=0; while [ $i -lt ${N} ]; do a=10.99.$((i / 256)).$((i % 256))/32; iptables-legacy -w -t nat -A WRITER -s $a -j RETURN || exit 1; if [ $((i % 3)) -eq 0 ]; then iptables-legacy -w -t nat -D WRITER -s $a -j RETURN || exit 1; fi; i=$((i + 1)); done`;
    let writerDone = false;
    const writer = ns.sh(script, { env: cliEnv(), timeoutMs: 120_000 }).finally(() => (writerDone = true));
    let overlapped = 0;
    const expectedEdge = (k: number): Rule[] => Array.from({ length: (k % 4) + 1 }, (_, j) => ({ dst: `10.20.${k % 7}.${j}/32`, comment: `tx ${k}`, target: 'RETURN' }));
    let retried = 0;
    for (let k = 0; k < 200; k++) {
      const r = await t.apply([
        { op: 'insertRule', chain: 'EM-OURS', rule: { dst: `10.30.${k >> 8}.${k & 255}/32`, comment: `tx ${k}`, target: 'RETURN' }, position: k + 1 },
        { op: 'replaceChain', chain: 'EDGE-MESH', rules: expectedEdge(k) },
      ]);
      if (r.attempts > 1) retried++;
      if (!writerDone) overlapped++;
    }
    // The writer really ran while we applied.
    expect(overlapped).toBeGreaterThan(20);
    const w = await writer;
    expect(w.code).toBe(0);
    const snap = await t.read(['EM-OURS', 'EDGE-MESH', 'WRITER']);
    const ours = snap.chains.get('EM-OURS')!;
    expect(ours.map((r) => r.dst)).toEqual(Array.from({ length: 200 }, (_, k) => `10.30.${k >> 8}.${k & 255}/32`));
    expect(snap.chains.get('EDGE-MESH')!.map((r) => ({ dst: r.dst, comment: r.comment, target: r.target }))).toEqual(expectedEdge(199));
    const wantWriter = Array.from({ length: N }, (_, i) => i)
      .filter((i) => i % 3 !== 0)
      .map((i) => `10.99.${i >> 8}.${i & 255}/32`);
    expect(snap.chains.get('WRITER')!.map((r) => r.src)).toEqual(wantWriter);
    // Both used the (private) lock: no lost race should have been needed.
    expect(retried).toBe(0);
  });

  it('a writer that ignores our lock makes commits lose races (EAGAIN): we retry on a fresh read and end as intended', async () => {
    const ns = await newNs('eagain');
    await loadKubeProxyIptables(ns, 'legacy', 'ipv4');
    // maxAttempts is generous: without a shared lock, collisions are frequent by design of this test.
    const t = table(ns, 'ipv4', { maxAttempts: 100 });
    await t.apply([{ op: 'replaceChain', chain: 'EM-OURS', rules: [] }]);
    await cli(ns, 'ipv4', ['-N', 'RACER']);
    // A different lock file: the CLI and we do not exclude each other. Its own commits may fail (EAGAIN): tolerated.
    const other = join(dir, 'other.lock');
    const startWriter = (round: number) => {
      let done = false;
      const p = ns
        .sh(`i=0; while [ $i -lt 400 ]; do iptables-legacy -w -t nat -A RACER -s 10.${90 + round}.$((i / 256)).$((i % 256))/32 -j RETURN 2>/dev/null; i=$((i + 1)); done; exit 0`, {
          env: { ...process.env, XTABLES_LOCKFILE: other },
          timeoutMs: 120_000,
        })
        .finally(() => (done = true));
      return { p, done: () => done };
    };
    // Collisions need our read-commit window to overlap one of the writer's commits; on a loaded
    // machine that can take a while, so keep going (bounded: 3 writer rounds, 3 000 transactions)
    // until at least 200 transactions ran and some race was lost and absorbed.
    let attempts = 0;
    let overlapped = 0;
    let k = 0;
    for (let round = 0; round < 3 && (k < 200 || attempts === k); round++) {
      const writer = startWriter(round);
      while (!writer.done() && k < 3000 && (k < 200 || attempts === k)) {
        const r = await t.apply([{ op: 'insertRule', chain: 'EM-OURS', rule: { dst: `10.31.${k >> 8}.${k & 255}/32`, target: 'RETURN' }, position: k + 1 }]);
        attempts += r.attempts;
        overlapped++;
        k++;
      }
      await writer.p;
    }
    const ours = (await t.read(['EM-OURS'])).chains.get('EM-OURS')!;
    expect(ours.map((r) => r.dst)).toEqual(Array.from({ length: k }, (_, i) => `10.31.${i >> 8}.${i & 255}/32`));
    expect(overlapped).toBeGreaterThan(20);
    // The races did happen and were absorbed by retries.
    expect(attempts).toBeGreaterThan(k);
    console.log(`EAGAIN test: ${attempts - k} retries over ${k} transactions (${overlapped} overlapped the writer)`);
  });

  for (const layout of [V4, V6]) {
    const fam = layout.family;
    it(`${fam}: the lock-free read (IPT_SO_GET_ENTRIES decoded by us) gives exactly what libiptc reads, for every kind of rule and chain`, async () => {
      const ns = await newNs('rawread');
      await loadKubeProxyIptables(ns, 'legacy', fam);
      const t = table(ns, fam);
      await t.apply(layoutOps(layout));
      const any = fam === 'ipv4' ? '10.99.0.0/16' : 'fd00:99::/64';
      // Foreign rules of every shape the decoder must name: verdicts, a jump to an empty chain, a
      // goto, a rule without a target (fall through), module targets, inverted and interface
      // matches, and a chain created after the others.
      for (const args of [
        ['-N', 'EM-EMPTY'],
        ['-N', 'EM-LATE'],
        ['-A', 'EM-LATE', '-d', any, '-j', 'ACCEPT'],
        ['-A', 'EM-LATE', '-s', any, '-j', 'EDGE-MESH'],
        ['-A', 'EM-LATE', '-j', 'EM-EMPTY'],
        ['-A', 'EM-LATE', '-g', 'EDGE-MESH-TCP'],
        ['-A', 'EM-LATE', '-p', 'udp'],
        ['-A', 'EM-LATE', '!', '-d', any, '-i', 'eth0', '-j', 'RETURN'],
        ['-A', 'EM-LATE', '-p', 'tcp', '--dport', '53', '-j', 'REDIRECT', '--to-ports', '5353'],
        ['-A', 'EM-LATE', '-j', 'RETURN'],
        ['-I', 'OUTPUT', '2', '-j', 'EM-LATE'],
        ['-A', 'POSTROUTING', '-j', 'EM-EMPTY'],
      ])
        await cli(ns, fam, args);
      const chains = ['PREROUTING', 'INPUT', 'OUTPUT', 'POSTROUTING', 'EDGE-MESH', 'EDGE-MESH-TCP', 'KUBE-SERVICES', 'KUBE-POSTROUTING', 'EM-EMPTY', 'EM-LATE', 'NO-SUCH-CHAIN'];
      const raw = await t.read(chains);
      const tx = await t.begin(chains);
      const viaLibiptc = tx.snapshot;
      await tx.abort();
      expect([...raw.chains.keys()]).toEqual([...viaLibiptc.chains.keys()]);
      expect(raw.chains.has('NO-SUCH-CHAIN')).toBe(false);
      expect(raw.chains.get('EM-EMPTY')).toEqual([]);
      for (const [name, rules] of viaLibiptc.chains) expect({ name, rules: raw.chains.get(name) }).toEqual({ name, rules });
      expect(raw.info.token).toBe(viaLibiptc.info.token);
      expect(raw.chains.get('EM-LATE')!.map((r) => r.target)).toEqual(['ACCEPT', 'EDGE-MESH', 'EM-EMPTY', 'EDGE-MESH-TCP', '', 'RETURN', 'REDIRECT', 'RETURN']);
      expect(raw.chains.get('OUTPUT')!.slice(0, 2).map((r) => r.target)).toEqual(['EDGE-MESH', 'EM-LATE']);
    });
  }

  it('begin/commit: one read and one commit under the xtables lock; others wait while it is open; abort writes nothing and lets go', async () => {
    const ns = await newNs('session');
    await loadKubeProxyIptables(ns, 'legacy', 'ipv4');
    const t = table(ns, 'ipv4');
    const before = norm(await save(ns, 'ipv4'));
    const tx = await t.begin(['PREROUTING', 'EDGE-MESH']);
    expect(tx.snapshot.chains.get('PREROUTING')!.map((r) => r.target)).toContain('KUBE-SERVICES');
    expect(tx.snapshot.chains.has('EDGE-MESH')).toBe(false);
    // While the transaction is open the lock is held: another writer gives up after its wait.
    await expect(table(ns, 'ipv4', { lockWaitMs: 200 }).apply([{ op: 'replaceChain', chain: 'EM-OTHER', rules: [] }])).rejects.toMatchObject({ code: 'ELOCKTIMEOUT' });
    await tx.abort();
    expect(norm(await save(ns, 'ipv4'))).toEqual(before);
    // Released: the same writer now succeeds.
    await table(ns, 'ipv4', { lockWaitMs: 200 }).apply([{ op: 'replaceChain', chain: 'EM-OTHER', rules: [] }]);

    const tx2 = await t.begin(['EDGE-MESH']);
    const r = await tx2.commit([
      { op: 'replaceChain', chain: 'EDGE-MESH', rules: [{ dst: '10.10.0.3/32', comment: 'ignore kube-system/coredns service', target: 'RETURN' }] },
      { op: 'insertRule', chain: 'PREROUTING', rule: { comment: 'edgemesh root chain', target: 'EDGE-MESH' }, position: 1 },
    ]);
    expect(r.attempts).toBe(1);
    const after = norm(await save(ns, 'ipv4'));
    expect(after).toContain('-A PREROUTING -m comment --comment "edgemesh root chain" -j EDGE-MESH');
    expect(after).toContain('-A EDGE-MESH -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN');
    // A failing op in a session writes nothing and releases the lock.
    const mid = norm(await save(ns, 'ipv4'));
    const tx3 = await t.begin(['EDGE-MESH']);
    await expect(tx3.commit([{ op: 'insertRule', chain: 'EDGE-MESH', rule: { target: 'RETURN' } }, { op: 'deleteChain', chain: 'NO-SUCH-CHAIN' }])).rejects.toMatchObject({
      code: 'ETRANSACTION',
      opIndex: 1,
    });
    expect(norm(await save(ns, 'ipv4'))).toEqual(mid);
    await table(ns, 'ipv4', { lockWaitMs: 200 }).apply([{ op: 'deleteChain', chain: 'EM-OTHER' }]);
  });

  it('replaceChain keeps the counters of unchanged rules and gives new rules zero; moveRule carries them', async () => {
    const ns = await newNs('counters');
    const t = table(ns, 'ipv4');
    // Counters set by iptables-restore --counters (no traffic needed: the kernel keeps what it is given).
    await ns.run('iptables-legacy-restore', ['--noflush', '--counters', '-w'], {
      env: cliEnv(),
      input: [
        '*nat',
        ':EM-COUNT - [0:0]',
        '[7:420] -A EM-COUNT -d 127.0.0.1/32 -p udp -m comment --comment hit -j RETURN',
        '[3:180] -A EM-COUNT -d 127.0.0.2/32 -m comment --comment other -j RETURN',
        '[5:300] -A EM-COUNT -d 127.0.0.4/32 -m comment --comment kept -j RETURN',
        'COMMIT',
        '',
      ].join('\n'),
    });
    const hit: Rule = { dst: '127.0.0.1/32', protocol: 'udp', comment: 'hit', target: 'RETURN' };
    const kept: Rule = { dst: '127.0.0.4/32', comment: 'kept', target: 'RETURN' };
    const fresh: Rule = { dst: '127.0.0.3/32', comment: 'new', target: 'RETURN' };
    const before = (await t.read(['EM-COUNT'])).chains.get('EM-COUNT')!;
    expect(before.map((r) => [r.packets, r.bytes])).toEqual([[7, 420], [3, 180], [5, 300]]);
    await t.apply([{ op: 'replaceChain', chain: 'EM-COUNT', rules: [fresh, hit, kept] }]);
    const after = (await t.read(['EM-COUNT'])).chains.get('EM-COUNT')!;
    expect(after).toHaveLength(3);
    expect(sameRule(after[0]!, fresh)).toBe(true);
    expect(sameRule(after[1]!, hit)).toBe(true);
    expect(sameRule(after[2]!, kept)).toBe(true);
    expect(after.map((r) => [r.packets, r.bytes])).toEqual([[0, 0], [7, 420], [5, 300]]);
    // moveRule carries the counters too.
    await t.apply([{ op: 'moveRule', chain: 'EM-COUNT', rule: kept, position: 1 }]);
    const moved = (await t.read(['EM-COUNT'])).chains.get('EM-COUNT')!;
    expect(moved.map((r) => r.comment)).toEqual(['kept', 'new', 'hit']);
    expect(moved.map((r) => [r.packets, r.bytes])).toEqual([[5, 300], [0, 0], [7, 420]]);
  });

  it('replaceChain reaches exactly the given contents from any starting contents (duplicates, reorders, foreign rules)', async () => {
    const ns = await newNs('replace');
    const t = table(ns, 'ipv4');
    const r = (k: string): Rule => ({ dst: `10.40.0.${k.charCodeAt(0) - 64}/32`, comment: k, target: 'RETURN' });
    const lists = ['ABC', 'CBA', 'AAB', 'BAAB', '', 'D', 'ABCDEFG', 'GFEDCBA', 'ACEG', 'AACCEEGG', 'CAGE', 'A'];
    await t.apply([{ op: 'replaceChain', chain: 'EM-REPL', rules: [] }]);
    // A rule we do not model in the chain: replaceChain must remove it too.
    await cli(ns, 'ipv4', ['-A', 'EM-REPL', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'RETURN']);
    for (const l of lists) {
      const want = [...l].map(r);
      await t.apply([{ op: 'replaceChain', chain: 'EM-REPL', rules: want }]);
      const got = (await t.read(['EM-REPL'])).chains.get('EM-REPL')!;
      expect(got.map((x) => x.comment).join(''), `after replaceChain to "${l}"`).toBe(l);
      got.forEach((x, i) => expect(sameRule(x, want[i]!)).toBe(true));
    }
  });

  it('info() token stays equal while nobody writes and changes when someone else writes', async () => {
    const ns = await newNs('info');
    await loadKubeProxyIptables(ns, 'legacy', 'ipv4');
    const t = table(ns, 'ipv4');
    const a = await t.info();
    expect(a.entries).toBeGreaterThan(10);
    expect(a.token).toMatch(new RegExp(`^${a.size}/${a.entries}/[0-9a-f]{16}$`));
    expect((await t.info()).token).toBe(a.token);
    await t.read(['KUBE-SERVICES']);
    expect((await t.info()).token).toBe(a.token);
    await cli(ns, 'ipv4', ['-A', 'OUTPUT', '-d', '10.77.0.1', '-j', 'RETURN']);
    const b = await t.info();
    expect(b.token).not.toBe(a.token);
    await cli(ns, 'ipv4', ['-D', 'OUTPUT', '-d', '10.77.0.1', '-j', 'RETURN']);
    expect((await t.info()).token).toBe(a.token);
  });

  it('info().builtinLayout stays put when only user chains are written (kube-proxy syncs) and moves when PREROUTING gains a rule', async () => {
    const ns = await newNs('layout-sig');
    await loadKubeProxyIptables(ns, 'legacy', 'ipv4');
    const t = table(ns, 'ipv4');
    await t.apply(layoutOps(V4));
    const a = await t.info();
    expect(a.builtinLayout).toMatch(/^0:\d+-\d+,1:\d+-\d+,3:\d+-\d+,4:\d+-\d+#[0-9a-f]{16}$/);
    // A kube-proxy-like write of its own chains: the token moves, the built-in layout does not.
    // KUBE-SEP-AAAA sorts before KUBE-SERVICES: the jump targets' offsets shift, their order does not.
    await ns.run('iptables-legacy-restore', ['-w', '--noflush'], { input: '*nat\n:KUBE-SVC-EXTRA - [0:0]\n:KUBE-SEP-AAAA - [0:0]\n-A KUBE-SEP-AAAA -j RETURN\n-A KUBE-SVC-EXTRA -j KUBE-SEP-AAAA\n-A KUBE-SERVICES -d 10.77.0.9/32 -j KUBE-SVC-EXTRA\nCOMMIT\n', env: cliEnv() });
    const b = await t.info();
    expect(b.token).not.toBe(a.token);
    expect(b.builtinLayout).toBe(a.builtinLayout);
    // A foreign rule above our jump: the layout moves, and the snapshot and commit report the same signal.
    await cli(ns, 'ipv4', ['-I', 'PREROUTING', '1', '-j', 'KUBE-SERVICES']);
    const c = await t.info();
    expect(c.builtinLayout).not.toBe(b.builtinLayout);
    expect((await t.read(['PREROUTING'])).info.builtinLayout).toBe(c.builtinLayout);
    const r = await t.apply([{ op: 'deleteRule', chain: 'PREROUTING', rule: { target: 'KUBE-SERVICES' } }]);
    expect(r.builtinLayoutAfter).toBe((await t.info()).builtinLayout);
  });

  it('info().token changes on a rewrite that keeps size and entry count (two jumps of PREROUTING swapped in one restore), and the digest ignores counters', async () => {
    const ns = await newNs('same-size');
    await loadKubeProxyIptables(ns, 'legacy', 'ipv4');
    const t = table(ns, 'ipv4');
    await t.apply(layoutOps(V4));
    const pre = (await t.read(['PREROUTING'])).chains.get('PREROUTING')!;
    expect(pre.length).toBeGreaterThanOrEqual(2);
    const a = await t.info();
    const tokenA = await t.watchToken();
    expect(tokenA).toBe(a.token);
    // Traffic through PREROUTING's rules moves counters, never the token.
    await ns.run('iptables-legacy', ['-w', '-t', 'nat', '-Z'], { env: cliEnv() });
    expect((await t.info()).token).toBe(a.token);
    const save = (await ns.run('iptables-legacy-save', ['-t', 'nat'], { env: cliEnv() })).stdout.split('\n').filter((l) => l.startsWith('-A PREROUTING '));
    const second = save[1]!.replace(/^-A PREROUTING /, '');
    await ns.run('iptables-legacy-restore', ['-w', '--noflush'], { input: `*nat\n-D PREROUTING ${second}\n-I PREROUTING 1 ${second}\nCOMMIT\n`, env: cliEnv() });
    const b = await t.info();
    expect([b.size, b.entries]).toEqual([a.size, a.entries]);
    expect(b.token).not.toBe(a.token);
    expect(b.builtinLayout).not.toBe(a.builtinLayout);
    // The watchdog's token sees it at the next poll (the restore opened the xtables lock file).
    expect(await t.watchToken()).toBe(b.token);
    t.close();
  });

  for (const fam of ['ipv4', 'ipv6'] as const) {
    it(`${fam}: info() and read() in a namespace without a nat table do not create it`, async () => {
      const ns = await newNs('nonat');
      const names = fam === 'ipv4' ? '/proc/net/ip_tables_names' : '/proc/net/ip6_tables_names';
      const list = async () => (await ns.sh(`cat ${names} 2>/dev/null || true`)).stdout.split('\n');
      expect(await list()).not.toContain('nat');
      const t = table(ns, fam);
      expect(await t.info()).toEqual({ size: 0, entries: 0, token: '0/0/', builtinLayout: '#' });
      const snap = await t.read(['PREROUTING', 'EDGE-MESH']);
      expect(snap.chains.size).toBe(0);
      expect(await list()).not.toContain('nat');
      // Writing creates it, as iptables would.
      await t.apply([{ op: 'replaceChain', chain: 'EDGE-MESH', rules: [] }]);
      expect(await list()).toContain('nat');
      expect((await t.info()).entries).toBeGreaterThan(0);
    });
  }
});

/** `flock -o`: flock itself holds the lock (the command does not inherit it), for `seconds`. */
function holdLock(file: string, seconds: number): ChildProcess {
  const c = spawn('flock', ['-o', '-x', file, 'sleep', String(seconds)], { stdio: 'ignore' });
  children.push(c);
  return c;
}

/** Ends a lock holder we started and its sleep child, by PID. */
function killHolder(c: ChildProcess): void {
  if (!c.pid || c.exitCode !== null || c.signalCode !== null) return;
  let kids: string[] = [];
  try {
    kids = readFileSync(`/proc/${c.pid}/task/${c.pid}/children`, 'utf8').split(/\s+/).filter(Boolean);
  } catch {
    /* already gone */
  }
  for (const pid of [c.pid, ...kids.map(Number)]) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
}

/** Polls (bounded) until `flock -n` on the file fails (held) or succeeds (free). */
async function waitLocked(file: string, held: boolean): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const free = await new Promise<boolean>((resolve) => {
      const p = spawn('flock', ['-n', '-x', file, 'true'], { stdio: 'ignore' });
      p.on('close', (code) => resolve(code === 0));
    });
    if (free !== held) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`lock ${file} did not become ${held ? 'held' : 'free'}`);
}
