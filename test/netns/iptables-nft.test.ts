// iptables-nft table through libnftnl, against the real iptables-nft 1.8.9 in throwaway
// namespaces: our rules must be indistinguishable from what the CLI writes.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { NftIptablesTable } from '../../src/netfilter/iptables/iptables-nft.js';
import { native } from '../../src/native/load.js';
import { GenerationChangedError, SyscallError, TransactionError } from '../../src/errors.js';
import { IptablesNatBackend } from '../../src/netfilter/iptables/iptables.js';
import { renderRule, sameRule, type Family } from '../../src/netfilter/rules.js';
import type { IptablesTable, TxOp } from '../../src/netfilter/types.js';
import { describeNetns, destroyAllNetns, Netns } from '../helpers/netns.js';
import { loadKubeProxyIptables } from '../helpers/fixtures.js';
import { cliFor, desiredFor, opsFor, SEED } from './nft-seed.js';

const tool = (f: Family) => (f === 'ipv4' ? 'iptables-nft' : 'ip6tables-nft');
const save = async (ns: Netns, f: Family) =>
  (await ns.run(`${tool(f)}-save`, ['-t', 'nat'])).stdout
    .split('\n')
    .filter((l) => !l.startsWith('#'))
    .join('\n');
const legacyNames = async (ns: Netns) => {
  const a = await native().readProcNet(ns.path, 'ip_tables_names');
  const b = await native().readProcNet(ns.path, 'ip6_tables_names');
  return `${a ?? ''}|${b ?? ''}`;
};
const OUR = ['EDGE-MESH', 'EDGE-MESH-TCP'];

describeNetns('iptables-nft table (libnftnl, iptables-nft shape)', () => {
  afterAll(destroyAllNetns);

  for (const family of ['ipv4', 'ipv6'] as const) {
    describeNetns(`${family}: the DESIGN layout for the seed example beside kube-proxy's iptables-nft rules`, () => {
      let ours: Netns;
      let cli: Netns;
      let kubeOnly: string;
      let legacyBefore: string;
      const desired = desiredFor(family);

      beforeAll(async () => {
        ours = await Netns.create('nftours');
        cli = await Netns.create('nftcli');
        await loadKubeProxyIptables(ours, 'nft', family);
        await loadKubeProxyIptables(cli, 'nft', family);
        kubeOnly = await save(ours, family);
        legacyBefore = await legacyNames(ours);
        const table = new NftIptablesTable(family, { netns: ours.path });
        await table.apply(opsFor(desired));
        for (const args of cliFor(desired)) await cli.sh(`${tool(family)} -t nat ${args}`);
      });
      afterAll(async () => {
        await ours?.destroy();
        await cli?.destroy();
      });

      it('iptables-nft-save shows our jumps first and the exact DESIGN lines, identical to what the CLI writes', async () => {
        const text = await save(ours, family);
        const lines = text.split('\n');
        const p = SEED[family];
        const expected = [
          `-A PREROUTING -m comment --comment "edgemesh root chain" -j EDGE-MESH`,
          `-A OUTPUT -m comment --comment "edgemesh root chain" -j EDGE-MESH`,
          `-A EDGE-MESH -d ${p.ignores[0]!.ip} -m comment --comment "ignore kube-system/coredns service" -j RETURN`,
          `-A EDGE-MESH -d ${p.ignores[1]!.ip} -m comment --comment "ignore default/kubernetes service" -j RETURN`,
          `-A EDGE-MESH -d ${p.cidr} -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP`,
          `-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination ${family === 'ipv4' ? '169.254.96.16:40001' : '[fd00:99::16]:40001'}`,
        ];
        for (const l of expected) expect(lines).toContain(l);
        expect(lines.find((l) => l.startsWith('-A PREROUTING '))).toBe(expected[0]);
        expect(lines.find((l) => l.startsWith('-A OUTPUT '))).toBe(expected[1]);
        expect(text).toBe(await save(cli, family));
      });

      it("leaves kube-proxy's lines exactly as they were", async () => {
        const ourLine = (l: string) => / EDGE-MESH/.test(l) || /^:EDGE-MESH/.test(l);
        expect((await save(ours, family)).split('\n').filter((l) => !ourLine(l))).toEqual(kubeOnly.split('\n'));
      });

      it("writes the same netlink expressions, byte for byte, as iptables-nft's CLI", async () => {
        for (const chain of ['PREROUTING', 'OUTPUT', ...OUR]) {
          const a = (await native().nftRawRules(ours.path, family, 'nat', chain)).map((r) => `${r.exprs}|${r.userdata}`);
          const b = (await native().nftRawRules(cli.path, family, 'nat', chain)).map((r) => `${r.exprs}|${r.userdata}`);
          expect(a.length).toBeGreaterThan(0);
          expect(a, chain).toEqual(b);
        }
      });

      it('iptables-nft -t nat -nvL lists the table without complaint and reads like the seed', async () => {
        const res = await ours.run(tool(family), ['-t', 'nat', '-nvL'], { allowFail: true });
        expect(res.stderr).not.toMatch(/incompatible/i);
        expect(res.code).toBe(0);
        expect(res.stdout).toMatch(/Chain EDGE-MESH \(2 references\)/);
        expect(res.stdout).toMatch(/RETURN .*\/\* ignore kube-system\/coredns service \*\//);
        expect(res.stdout).toMatch(/EDGE-MESH-TCP .*\/\* tcp service proxy \*\//);
        expect(res.stdout).toMatch(/DNAT .*\/\* edgemesh tcp proxy \*\/ to:/);
        const prerouting = res.stdout.split('Chain PREROUTING')[1]!.split('\n');
        expect(prerouting[2]).toMatch(/EDGE-MESH .*edgemesh root chain/);
        expect(prerouting[3]).toMatch(/KUBE-SERVICES .*kubernetes service portals/);
      });

      it("reads our rules back into the model; kube-proxy's unmodelled rules are unknown, never ours", async () => {
        const snap = await new NftIptablesTable(family, { netns: ours.path }).read(['PREROUTING', 'OUTPUT', 'EDGE-MESH', 'EDGE-MESH-TCP', 'KUBE-SERVICES', 'NO-SUCH-CHAIN']);
        expect(snap.chains.has('NO-SUCH-CHAIN')).toBe(false);
        for (const c of desired.chains) {
          const live = snap.chains.get(c.name)!;
          expect(live.length).toBe(c.rules.length);
          live.forEach((r, i) => expect(sameRule(r, c.rules[i]!), `${c.name} ${i}`).toBe(true));
        }
        expect(sameRule(snap.chains.get('PREROUTING')![0]!, desired.jumps[0]!.rule)).toBe(true);
        expect(snap.chains.get('PREROUTING')![1]).toMatchObject({ comment: 'kubernetes service portals', target: 'KUBE-SERVICES' });
        const kube = snap.chains.get('KUBE-SERVICES')!;
        expect(kube.length).toBeGreaterThan(5);
        for (const r of kube) expect(r.unknown?.length, renderRule('KUBE-SERVICES', r)).toBeGreaterThan(0);
        expect(snap.info.token).toMatch(/^nftgen:\d+$/);
      });

      it('survives an iptables-nft-save | iptables-nft-restore round trip', async () => {
        const before = await save(ours, family);
        await ours.sh(`${tool(family)}-save | ${tool(family)}-restore`);
        expect(await save(ours, family)).toBe(before);
        const snap = await new NftIptablesTable(family, { netns: ours.path }).read(OUR);
        snap.chains.get('EDGE-MESH')!.forEach((r, i) => expect(sameRule(r, desired.chains[1]!.rules[i]!)).toBe(true));
      });

      it('opens no legacy table (/proc/net/ip_tables_names unchanged)', async () => {
        expect(legacyBefore).toBe('|');
        expect(await legacyNames(ours)).toBe(legacyBefore);
      });
    });
  }

  describeNetns('transactions', () => {
    let ns: Netns;
    let table: NftIptablesTable;
    const desired = desiredFor('ipv4');
    beforeAll(async () => {
      ns = await Netns.create('nfttx');
      await loadKubeProxyIptables(ns, 'nft');
      table = new NftIptablesTable('ipv4', { netns: ns.path });
      await table.apply(opsFor(desired));
    });
    afterAll(async () => ns?.destroy());

    it('a transaction with an invalid op in the middle changes nothing (model error and kernel error)', async () => {
      const before = await save(ns, 'ipv4');
      const token = (await table.info()).token;
      const good: TxOp = { op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.10.0.9/32', comment: 'ignore a/b service', target: 'RETURN' } };
      const missing: TxOp = { op: 'deleteRule', chain: 'EDGE-MESH', rule: { dst: '10.99.0.9/32', target: 'RETURN' } };
      const err = await table.apply([good, missing, { ...good, chain: 'EDGE-MESH-TCP' }]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransactionError);
      expect((err as TransactionError).opIndex).toBe(1);
      // The kernel refuses a jump to a chain that does not exist: the whole batch goes.
      const kernelErr = await table
        .apply([good, { op: 'insertRule', chain: 'EDGE-MESH', rule: { target: 'NO-SUCH-CHAIN' } }, { op: 'insertRule', chain: 'OUTPUT', rule: { target: 'RETURN' } }])
        .catch((e: unknown) => e);
      expect(kernelErr).toBeInstanceOf(SyscallError);
      expect((kernelErr as SyscallError).code).toBe('ENOENT');
      expect((kernelErr as SyscallError).syscall).toBe('nft_batch');
      // Bad input is a TransactionError naming the op, before anything is sent.
      const badCidr = await table.apply([good, { op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.0.0.300/32', target: 'RETURN' } }]).catch((e: unknown) => e);
      expect(badCidr).toBeInstanceOf(TransactionError);
      expect((badCidr as TransactionError).opIndex).toBe(1);
      expect(await save(ns, 'ipv4')).toBe(before);
      expect((await table.info()).token).toBe(token);
    });

    it('info() token is stable while nobody writes and changes when someone does', async () => {
      const a = (await table.info()).token;
      expect((await table.info()).token).toBe(a);
      await ns.run('iptables-nft', ['-t', 'nat', '-A', 'KUBE-SERVICES', '-d', '10.1.2.3/32', '-j', 'RETURN']);
      const b = (await table.info()).token;
      expect(b).not.toBe(a);
      await ns.run('iptables-nft', ['-t', 'nat', '-D', 'KUBE-SERVICES', '-d', '10.1.2.3/32', '-j', 'RETURN']);
      expect((await table.info()).token).not.toBe(b);
    });

    it('implements every TxOp kind with 1-based positions; replaceChain keeps unchanged rules and their counters in place', async () => {
      // Counters on our rules, set the way iptables-nft-restore -c does.
      await ns.run('iptables-nft-restore', ['-c', '--noflush'], {
        input: `*nat\n:EDGE-TEST - [0:0]\n[7:420] -A EDGE-TEST -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN\n[3:180] -A EDGE-TEST -d 10.10.0.1/32 -j RETURN\nCOMMIT\n`,
      });
      const ignore3 = { dst: '10.10.0.3/32', comment: 'ignore kube-system/coredns service', target: 'RETURN' };
      const ignore1 = { dst: '10.10.0.1/32', target: 'RETURN' };
      const r5 = { dst: '10.10.0.5/32', target: 'RETURN' };
      const r6 = { src: '192.168.0.0/20', protocol: 'udp' as const, target: 'ACCEPT' };
      const handles = async () => (await native().nftRead({ netns: ns.path, family: 'ipv4', table: 'nat', dialect: 'xt', chains: ['EDGE-TEST'] })).chains[0]!.rules;
      const h0 = await handles();
      await table.apply([{ op: 'replaceChain', chain: 'EDGE-TEST', rules: [r5, ignore3, ignore1, r6] }]);
      const h1 = await handles();
      expect(h1.map((r) => r.handle).slice(1, 3)).toEqual(h0.map((r) => r.handle));
      expect(h1[1]).toMatchObject({ packets: 7, bytes: 420 });
      expect(h1[2]).toMatchObject({ packets: 3, bytes: 180 });
      // moveRule re-creates the rule elsewhere, counters included.
      await table.apply([{ op: 'moveRule', chain: 'EDGE-TEST', rule: ignore3, position: 4 }]);
      let rules = (await table.read(['EDGE-TEST'])).chains.get('EDGE-TEST')!;
      expect(rules.map((r) => r.dst ?? r.src)).toEqual(['10.10.0.5/32', '10.10.0.1/32', '192.168.0.0/20', '10.10.0.3/32']);
      expect(rules[2]).toMatchObject({ src: '192.168.0.0/20', protocol: 'udp', target: 'ACCEPT' });
      expect(rules[3]).toMatchObject({ packets: 7, bytes: 420, comment: 'ignore kube-system/coredns service' });
      await table.apply([
        { op: 'insertRule', chain: 'EDGE-TEST', rule: { dst: '10.10.0.7/32', target: 'DROP' }, position: 2 },
        { op: 'deleteRule', chain: 'EDGE-TEST', rule: r5 },
        { op: 'deleteRule', chain: 'EDGE-TEST', rule: ignore1 },
        { op: 'insertRule', chain: 'EDGE-TEST', rule: { dst: '10.10.0.8/32', target: 'RETURN' }, position: 2 },
        { op: 'deleteRule', chain: 'EDGE-TEST', rule: r6 },
        { op: 'insertRule', chain: 'EDGE-TEST', rule: { dst: '10.10.0.128/25', protocol: 'tcp', target: 'RETURN' }, position: 4 },
      ]);
      rules = (await table.read(['EDGE-TEST'])).chains.get('EDGE-TEST')!;
      expect(rules.map((r) => renderRule('EDGE-TEST', r))).toEqual([
        '-A EDGE-TEST -d 10.10.0.7/32 -j DROP',
        '-A EDGE-TEST -d 10.10.0.8/32 -j RETURN',
        '-A EDGE-TEST -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN',
        '-A EDGE-TEST -d 10.10.0.128/25 -p tcp -j RETURN',
      ]);
      expect((await ns.run('iptables-nft-save', ['-t', 'nat'])).stdout).toContain('-A EDGE-TEST -d 10.10.0.128/25 -p tcp -j RETURN');
      await table.apply([{ op: 'flushChain', chain: 'EDGE-TEST' }, { op: 'deleteChain', chain: 'EDGE-TEST' }, { op: 'replaceChain', chain: 'EDGE-NEW', rules: [] }]);
      const snap = await table.read(['EDGE-TEST', 'EDGE-NEW']);
      expect([...snap.chains.keys()]).toEqual(['EDGE-NEW']);
      await table.apply([{ op: 'deleteChain', chain: 'EDGE-NEW' }]);
      expect((await table.read(['EDGE-NEW'])).chains.size).toBe(0);
      expect(await table.apply([])).toMatchObject({ attempts: 0 });
    });

    it('moves our jump back to position 1 without touching the rule kube-proxy put before it', async () => {
      await ns.run('iptables-nft', ['-t', 'nat', '-D', 'PREROUTING', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES']);
      await ns.run('iptables-nft', ['-t', 'nat', '-I', 'PREROUTING', '1', '-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES']);
      const before = (await table.read(['PREROUTING'])).chains.get('PREROUTING')!;
      expect(before[0]!.target).toBe('KUBE-SERVICES');
      await table.apply([{ op: 'moveRule', chain: 'PREROUTING', rule: desired.jumps[0]!.rule, position: 1 }]);
      const after = (await native().nftRead({ netns: ns.path, family: 'ipv4', table: 'nat', dialect: 'xt', chains: ['PREROUTING'] })).chains[0]!.rules;
      expect(after.map((r) => r.target)).toEqual(['EDGE-MESH', 'KUBE-SERVICES']);
      const lines = (await save(ns, 'ipv4')).split('\n').filter((l) => l.startsWith('-A PREROUTING'));
      expect(lines[0]).toBe('-A PREROUTING -m comment --comment "edgemesh root chain" -j EDGE-MESH');
    });

    it("a rule with parts we do not model is never taken for ours; replaceChain removes it from our chain", async () => {
      await ns.run('iptables-nft', ['-t', 'nat', '-I', 'EDGE-MESH', '1', '-d', '10.10.0.3/32', '-m', 'conntrack', '--ctstate', 'NEW', '-m', 'comment', '--comment', 'ignore kube-system/coredns service', '-j', 'RETURN']);
      const rules = (await table.read(['EDGE-MESH'])).chains.get('EDGE-MESH')!;
      expect(rules[0]!.unknown).toContain('conntrack');
      expect(sameRule(rules[0]!, desired.chains[1]!.rules[0]!)).toBe(false);
      await table.apply([{ op: 'replaceChain', chain: 'EDGE-MESH', rules: desired.chains[1]!.rules }]);
      const after = (await table.read(['EDGE-MESH'])).chains.get('EDGE-MESH')!;
      expect(after.length).toBe(desired.chains[1]!.rules.length);
      after.forEach((r, i) => expect(sameRule(r, desired.chains[1]!.rules[i]!)).toBe(true));
    });

    it('concurrent writers: batches planned on a stale generation are re-planned, none is lost or misapplied', async () => {
      // Another process (inside the namespace) commits to a table of its own every ~2 ms for 3 s
      // (hundreds of times kube-proxy's rate), so our reads and batches keep racing it: dumps
      // are interrupted and batches planned on a stale generation are refused (ERESTART) and
      // planned again. It is paced: a writer committing back to back (thousands per second)
      // starves any optimistic writer whose read takes a millisecond, nft's and iptables-nft's
      // too; liveness under that is not what this checks.
      const addon = process.env.EDGEMESH_NATIVE_PATH ?? fileURLToPath(new URL('../../build/Release/edgemesh_native.node', import.meta.url));
      const script = `const n = require(${JSON.stringify(addon)}); (async () => { const until = Date.now() + 3000; let i = 0;
        while (Date.now() < until && i < 100000) { await n.nftApply({ family: 'ipv4', table: 'noise', dialect: 'nft', baseChains: [],
          ops: [{ op: 'replaceChain', chain: 'c', rules: [{ dst: '10.0.' + ((i >> 8) & 255) + '.' + (i & 255) + '/32', target: 'RETURN' }] }] }); i++;
          await new Promise((r) => setTimeout(r, 2)); }
        console.log('noise ' + i); })();`;
      const noise = ns.spawn('node', ['-e', script]);
      let noiseOut = '';
      noise.stdout!.on('data', (d: Buffer) => (noiseOut += d.toString()));
      const exited = new Promise<void>((resolve) => noise.on('exit', () => resolve()));
      await new Promise((r) => setTimeout(r, 200));
      // The retry budget outlasts the noise (3 s) however slow the machine (or the sanitized
      // addon) is: what is checked is that no batch is lost or misapplied.
      const racer = new NftIptablesTable('ipv4', { netns: ns.path, maxAttempts: 1000 });
      const base = desired.chains[1]!.rules;
      let attempts = 0;
      for (let i = 0; i < 25; i++) {
        const extra = Array.from({ length: 300 }, (_, k) => ({ dst: `10.${20 + i}.${k >> 8}.${k & 255}/32`, comment: `ignore t/s${k} service`, target: 'RETURN' }));
        attempts += (await racer.apply([{ op: 'replaceChain', chain: 'EDGE-MESH', rules: [...extra, ...base] }])).attempts;
        const live = (await racer.read(['EDGE-MESH'])).chains.get('EDGE-MESH')!;
        expect(live.length).toBe(extra.length + base.length);
        live.forEach((r, k) => expect(sameRule(r, k < extra.length ? extra[k]! : base[k - extra.length]!)).toBe(true));
      }
      await exited;
      expect(noiseOut).toMatch(/noise [1-9]\d*/);
      console.log(`concurrent writers: 25 batches took ${attempts} attempts beside ${noiseOut.trim()} commits`);
      expect(attempts).toBeGreaterThanOrEqual(25);
      await table.apply([{ op: 'replaceChain', chain: 'EDGE-MESH', rules: base }]);
      await ns.run('nft', ['delete', 'table', 'ip', 'noise']);
    });

    it('a batch planned on a read that is no longer current writes nothing (EGENERATION); planned on the current one it commits, and its tokenAfter is what info() reads next', async () => {
      const stale = await table.read(['EDGE-MESH']);
      await ns.run('iptables-nft', ['-t', 'nat', '-A', 'KUBE-SERVICES', '-d', '10.1.2.4/32', '-j', 'RETURN']);
      const between = await save(ns, 'ipv4');
      const op: TxOp = { op: 'insertRule', chain: 'EDGE-MESH', rule: { dst: '10.10.0.77/32', comment: 'generation test', target: 'RETURN' } };
      const err = await table.apply([op], stale.info).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(GenerationChangedError);
      expect(err).toMatchObject({ code: 'EGENERATION', syscall: 'nft_batch', message: expect.stringMatching(/changed since the read/) });
      expect(await save(ns, 'ipv4')).toBe(between);
      const fresh = await table.read(['EDGE-MESH']);
      const res = await table.apply([op], fresh.info);
      expect(res.attempts).toBe(1);
      expect(res.tokenAfter).toBe((await table.info()).token);
      expect(res.tokenAfter).not.toBe(fresh.info.token);
      await table.apply([{ op: 'deleteRule', chain: 'EDGE-MESH', rule: op.rule }]);
      await ns.run('iptables-nft', ['-t', 'nat', '-D', 'KUBE-SERVICES', '-d', '10.1.2.4/32', '-j', 'RETURN']);
    });

    it('the backend reads and plans again when somebody writes between its read and its batch, and returns the token its commit left', async () => {
      // A table whose first read is followed by a foreign write (kube-proxy's, in effect).
      let reads = 0;
      const racing: IptablesTable = {
        backend: table.backend,
        family: table.family,
        read: async (chains) => {
          const snap = await table.read(chains);
          if (reads++ === 0) await ns.run('iptables-nft', ['-t', 'nat', '-I', 'PREROUTING', '1', '-d', '10.1.2.5/32', '-j', 'RETURN']);
          return snap;
        },
        apply: (ops, basis) => table.apply(ops, basis),
        info: () => table.info(),
      };
      const backend = new IptablesNatBackend(racing);
      const changed = { ...desired, chains: desired.chains.map((c, i) => (i === 1 ? { ...c, rules: [{ dst: '10.10.0.78/32', comment: 'replan test', target: 'RETURN' }, ...c.rules] } : c)) };
      const outcome = await backend.sync(changed);
      expect(reads).toBe(2);
      expect(outcome.changed).toBe(true);
      expect(outcome.apply?.attempts).toBe(2);
      expect(outcome.apply?.tokenAfter).toBe((await table.info()).token);
      // Planned on the second read: the foreign rule is kept, our jump still precedes kube-proxy's, the new rule is in.
      const live = await table.read(['PREROUTING', 'EDGE-MESH']);
      const targets = live.chains.get('PREROUTING')!.map((r) => r.dst ?? r.target);
      expect(targets[0]).toBe('10.1.2.5/32');
      expect(targets.indexOf('EDGE-MESH')).toBeLessThan(targets.indexOf('KUBE-SERVICES'));
      expect(live.chains.get('EDGE-MESH')![0]!.dst).toBe('10.10.0.78/32');
      expect((await backend.sync(desired)).changed).toBe(true);
      await ns.run('iptables-nft', ['-t', 'nat', '-D', 'PREROUTING', '-d', '10.1.2.5/32', '-j', 'RETURN']);
    });

    it('rejects wrong argument types with a TypeError, not a crash', async () => {
      const n = native() as unknown as Record<string, (...a: unknown[]) => unknown>;
      expect(() => n.nftApply!({ family: 'ipv4', table: 'nat', dialect: 'xt', ops: [{ op: 'insertRule', chain: 7 }] })).toThrow(TypeError);
      expect(() => n.nftRead!(42)).toThrow(TypeError);
      expect(() => n.nftApply!({ family: 'ipx', table: 'nat', dialect: 'xt', ops: [] })).toThrow(TypeError);
      expect(() => n.nftApply!({ family: 'ipv4', table: 'nat', dialect: 'xt', ops: [{ op: 'insertRule', chain: 'X', rule: { target: 'A', toDestination: { address: '1.2.3.4', port: 70000 } } }] })).toThrow(TypeError);
      // Sets (the nftables backend's ignore set): every field checked, the path named.
      const nft = { family: 'ipv4', table: 't', dialect: 'nft', ops: [] };
      expect(() => n.nftApply!({ ...nft, sets: {} })).toThrow(/request\.sets must be an array/);
      expect(() => n.nftApply!({ ...nft, sets: [{ name: 3, elements: [] }] })).toThrow(/request\.sets\[0\]\.name must be a string/);
      expect(() => n.nftApply!({ ...nft, sets: [{ name: 's', elements: [{ key: '10.0.0.1' }, { key: 5 }] }] })).toThrow(/request\.sets\[0\]\.elements\[1\]\.key must be a string/);
      expect(() => n.nftApply!({ ...nft, sets: [{ name: 's', elements: [{ key: '10.0.0.1', comment: {} }] }] })).toThrow(/elements\[0\]\.comment must be a string/);
      expect(() => n.nftApply!({ ...nft, ops: [{ op: 'insertRule', chain: 'c', rule: { target: 'RETURN', dstSet: 1 } }] })).toThrow(/dstSet must be a string/);
      expect(() => n.nftRead!({ family: 'ipv4', table: 't', dialect: 'nft', sets: ['a', 2] })).toThrow(/request\.sets\[1\] must be a string/);
    });
  });
});
