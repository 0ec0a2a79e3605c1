// The nftables backend (our own `ip/ip6 edgemesh` tables at dstnat - 1) against the real kernel,
// with kube-proxy's nftables-mode rules loaded by `nft -f` and real listeners behind both DNATs.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { NftablesBackend } from '../../src/netfilter/nftables/nftables.js';
import { SyscallError } from '../../src/errors.js';
import { native } from '../../src/native/load.js';
import type { DesiredRuleSet, Family } from '../../src/netfilter/rules.js';
import { describeNetns, destroyAllNetns, Netns } from '../helpers/netns.js';
import { loadKubeProxyNftables } from '../helpers/nft-fixture.js';
import { desiredFor, SEED } from './nft-seed.js';

const legacyNames = async (ns: Netns) => `${(await native().readProcNet(ns.path, 'ip_tables_names')) ?? ''}|${(await native().readProcNet(ns.path, 'ip6_tables_names')) ?? ''}`;
const listOurs = async (ns: Netns, f: Family) => (await ns.run('nft', ['list', 'table', f === 'ipv4' ? 'ip' : 'ip6', 'edgemesh'])).stdout;
/** A listing with the set's elements one per line, sorted (nft wraps them by width, in its own order). */
const elementsSorted = (text: string) =>
  text.replace(/elements = \{ ([^}]*) \}/g, (_m, els: string) => `elements = {\n${els.split(/,\s+/).sort().join('\n')}\n}`);
const readSet = async (ns: Netns, family: Family) =>
  (await native().nftRead({ netns: ns.path, family, table: 'edgemesh', dialect: 'nft', chains: ['EDGE-MESH'], sets: ['ignored'] }));

// The fixture's service CIDR and services: svc1 172.30.0.41:80 -> 10.180.0.1:80, svc2 172.30.0.42:80 -> 10.180.0.2:80.
const PROXY = { address: '169.254.96.16', port: 40001 };
const trafficDesired = (): DesiredRuleSet =>
  desiredFor('ipv4', { ignores: [{ ip: '172.30.0.41/32', namespace: 'ns1', name: 'svc1' }], cidr: '172.30.0.0/16', proxy: PROXY });

const SERVER = `
const net = require('net');
const spec = [['169.254.96.16', 40001, 'proxy'], ['10.180.0.1', 80, 'endpoint-svc1'], ['10.180.0.2', 80, 'endpoint-svc2']];
let up = 0;
for (const [host, port, name] of spec) {
  net.createServer((s) => { s.end(name); s.on('error', () => {}); }).listen(port, host, () => { if (++up === spec.length) console.log('ready'); });
}
setTimeout(() => process.exit(0), 120000);
`;
const CLIENT = `
const net = require('net');
const s = net.connect({ host: process.argv[1], port: Number(process.argv[2]) });
let out = '';
s.setTimeout(3000, () => { console.log('TIMEOUT'); process.exit(0); });
s.on('data', (d) => (out += d));
s.on('end', () => { console.log(out); process.exit(0); });
s.on('error', (e) => { console.log('ERROR ' + e.code); process.exit(0); });
`;

describeNetns('nftables backend (table edgemesh at dstnat - 1)', () => {
  afterAll(destroyAllNetns);

  for (const family of ['ipv4', 'ipv6'] as const) {
    describeNetns(`${family}: the seed example`, () => {
      let ns: Netns;
      let backend: NftablesBackend;
      beforeAll(async () => {
        ns = await Netns.create('nftab');
        backend = new NftablesBackend(family, { netns: ns.path });
      });
      afterAll(async () => ns?.destroy());

      it('creates our table with nat base chains on prerouting and output at -101 holding the DESIGN logic, ignored addresses in a set', async () => {
        const out = await backend.sync(desiredFor(family));
        // 5 rules (2 jumps, the set lookup, the CIDR jump, the DNAT) and 2 set elements.
        expect(out).toMatchObject({ changed: true, added: 7, removed: 0 });
        const text = await listOurs(ns, family);
        const ip = family === 'ipv4' ? 'ip' : 'ip6';
        const p = SEED[family];
        const host = (c: string) => c.replace(/\/(32|128)$/, '');
        expect(text).toContain(`table ${ip} edgemesh {`);
        expect(text).toMatch(/chain prerouting \{\n\t\ttype nat hook prerouting priority dstnat - 1; policy accept;\n\t\tcounter packets 0 bytes 0 jump EDGE-MESH comment "edgemesh root chain"\n/);
        expect(text).toMatch(/chain output \{\n\t\ttype nat hook output priority -101; policy accept;\n\t\tcounter packets 0 bytes 0 jump EDGE-MESH comment "edgemesh root chain"\n/);
        expect(text).toMatch(new RegExp(`set ignored \\{\n\t\ttype ${family === 'ipv4' ? 'ipv4_addr' : 'ipv6_addr'}\n\t\tcounter\n\t\telements = \\{ `));
        expect(text).toContain(`${host(p.ignores[0]!.ip)} counter packets 0 bytes 0 comment "ignore kube-system/coredns service"`);
        expect(text).toContain(`${host(p.ignores[1]!.ip)} counter packets 0 bytes 0 comment "ignore default/kubernetes service"`);
        expect(text).toMatch(new RegExp(`chain EDGE-MESH \\{\n\t\t${ip} daddr @ignored counter packets 0 bytes 0 return comment "ignored services"\n\t\t${ip} daddr ${p.cidr.replace(/\./g, '\\.')} meta`));
        expect(text).toContain(`${ip} daddr ${p.cidr} meta l4proto tcp counter packets 0 bytes 0 jump EDGE-MESH-TCP comment "tcp service proxy"`);
        expect(text).toContain(
          `meta l4proto tcp counter packets 0 bytes 0 dnat to ${family === 'ipv4' ? '169.254.96.16:40001' : '[fd00:99::16]:40001'} comment "edgemesh tcp proxy"`,
        );
        const chains = (await native().nftRead({ netns: ns.path, family, table: 'edgemesh', dialect: 'nft' })).chains;
        for (const name of ['prerouting', 'output']) expect(chains.find((c) => c.name === name)).toMatchObject({ base: true, type: 'nat', priority: -101, hook: name });
      });

      it('status() renders the table as nft list does, with counters; checkOrder() is ok', async () => {
        const st = await backend.status();
        expect(elementsSorted(st.text)).toBe(elementsSorted(await listOurs(ns, family)));
        expect(st.order).toEqual({ family, positions: { PREROUTING: 1, OUTPUT: 1 }, ok: true });
      });

      it('sync with an unchanged desired state writes nothing (generation id unchanged)', async () => {
        const token = await backend.changeToken();
        const out = await backend.sync(desiredFor(family));
        expect(out).toMatchObject({ changed: false, added: 0, removed: 0, ops: [] });
        expect(await backend.changeToken()).toBe(token);
      });

      it('a write returns the token it left; a foreign write between our read and our batch makes the sync read and plan again (EGENERATION, nothing written)', async () => {
        const changed = desiredFor(family);
        const extra = family === 'ipv4' ? '10.10.77.77/32' : 'fd00:10::7777/128';
        changed.chains[1]!.rules.unshift({ dst: extra, comment: 'ignore replan/test service', target: 'RETURN' });
        const b = backend as unknown as { readTable: (...a: unknown[]) => Promise<unknown> };
        const readTable = b.readTable.bind(backend);
        let reads = 0;
        b.readTable = async (...a: unknown[]) => {
          const r = await readTable(...a);
          if (reads++ === 0) await ns.run('nft', ['add', 'table', family === 'ipv4' ? 'ip' : 'ip6', 'replan-noise']);
          return r;
        };
        try {
          const out = await backend.sync(changed);
          expect(reads).toBe(2);
          expect(out).toMatchObject({ changed: true, added: 1, apply: { attempts: 2 } });
          expect(out.apply?.tokenAfter).toBe(await backend.changeToken());
          expect((await readSet(ns, family)).sets[0]!.elements.map((e) => e.key)).toContain(extra);
        } finally {
          b.readTable = readTable;
        }
        await ns.run('nft', ['delete', 'table', family === 'ipv4' ? 'ip' : 'ip6', 'replan-noise']);
        expect(await backend.sync(desiredFor(family))).toMatchObject({ changed: true, removed: 1 });
      });

      it('a failing batch changes nothing', async () => {
        const before = await listOurs(ns, family);
        const token = await backend.changeToken();
        const bad = desiredFor(family);
        bad.chains[1]!.rules.splice(1, 0, { dst: SEED[family].ignores[0]!.ip, comment: 'ignore a/b service', target: 'RETURN' });
        bad.chains[0]!.rules.push({ target: 'NO-SUCH-CHAIN' });
        const err = await backend.sync(bad).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(SyscallError);
        expect((err as SyscallError).code).toBe('ENOENT');
        expect(await listOurs(ns, family)).toBe(before);
        expect(await backend.changeToken()).toBe(token);
      });

      it('checkOrder() notices a missing jump and sync() repairs it; cleanup() removes our table only', async () => {
        await ns.run('nft', ['flush', 'chain', family === 'ipv4' ? 'ip' : 'ip6', 'edgemesh', 'output']);
        expect(await backend.checkOrder()).toMatchObject({ positions: { PREROUTING: 1, OUTPUT: 0 }, ok: false });
        expect(await backend.sync(desiredFor(family))).toMatchObject({ changed: true, orderRepairs: 1, added: 1 });
        expect((await backend.checkOrder()).ok).toBe(true);
        expect(await backend.cleanup()).toMatchObject({ removed: 1, backend: 'nftables' });
        expect(await backend.cleanup()).toMatchObject({ removed: 0 });
        const tables = await native().nftListTables(ns.path);
        expect(tables.filter((t) => t.name === 'edgemesh')).toEqual([]);
        expect(await legacyNames(ns)).toBe('|');
      });
    });
  }

  describeNetns('the ignore set at scale: thousands of elements, long comments, random changes', () => {
    let ns: Netns;
    beforeAll(async () => {
      ns = await Netns.create('nftset');
    });
    afterAll(async () => ns?.destroy());

    // A deterministic generator, so that a failure can be replayed.
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648) % n);
    const addr = (family: Family, i: number) => (family === 'ipv4' ? `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32` : `fd00:77::${i.toString(16)}/128`);
    const desiredWith = (family: Family, ignores: Map<number, string>): DesiredRuleSet => {
      const d = desiredFor(family);
      const edge = d.chains.find((c) => c.name === 'EDGE-MESH')!;
      const proxy = edge.rules[edge.rules.length - 1]!;
      edge.rules = [...[...ignores].sort((a, b) => a[0] - b[0]).map(([i, comment]) => ({ dst: addr(family, i), comment, target: 'RETURN' })), proxy];
      return d;
    };

    for (const family of ['ipv4', 'ipv6'] as const) {
      it(`${family}: 3 000 elements with comments up to 240 bytes (many element messages), then 12 rounds of random adds, removals and renames: the set always equals the desired state`, async () => {
        const backend = new NftablesBackend(family, { netns: ns.path });
        const ignores = new Map<number, string>();
        const comment = (i: number, gen: number) => `ignore ns-${gen}/${'s'.repeat(i % 200)}-${i} service`;
        for (let i = 1; i <= 3000; i++) ignores.set(i, comment(i, 0));
        const check = async () => {
          const r = await native().nftRead({ netns: ns.path, family, table: 'edgemesh', dialect: 'nft', chains: ['EDGE-MESH'], sets: ['ignored'] });
          const got = new Map(r.sets[0]!.elements.map((e) => [e.key, e.comment]));
          const want = new Map([...ignores].map(([i, c]) => [addr(family, i), c]));
          expect(got.size).toBe(want.size);
          for (const [k, c] of want) expect(got.get(k), k).toBe(c);
          expect(r.chains[0]!.rules).toHaveLength(2);
        };
        expect(await backend.sync(desiredWith(family, ignores))).toMatchObject({ changed: true });
        await check();
        for (let round = 1; round <= 12; round++) {
          let adds = 0, removes = 0, renames = 0;
          for (const i of [...ignores.keys()]) {
            const x = rand(100);
            if (x < 5) {
              ignores.delete(i);
              removes++;
            } else if (x < 8) {
              ignores.set(i, comment(i, round));
              renames++;
            }
          }
          for (let k = 0; k < 150; k++) {
            const i = 3001 + rand(4000);
            if (!ignores.has(i)) {
              ignores.set(i, comment(i, round));
              adds++;
            }
          }
          const out = await backend.sync(desiredWith(family, ignores));
          expect(out).toMatchObject({ changed: true, added: adds + renames, removed: removes + renames });
          await check();
        }
        // nft itself reads the same set back (an independent parser of what we wrote).
        const listed = JSON.parse((await ns.run('nft', ['-j', 'list', 'set', family === 'ipv4' ? 'ip' : 'ip6', 'edgemesh', 'ignored'])).stdout) as {
          nftables: { set?: { elem?: { elem: { val: string; comment?: string; counter?: unknown } }[] } }[];
        };
        const elems = listed.nftables.find((o) => o.set)!.set!.elem!;
        expect(elems).toHaveLength(ignores.size);
        expect(elems.every((e) => e.elem.counter !== undefined && e.elem.comment?.startsWith('ignore ns-'))).toBe(true);
        expect(await backend.sync(desiredWith(family, ignores))).toMatchObject({ changed: false });
        await backend.cleanup();
      });
    }
  });

  describeNetns('traffic beside kube-proxy in nftables mode', () => {
    let ns: Netns;
    let backend: NftablesBackend;
    const connect = async (host: string, port: number) => (await ns.run('node', ['-e', CLIENT, host, String(port)], { timeoutMs: 10_000 })).stdout.trim();
    /** Our table replaced by a hand-written one (nft -f input lines). */
    const handWritten = async (lines: string[]) => {
      await ns.run('nft', ['delete', 'table', 'ip', 'edgemesh']);
      await ns.run('nft', ['-f', '-'], { input: [...lines, ''].join('\n') });
    };

    beforeAll(async () => {
      ns = await Netns.create('nfttraf');
      await ns.sh(
        // A veth pair inside the namespace stands in for the node's interface (no dummy module here).
        'ip link add emn0 type veth peer name emn1 && ip link set emn0 up && ip link set emn1 up && ' +
          'ip addr add 169.254.96.16/32 dev emn0 && ip addr add 10.180.0.1/32 dev emn0 && ip addr add 10.180.0.2/32 dev emn0 && ' +
          'ip route add 172.30.0.0/16 dev emn0',
      );
      await loadKubeProxyNftables(ns);
      const server = ns.spawn('node', ['-e', SERVER]);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('listeners did not start')), 10_000);
        server.stdout!.on('data', (d: Buffer) => {
          if (d.toString().includes('ready')) {
            clearTimeout(timer);
            resolve();
          }
        });
        server.on('exit', (code) => reject(new Error(`listeners exited ${code}`)));
      });
      backend = new NftablesBackend('ipv4', { netns: ns.path });
    });
    afterAll(async () => ns?.destroy());

    it("without us, kube-proxy's rules send both services to their endpoints", async () => {
      expect(await connect('172.30.0.41', 80)).toBe('endpoint-svc1');
      expect(await connect('172.30.0.42', 80)).toBe('endpoint-svc2');
    });

    it("with us: a proxied ClusterIP reaches our proxy address, an ignored one reaches kube-proxy's endpoint", async () => {
      await backend.sync(trafficDesired());
      expect(await connect('172.30.0.42', 80)).toBe('proxy');
      expect(await connect('172.30.0.41', 80)).toBe('endpoint-svc1');
      const text = (await backend.status()).text;
      expect(text).toMatch(/172\.30\.0\.41 counter packets [1-9]\d* bytes \d+ comment "ignore ns1\/svc1 service"/);
      expect(text).toMatch(/ip daddr @ignored counter packets [1-9]\d* bytes \d+ return comment "ignored services"/);
      expect(text).toMatch(/meta l4proto tcp counter packets [1-9]\d* bytes \d+ dnat to 169\.254\.96\.16:40001/);
    });

    it('a kube-proxy restart (its table deleted and re-created) does not change the outcome, without any repair', async () => {
      const ours = await listOurs(ns, 'ipv4');
      await ns.run('nft', ['delete', 'table', 'ip', 'kube-proxy']);
      await loadKubeProxyNftables(ns);
      expect(await connect('172.30.0.42', 80)).toBe('proxy');
      expect(await connect('172.30.0.41', 80)).toBe('endpoint-svc1');
      expect((await listOurs(ns, 'ipv4')).replace(/packets \d+ bytes \d+/g, '')).toBe(ours.replace(/packets \d+ bytes \d+/g, ''));
    });

    it('sync writes only the difference: a newly ignored service adds one element; rules and the other elements keep handles and counters', async () => {
      const before = await readSet(ns, 'ipv4');
      const svc1 = before.sets[0]!.elements.find((e) => e.key === '172.30.0.41/32')!;
      expect(svc1.packets).toBeGreaterThan(0);
      const more = trafficDesired();
      more.chains[1]!.rules.splice(1, 0, { dst: '172.30.0.43/32', comment: 'ignore ns3/svc3 service', target: 'RETURN' });
      const out = await backend.sync(more);
      expect(out).toMatchObject({ changed: true, added: 1, removed: 0 });
      const after = await readSet(ns, 'ipv4');
      expect(after.chains[0]!.rules.map((r) => r.handle)).toEqual(before.chains[0]!.rules.map((r) => r.handle));
      expect(after.sets[0]!.elements).toHaveLength(2);
      expect(after.sets[0]!.elements.find((e) => e.key === '172.30.0.41/32')).toMatchObject({ packets: svc1.packets, bytes: svc1.bytes, comment: 'ignore ns1/svc1 service' });
      expect(after.sets[0]!.elements.find((e) => e.key === '172.30.0.43/32')).toMatchObject({ packets: 0, comment: 'ignore ns3/svc3 service' });
      expect(await connect('172.30.0.42', 80)).toBe('proxy');
      expect(await legacyNames(ns)).toBe('|');
    });

    it('an address that stops being ignored leaves the set (and is proxied again); a changed comment replaces its element', async () => {
      const renamed = trafficDesired();
      renamed.chains[1]!.rules.splice(0, 1, { dst: '172.30.0.41/32', comment: 'ignore ns1/svc1-renamed service', target: 'RETURN' });
      expect(await backend.sync(renamed)).toMatchObject({ changed: true, added: 1, removed: 2 });
      expect((await readSet(ns, 'ipv4')).sets[0]!.elements).toMatchObject([{ key: '172.30.0.41/32', comment: 'ignore ns1/svc1-renamed service', packets: 0 }]);
      const none = trafficDesired();
      none.chains[1]!.rules.splice(0, 1);
      expect(await backend.sync(none)).toMatchObject({ changed: true, added: 0, removed: 1 });
      expect((await readSet(ns, 'ipv4')).sets[0]!.elements).toEqual([]);
      expect(await connect('172.30.0.41', 80)).toBe('proxy');
      await backend.sync(trafficDesired());
      expect(await connect('172.30.0.41', 80)).toBe('endpoint-svc1');
    });

    it('a set of that name in another shape (made by hand: no counters, and a rule looking it up) is replaced in one transaction, with the rule', async () => {
      await handWritten([
        'add table ip edgemesh',
        'add set ip edgemesh ignored { type ipv4_addr; elements = { 172.30.0.42 }; }',
        'add chain ip edgemesh EDGE-MESH',
        'add rule ip edgemesh EDGE-MESH ip daddr @ignored return',
        'add chain ip edgemesh prerouting { type nat hook prerouting priority -101; }',
        'add rule ip edgemesh prerouting jump EDGE-MESH',
        'add chain ip edgemesh output { type nat hook output priority -101; }',
        'add rule ip edgemesh output jump EDGE-MESH',
      ]);
      expect((await readSet(ns, 'ipv4')).sets[0]).toMatchObject({ ours: false, counter: false });
      expect(await connect('172.30.0.42', 80)).toBe('endpoint-svc2');
      const gen = await native().nftGenId(ns.path);
      const out = await backend.sync(trafficDesired());
      expect(out).toMatchObject({ changed: true, removed: 4, added: 6 });
      expect(await native().nftGenId(ns.path)).toBe(gen + 1);
      const after = await readSet(ns, 'ipv4');
      expect(after.sets[0]).toMatchObject({ ours: true, counter: true, elements: [{ key: '172.30.0.41/32', comment: 'ignore ns1/svc1 service' }] });
      expect(after.chains[0]!.rules.map((r) => r.dstSet ?? r.dst)).toEqual(['ignored', '172.30.0.0/16']);
      expect(await connect('172.30.0.42', 80)).toBe('proxy');
      expect(await connect('172.30.0.41', 80)).toBe('endpoint-svc1');
      expect(await backend.sync(trafficDesired())).toMatchObject({ changed: false });
    });

    it('upgrade: a table in the earlier layout (one rule per ignored address) becomes the set layout in one transaction, traffic right before and after', async () => {
      await handWritten([
        'table ip edgemesh {',
        '  chain EDGE-MESH-TCP { meta l4proto tcp counter dnat to 169.254.96.16:40001 comment "edgemesh tcp proxy"; }',
        '  chain EDGE-MESH {',
        '    ip daddr 172.30.0.41 counter return comment "ignore ns1/svc1 service"',
        '    ip daddr 172.30.0.0/16 meta l4proto tcp counter jump EDGE-MESH-TCP comment "tcp service proxy"',
        '  }',
        '  chain prerouting { type nat hook prerouting priority -101; policy accept; counter jump EDGE-MESH comment "edgemesh root chain"; }',
        '  chain output { type nat hook output priority -101; policy accept; counter jump EDGE-MESH comment "edgemesh root chain"; }',
        '}',
      ]);
      expect(await connect('172.30.0.41', 80)).toBe('endpoint-svc1');
      const gen = await native().nftGenId(ns.path);
      const out = await backend.sync(trafficDesired());
      expect(out).toMatchObject({ changed: true, added: 2, removed: 1, orderRepairs: 0 });
      expect(await native().nftGenId(ns.path)).toBe(gen + 1);
      const after = await readSet(ns, 'ipv4');
      expect(after.chains[0]!.rules.map((r) => r.dstSet ?? r.dst)).toEqual(['ignored', '172.30.0.0/16']);
      expect(after.sets[0]!.elements).toMatchObject([{ key: '172.30.0.41/32', comment: 'ignore ns1/svc1 service' }]);
      expect(await connect('172.30.0.41', 80)).toBe('endpoint-svc1');
      expect(await connect('172.30.0.42', 80)).toBe('proxy');
    });

    it('the addon refuses a duplicate element, a network as an element, a set given twice, or a set lookup in the xt dialect, writing nothing', async () => {
      const base = { netns: ns.path, family: 'ipv4' as const, table: 'edgemesh', dialect: 'nft' as const, ops: [] };
      const dup = await native()
        .nftApply({ ...base, sets: [{ name: 'ignored', elements: [{ key: '172.30.0.9' }, { key: '172.30.0.9/32' }] }] })
        .catch((e: unknown) => e);
      expect(dup).toMatchObject({ code: 'ETRANSACTION', message: expect.stringMatching(/element 172\.30\.0\.9\/32 given twice/) });
      const net = await native().nftApply({ ...base, sets: [{ name: 'ignored', elements: [{ key: '172.30.0.0/24' }] }] }).catch((e: unknown) => e);
      expect(net).toMatchObject({ code: 'ETRANSACTION', message: expect.stringMatching(/must be one address: 172\.30\.0\.0\/24/) });
      const twice = await native().nftApply({ ...base, sets: [{ name: 'ignored', elements: [] }, { name: 'ignored', elements: [] }] }).catch((e: unknown) => e);
      expect(twice).toMatchObject({ code: 'ETRANSACTION', message: expect.stringMatching(/set ignored given twice/) });
      const xt = await native()
        .nftApply({ ...base, dialect: 'xt', table: 'nat', ops: [{ op: 'insertRule', chain: 'PREROUTING', rule: { dstSet: 'ignored', target: 'RETURN' } }] })
        .catch((e: unknown) => e);
      expect(xt).toMatchObject({ code: 'ETRANSACTION', message: expect.stringMatching(/only for the nft dialect/) });
      expect(await backend.sync(trafficDesired())).toMatchObject({ changed: false });
      expect(await legacyNames(ns)).toBe('|');
    });
  });
});
