// A guard against retained-object regressions (not a timed or RSS assertion, both are the
// bench's): the live V8 heap of a real agent after its post-sync collection, with 1 000 services
// (a Service and an EndpointSlice each) in a --services-dir, against the same agent with none.
// The agent runs with --expose-gc (as `edgemesh-agent run` starts it), so it makes one
// memory-reducing collection right after its first sync; the heap is read from /metrics then.
// Keeping each file's YAML syntax trees, or the files' text through sliced strings, or a second
// copy of the model per service, each costs several KiB per service and crosses the bound.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { NODE_FLAGS } from '../../src/node-flags.js';
import { describeNetns, Netns } from '../helpers/netns.js';
import { CLI, startAgent } from '../helpers/agent.js';
import { ServicesDir, serviceYaml, sliceYaml } from '../helpers/manifests.js';

const PER_SERVICE_BOUND_BYTES = 6 * 1024;
const METRICS = '127.0.0.1:10251';

describeNetns('footprint guard', () => {
  let ns: Netns;
  beforeAll(async () => {
    ns = await Netns.create('fpguard');
  });
  afterAll(async () => {
    await ns?.destroy();
  });

  async function liveHeapAfterFirstSync(services: number): Promise<number> {
    const dir = new ServicesDir();
    for (let f = 0; f * 100 < services; f++) {
      const docs: string[] = [];
      for (let i = f * 100; i < Math.min(services, (f + 1) * 100); i++) {
        const name = `svc-${i}`;
        const namespace = `ns-${i % 20}`;
        docs.push(serviceYaml({ namespace, name, clusterIP: `10.96.${(i >> 8) & 255}.${(i & 255) + 1}`, ...(i % 10 === 0 ? { labels: { noproxy: 'edgemesh' } } : {}) }));
        docs.push(sliceYaml(namespace, name, [`10.244.${(i >> 8) & 255}.${i & 255}`]));
      }
      dir.write(`s${f}.yaml`, docs.join('---\n'));
    }
    const agent = startAgent(ns, ['run', '--backend', 'iptables-legacy', '--services-dir', dir.path, '--metrics-addr', METRICS, '--healthz-addr', 'off'], {
      NODE_OPTIONS: '--expose-gc --max-semi-space-size=1', ...(process.env.NOREL ? { NOREL: '1' } : {}),
    });
    try {
      await agent.waitFor((l) => /sync \(initial\) wrote/.test(String(l.msg)), 30_000, 'first sync');
      // The collection runs on the next turn of the event loop after the sync.
      await new Promise((r) => setTimeout(r, Number(process.env.WAITMS ?? 1000)));
      const text = (await ns.run('curl', ['-s', '--max-time', '5', `http://${METRICS}/metrics`])).stdout;
      const line = text.split('\n').find((l) => l.startsWith('nodejs_heap_size_used_bytes '));
      expect(line, 'nodejs_heap_size_used_bytes in /metrics').toBeDefined();
      return Number(line!.split(' ')[1]);
    } finally {
      expect(await agent.stop()).toBe(0);
      dir.destroy();
    }
  }

  it('the live heap after the first sync grows by at most 6 KiB per service from 0 to 1 000 services', async () => {
    const empty = await liveHeapAfterFirstSync(0);
    const full = await liveHeapAfterFirstSync(1000);
    const perService = (full - empty) / 1000;
    console.log(`footprint guard: live heap ${(empty / 1048576).toFixed(1)} MiB with no services, ${(full / 1048576).toFixed(1)} MiB with 1 000 (${Math.round(perService)} bytes per service; bound ${PER_SERVICE_BOUND_BYTES})`);
    expect(empty).toBeGreaterThan(1024 * 1024);
    expect(perService).toBeLessThanOrEqual(PER_SERVICE_BOUND_BYTES);
  }, 90_000);

  it('`node dist/src/bin.js run` re-executes itself (same PID) with the daemon\'s V8 flags; EDGEMESH_NODE_FLAGS=none starts it as it is', async () => {
    const bin = join(CLI, '..', 'bin.js');
    const dir = new ServicesDir();
    try {
      for (const [env, expected] of [[{}, [...NODE_FLAGS]], [{ EDGEMESH_NODE_FLAGS: 'none' }, []]] as const) {
        const child = ns.spawn(process.execPath, [bin, 'run', '--backend', 'iptables-legacy', '--services-dir', dir.path, '--metrics-addr', 'off', '--healthz-addr', 'off'], {
          env: { ...process.env, ...env },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
        const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
        try {
          const t0 = Date.now();
          while (!/sync \(initial\) wrote/.test(out) && Date.now() - t0 < 20_000) await new Promise((r) => setTimeout(r, 50));
          expect(out).toMatch(/sync \(initial\) wrote/);
          const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
          for (const f of NODE_FLAGS) expect(argv.includes(f), `${f} in ${argv.join(' ')}`).toBe(expected.includes(f as never));
          expect(argv).toContain(bin);
        } finally {
          child.kill('SIGTERM');
          expect(await exited).toBe(0);
        }
      }
    } finally {
      dir.destroy();
    }
  }, 60_000);
});
