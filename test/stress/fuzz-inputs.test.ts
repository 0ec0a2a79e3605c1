// Fuzzing the manifest parser and the config loader with seeded mutations of the monitoring example's manifests
// and test/fuzz-corpus (truncation, byte flips and invalid UTF-8, YAML syntax, alias bombs, deep
// nesting, 1 MB values, type confusion, splices): every input loads or fails with a one-line
// ConfigError of bounded length, each within a time bound (a worker thread, terminated on a hang).
// Then the running agent: bad files appearing in its watched directory (new files, and good files
// turning bad) leave its rules exactly as they were, each with a warning naming the file.
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { assertBuilt, startAgent, eventually, type AgentProcess } from '../helpers/agent.js';
import { describeNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { ServicesDir, seedBasics, serviceYaml } from '../helpers/manifests.js';
import { flavour, FUZZ_INPUTS, PROXY, rng, SERVICE_CIDR, sleep, summary } from './common.js';
import { MAX_FILE_ERRORS } from '../../src/config.js';

const here = dirname(fileURLToPath(import.meta.url));
const CORPUS = resolve(here, '..', 'fuzz-corpus');
const SEED_DIR = resolve(here, '..', 'fixtures', 'seed-monitoring');
/** Per input; generous for 1 MB inputs on two loaded cores. A parser that takes longer is hanging. */
const INPUT_TIMEOUT_MS = 10_000;
/** A "clear one-line error" names the problem; it does not echo a megabyte back. */
const MAX_MESSAGE = 1_000;

interface Seed {
  name: string;
  bytes: Buffer;
}
const seedsOf = (dir: string, filter: RegExp = /./): Seed[] =>
  readdirSync(dir)
    .filter((n) => filter.test(n))
    .sort()
    .map((n) => ({ name: n, bytes: readFileSync(join(dir, n)) }));

const MEGA = 'x'.repeat(1024 * 1024);
const TOKENS = ['&a ', '*a', '<<: *a\n', '!!binary ', '!!js/function ', '? ', '{', '}', '[', ']', '\n---\n', '\n...\n', '%YAML 1.1\n', '\t', ': ', '- ', '"', "'", '|\n', '>-\n', '#', '!', '@', '`', '\\u0000', '\u0000', '\ufeff', '\r', 'null', '~', '0x1F', '.inf', '1e309', '-0'];
const VALUES = ['[]', '{}', 'null', '12345', 'true', '"x"', '-1', '1e400', '[[[]]]', '{a: {b: {c: 1}}}', '*undefined_alias', MEGA];

/** One mutation of `seed` (bytes), chosen by `r`; the same seed and stream give the same input. */
function mutate(seed: Buffer, others: Seed[], r: () => number): { bytes: Buffer; how: string } {
  const n = seed.length;
  const at = () => Math.floor(r() * (n + 1));
  const pick = <T,>(a: readonly T[]) => a[Math.floor(r() * a.length)]!;
  const s = seed.toString('latin1');
  switch (Math.floor(r() * 12)) {
    case 0: {
      const k = at();
      return { bytes: seed.subarray(0, k), how: `truncate at ${k}` };
    }
    case 1: {
      const b = Buffer.from(seed);
      const flips = 1 + Math.floor(r() * 8);
      for (let i = 0; i < flips && b.length; i++) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
      return { bytes: b, how: `flip ${flips} bytes` };
    }
    case 2: {
      const k = at();
      const junk = Buffer.from(Array.from({ length: 1 + Math.floor(r() * 16) }, () => pick([0xff, 0xfe, 0xc3, 0xe2, 0x80, 0xed, 0xa0, 0x00, 0x0a, 0x3a, 0x20, Math.floor(r() * 256)])));
      return { bytes: Buffer.concat([seed.subarray(0, k), junk, seed.subarray(k)]), how: `insert ${junk.length} raw bytes at ${k}` };
    }
    case 3: {
      const a = at();
      const b = Math.min(n, a + Math.floor(r() * 400));
      const times = 1 + Math.floor(r() * 50);
      return { bytes: Buffer.concat([seed.subarray(0, b), ...Array(times).fill(seed.subarray(a, b)), seed.subarray(b)]), how: `repeat [${a},${b}) x${times}` };
    }
    case 4: {
      const a = at();
      const b = Math.min(n, a + Math.floor(r() * 200));
      return { bytes: Buffer.concat([seed.subarray(0, a), seed.subarray(b)]), how: `delete [${a},${b})` };
    }
    case 5: {
      // Replace one scalar value (after ": ") with a hostile one, 1 MB among them.
      const spots = [...s.matchAll(/: ([^\n{[]+)/g)];
      if (!spots.length) return { bytes: Buffer.concat([seed, Buffer.from(`\nx: ${MEGA}\n`)]), how: 'append 1 MB value' };
      const m = pick(spots);
      const v = pick(VALUES);
      const out = s.slice(0, m.index + 2) + v + s.slice(m.index + m[0].length);
      return { bytes: Buffer.from(out, 'latin1'), how: `value at ${m.index} -> ${v.length > 40 ? `${v.length} bytes` : v}` };
    }
    case 6: {
      // A 1 MB label (value, or key) on a Service.
      const key = r() < 0.5;
      const label = key ? `${MEGA}: v` : `noproxy: ${MEGA}`;
      const out = s.replace(/metadata:\n/, `metadata:\n  labels:\n    ${label}\n`);
      return { bytes: Buffer.from(out === s ? `${s}\nmetadata:\n  labels:\n    ${label}\n` : out, 'latin1'), how: `1 MB label ${key ? 'key' : 'value'}` };
    }
    case 7: {
      const depth = pick([100, 1_000, 10_000, 100_000]);
      const k = at();
      const open = pick(['[', '{a: ', '- ']);
      const nest = open === '[' ? '['.repeat(depth) + ']'.repeat(depth) : open === '{a: ' ? '{a: '.repeat(depth) + '1' + '}'.repeat(depth) : Array.from({ length: Math.min(depth, 2000) }, (_, i) => ' '.repeat(i) + '- ').join('\n') + 'x';
      return { bytes: Buffer.concat([seed.subarray(0, k), Buffer.from(nest), seed.subarray(k)]), how: `nest ${open.trim()} x${depth} at ${k}` };
    }
    case 8: {
      const k = at();
      const t = Array.from({ length: 1 + Math.floor(r() * 4) }, () => pick(TOKENS)).join('');
      return { bytes: Buffer.concat([seed.subarray(0, k), Buffer.from(t), seed.subarray(k)]), how: `tokens ${JSON.stringify(t)} at ${k}` };
    }
    case 9: {
      const levels = 3 + Math.floor(r() * 8);
      let bomb = 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n';
      for (let i = 1; i < levels; i++) bomb += `a${i}: &a${i} [${Array(9).fill(`*a${i - 1}`).join(',')}]\n`;
      return { bytes: Buffer.from(s.replace(/^kind:/m, `${bomb}kind:`), 'latin1'), how: `alias bomb x${levels}` };
    }
    case 10: {
      const o = pick(others);
      const a = at();
      const b = Math.floor(r() * (o.bytes.length + 1));
      return { bytes: Buffer.concat([seed.subarray(0, a), o.bytes.subarray(b)]), how: `splice with ${o.name} at ${a}/${b}` };
    }
    default: {
      // Type confusion on a known key.
      const key = pick(['metadata', 'labels', 'spec', 'clusterIP', 'clusterIPs', 'ports', 'port', 'endpoints', 'addresses', 'items', 'kind', 'apiVersion', 'name', 'namespace', 'serviceCidr', 'proxyAddr', 'servicesDir', 'minSyncPeriod', 'ignoreLabelSelector', 'backend']);
      const v = pick(VALUES.slice(0, -1));
      const re = new RegExp(`(${key}:)[^\\n]*`);
      return { bytes: Buffer.from(s.replace(re, `$1 ${v}`), 'latin1'), how: `${key}: ${v}` };
    }
  }
}

class Runner {
  private worker: Worker | undefined;
  private id = 0;
  restarts = 0;
  private async ensure(): Promise<Worker> {
    if (this.worker) return this.worker;
    const w = new Worker(join(here, 'fuzz-worker.mjs'));
    await new Promise<void>((res, rej) => {
      w.once('message', () => res());
      w.once('error', rej);
    });
    this.worker = w;
    return w;
  }
  /** Runs one input; `timeout: true` when it did not answer in time (the worker is then replaced). */
  async run(kind: 'manifest' | 'config', name: string, bytes: Buffer): Promise<Record<string, unknown>> {
    const w = await this.ensure();
    const id = ++this.id;
    return new Promise((resolveP) => {
      const timer = setTimeout(() => {
        w.off('message', onMsg);
        w.off('error', onErr);
        void w.terminate();
        this.worker = undefined;
        this.restarts++;
        resolveP({ timeout: true });
      }, INPUT_TIMEOUT_MS);
      const onMsg = (m: Record<string, unknown>) => {
        if (m.id !== id) return;
        clearTimeout(timer);
        w.off('message', onMsg);
        w.off('error', onErr);
        resolveP(m);
      };
      w.on('message', onMsg);
      const onErr = (e: Error) => {
        clearTimeout(timer);
        w.off('message', onMsg);
        this.worker = undefined;
        resolveP({ ok: false, crashed: true, name: e.name, message: e.message });
      };
      w.once('error', onErr);
      w.postMessage({ id, kind, name, bytes });
    });
  }
  async close(): Promise<void> {
    await this.worker?.terminate();
  }
}

/** What is wrong with a result, or undefined. */
function problem(res: Record<string, unknown>): string | undefined {
  if (res.timeout) return `no answer within ${INPUT_TIMEOUT_MS} ms (hang)`;
  if (res.ok) return undefined;
  if (res.crashed) return `worker crashed: ${String(res.name)}: ${String(res.message)}`;
  if (!res.configError) return `threw ${String(res.name)} (not a ConfigError): ${String(res.message).slice(0, 300)}`;
  // A config file's mistakes come one per line (at most MAX_FILE_ERRORS lines); each is checked as a message.
  const lines = Array.isArray(res.lines) ? (res.lines as string[]) : [String(res.message)];
  const lengths = Array.isArray(res.lineLengths) ? (res.lineLengths as number[]) : [Number(res.messageLength)];
  if (lines.length > MAX_FILE_ERRORS) return `${lines.length} error lines (at most ${MAX_FILE_ERRORS})`;
  for (const [i, msg] of lines.entries()) {
    if (msg.trim() === '') return 'empty error message';
    if (msg.includes('\n')) return `error message of several lines: ${JSON.stringify(msg.slice(0, 300))}`;
    if (Number(lengths[i]) > MAX_MESSAGE) return `error message of ${String(lengths[i])} characters: ${msg.slice(0, 200)}...`;
  }
  return undefined;
}

describe('stress: fuzzing the manifest parser and the config loader', () => {
  it(`${FUZZ_INPUTS} seeded mutations per seed: each loads, or is a one-line ConfigError, in bounded time`, { timeout: 600_000 }, async () => {
    assertBuilt();
    const manifestSeeds = [...seedsOf(SEED_DIR), ...seedsOf(join(CORPUS, 'manifests'))];
    const configSeeds = seedsOf(join(CORPUS, 'config'));
    const runner = new Runner();
    const failuresDir = join(tmpdir(), 'edgemesh-fuzz-failures');
    const failures: string[] = [];
    const tally = { inputs: 0, loaded: 0, configErrors: 0, maxMs: 0, megabyteInputs: 0, invalidUtf8: 0 };
    const check = async (kind: 'manifest' | 'config', seed: Seed, bytes: Buffer, how: string) => {
      // Config files keep their name; manifests keep their extension (.json takes the JSON path).
      const res = await runner.run(kind, seed.name, bytes);
      tally.inputs++;
      if (bytes.length >= 1024 * 1024) tally.megabyteInputs++;
      if (!Buffer.from(bytes.toString('utf8'), 'utf8').equals(bytes)) tally.invalidUtf8++;
      if (res.ok) tally.loaded++;
      else if (res.configError) tally.configErrors++;
      tally.maxMs = Math.max(tally.maxMs, Math.round(Number(res.ms ?? INPUT_TIMEOUT_MS)));
      const p = problem(res);
      if (p && failures.length < 30) {
        mkdirSync(failuresDir, { recursive: true });
        const file = join(failuresDir, `${kind}-${failures.length}-${seed.name}`);
        writeFileSync(file, bytes);
        failures.push(`${kind} ${seed.name} [${how}] -> ${p} (input saved as ${file})`);
      }
    };
    try {
      for (const [kind, seeds] of [['manifest', manifestSeeds], ['config', configSeeds]] as const) {
        for (const [si, seed] of seeds.entries()) {
          await check(kind, seed, seed.bytes, 'as is');
          const r = rng(0xf022 + si * 7919 + (kind === 'config' ? 1 : 0));
          for (let i = 0; i < FUZZ_INPUTS; i++) {
            const m = mutate(seed.bytes, seeds, r);
            await check(kind, seed, m.bytes, m.how);
          }
        }
      }
    } finally {
      await runner.close();
    }
    summary('fuzz parser+config', { ...tally, hangs: runner.restarts, violations: failures.length });
    expect(failures, failures.join('\n')).toEqual([]);
    expect(tally.loaded).toBeGreaterThan(0); // the mutations do not only produce garbage
    expect(tally.configErrors).toBeGreaterThan(0);
  });
});

describeNetns('stress: the running agent and bad files in its watched directory', () => {
  let ns: Netns | undefined;
  let agent: AgentProcess | undefined;
  let dir: ServicesDir | undefined;
  afterEach(async () => {
    if (agent) await agent.stop('SIGKILL');
    await ns?.destroy();
    dir?.destroy();
    agent = ns = dir = undefined;
  });
  afterAll(destroyAllNetns);

  it('keeps its last good state (rules unchanged) and logs a warning naming each bad file; recovers when fixed', { timeout: 120_000 }, async () => {
    const backend = 'iptables-legacy';
    const fl = flavour(backend);
    ns = await Netns.create('fuzzagent');
    dir = new ServicesDir();
    seedBasics(dir);
    const grafana = (labels: Record<string, string>) => serviceYaml({ namespace: 'monitoring', name: 'grafana', clusterIP: '10.10.250.210', labels });
    dir.write('grafana.yaml', grafana({ noproxy: 'edgemesh' }));
    agent = startAgent(ns, ['run', '--backend', backend, '--service-cidr', SERVICE_CIDR, '--proxy-addr', PROXY, '--services-dir', dir.path, '--min-sync-period', '0', '--metrics-addr', 'off']);
    const good = ['ignore 10.10.0.1 default/kubernetes', 'ignore 10.10.0.3 kube-system/coredns', 'ignore 10.10.250.210 monitoring/grafana', `proxy ${SERVICE_CIDR}`];
    await eventually(() => fl.ours(ns!), (o) => JSON.stringify(o.edgeMesh) === JSON.stringify(good), 15_000, 'initial sync');
    const before = await fl.dump(ns);

    const bad: [string, Buffer][] = [
      ...seedsOf(join(CORPUS, 'manifests'), /^(alias-bomb|truncated|wrong-types)\./).map((s) => [s.name, s.bytes] as [string, Buffer]),
      ['huge-label.yaml', Buffer.from(grafana({ noproxy: 'edgemesh' }).replace('labels:\n', `labels:\n    big: ${'y'.repeat(1024 * 1024)}\n    bad key: [1\n`))],
      ['binary.yaml', Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131 + 7) % 256))],
      ['deep.json', Buffer.from('['.repeat(200_000) + ']'.repeat(199_999))],
    ];
    let warned = 0;
    for (const [i, [name, bytes]] of bad.entries()) {
      // As a new file, and as the good grafana.yaml turning bad (its objects keep their last good state).
      const target = i % 2 === 0 || name.endsWith('.json') ? `bad-${name}` : 'grafana.yaml';
      const path = join(dir.path, target);
      writeFileSync(join(dir.path, `.${target}.tmp`), bytes); // atomically, as tools do
      renameSync(join(dir.path, `.${target}.tmp`), path);
      await agent.waitFor((l) => l.path === path && /manifest skipped/.test(String(l.msg)) && l.level === 'warn', 10_000, `warning naming ${target}`);
      warned++;
      await sleep(300); // a sync that would follow has had its chance
      expect(await fl.dump(ns), `after ${target}`).toBe(before);
    }
    const warnings = agent.logs.filter((l) => /manifest skipped/.test(String(l.msg)));
    for (const w of warnings) {
      expect(String(w.msg).includes('\n'), String(w.msg).slice(0, 200)).toBe(false);
      expect(String(w.msg).length, String(w.msg).slice(0, 200)).toBeLessThanOrEqual(MAX_MESSAGE + 200);
    }
    expect(agent.child.exitCode).toBeNull();

    // Fixed: grafana without the label is proxied again, the new bad files stay skipped.
    dir.write('grafana.yaml', grafana({}));
    await eventually(() => fl.ours(ns!), (o) => JSON.stringify(o.edgeMesh) === JSON.stringify(good.filter((g) => !g.includes('grafana'))), 5_000, 'recovered');
    summary('fuzz running agent', { badFiles: warned, warnings: warnings.length, rulesChanged: 0, alive: agent.child.exitCode === null });
  });
});
