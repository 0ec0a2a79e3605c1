// The proxy as its own process (like the agent) under resource pressure: running out of file
// descriptors is survived with backoff and counted, and 10 000 connections leave no fd behind.
import type { ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeNetns, Netns } from '../helpers/netns.js';

const execFileP = promisify(execFile);
const drivers = join(dirname(fileURLToPath(import.meta.url)), 'drivers');

interface Reply {
  ready?: boolean;
  pid?: number;
  fds: number;
  lowestFree: number;
  nofile?: [number, number];
  stats: { active: number; relayed: number; acceptBackoffs: number; acceptErrors: number };
  codes: Record<string, number>;
}

describeNetns('TCP proxy under fd pressure and many connections', () => {
  let ns: Netns;
  let proxy: ChildProcess;
  let ready: Reply;
  const replies: Reply[] = [];
  let waiting: ((r: Reply) => void) | undefined;
  const ask = (cmd: string) =>
    new Promise<Reply>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`proxy driver did not answer "${cmd}"`)), 5000);
      waiting = (r) => {
        clearTimeout(t);
        resolve(r);
      };
      proxy.stdin!.write(cmd + '\n');
    });
  const client = async (o: object) => {
    const r = await ns.run('node', [join(drivers, 'client.mjs'), 'echo', JSON.stringify({ ...o, timeoutMs: 50_000 })], { timeoutMs: 55_000, allowFail: true });
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: number; failed: number; errors: string[] };
  };

  beforeAll(async () => {
    ns = await Netns.create('limits');
    await ns.sh(
      [
        'ip link add edgemesh0 type bridge',
        'ip addr add 169.254.96.16/32 dev edgemesh0',
        'ip link set edgemesh0 up',
        'ip route add 10.10.0.0/16 dev lo',
        'iptables-legacy -w -t nat -N EDGE-MESH',
        'iptables-legacy -w -t nat -N EDGE-MESH-TCP',
        'iptables-legacy -w -t nat -A EDGE-MESH -d 10.10.0.0/16 -p tcp -j EDGE-MESH-TCP',
        'iptables-legacy -w -t nat -A EDGE-MESH-TCP -p tcp -j DNAT --to-destination 169.254.96.16:40001',
        'iptables-legacy -w -t nat -I OUTPUT 1 -j EDGE-MESH',
      ].join(' && '),
    );
    const servers = ns.spawn('node', [join(drivers, 'servers.mjs'), JSON.stringify([{ kind: 'echo', host: '127.0.0.1', port: 8080 }])]);
    await new Promise<void>((resolve, reject) => {
      servers.stdout!.on('data', (d: Buffer) => d.toString().includes('ready') && resolve());
      servers.on('exit', (c) => reject(new Error(`backend exited ${c}`)));
    });
    const routes = [
      { ip: '10.10.0.10', port: 80, family: 4, protocol: 'TCP', service: 'default/echo', portName: '', endpoints: [{ ip: '127.0.0.1', port: 8080 }], endpointSet: 'ready', affinity: { clientIP: false, timeoutSeconds: 10800 } },
    ];
    // Started with a low soft limit: start() must raise it as far as allowed (to the hard one).
    proxy = ns.spawn('prlimit', ['--nofile=256:', 'node', join(drivers, 'proxy.mjs'), JSON.stringify({ proxy: { address: '169.254.96.16', port: 40001, pipeIdleMs: 500, events: 'failures' }, routes })], { stdio: ['pipe', 'pipe', 'inherit'] });
    ready = await new Promise<Reply>((resolve, reject) => {
      createInterface({ input: proxy.stdout! }).on('line', (l) => {
        const r = JSON.parse(l) as Reply;
        if (r.ready) resolve(r);
        else if (waiting) {
          const w = waiting;
          waiting = undefined;
          w(r);
        } else replies.push(r);
      });
      proxy.on('exit', (c) => reject(new Error(`proxy exited ${c}`)));
    });
  });

  afterAll(async () => {
    await ns?.destroy();
  });

  it('raised RLIMIT_NOFILE at start as far as allowed (soft up to hard)', () => {
    const [soft, hard] = ready.nofile!;
    expect(hard).toBeGreaterThan(256);
    expect(soft).toBe(hard);
  });

  it('backs off when accept() hits EMFILE, then serves the queued connections once descriptors are back', async () => {
    const idle = await ask('stats');
    // No fd number left at all: accept4() itself fails with EMFILE.
    await execFileP('prlimit', ['--pid', String(ready.pid), `--nofile=${idle.lowestFree}:`]);
    let pending: ReturnType<typeof client> | undefined;
    try {
      pending = client({ host: '10.10.0.10', port: 80, count: 5, concurrency: 5, size: 100 });
      await new Promise((r) => setTimeout(r, 600));
      const stuck = await ask('stats');
      expect(stuck.stats.acceptErrors).toBeGreaterThan(0);
      expect(stuck.stats.acceptBackoffs).toBeGreaterThan(0);
      expect(stuck.stats.acceptBackoffs).toBeLessThan(20); // backing off, not spinning
      expect(stuck.stats.relayed).toBe(idle.stats.relayed);
    } finally {
      await execFileP('prlimit', ['--pid', String(ready.pid), '--nofile=8192:']);
    }
    expect(await pending).toMatchObject({ ok: 5, failed: 0 });
    expect(proxy.exitCode).toBeNull();
  }, 60_000);

  it('counts EMFILE on the upstream socket as a connection error (client reset), never a crash, and recovers', async () => {
    const emfileIn = (r: Reply) => Object.entries(r.codes).filter(([k]) => k.endsWith(':EMFILE')).reduce((a, [, v]) => a + v, 0);
    await new Promise((r) => setTimeout(r, 800)); // pooled pipes closed (pipeIdleMs 500)
    const before = await ask('stats');
    // Exactly one free descriptor number: accept4() gets it, socket() for the upstream cannot.
    // (Only the soft limit: lowering the hard one could not be undone without CAP_SYS_RESOURCE.)
    await execFileP('prlimit', ['--pid', String(ready.pid), `--nofile=${before.lowestFree + 1}:`]);
    let squeezed: Awaited<ReturnType<typeof client>>;
    try {
      squeezed = await client({ host: '10.10.0.10', port: 80, count: 10, concurrency: 2, size: 100 });
    } finally {
      await execFileP('prlimit', ['--pid', String(ready.pid), '--nofile=8192:']);
    }
    const mid: Reply = await ask('stats');
    expect(squeezed).toMatchObject({ ok: 0, failed: 10 });
    expect(emfileIn(mid) - emfileIn(before)).toBe(10);
    expect(mid.stats.relayed).toBe(before.stats.relayed);
    expect(mid.stats.active).toBe(0);
    expect(proxy.exitCode).toBeNull();
    expect(await client({ host: '10.10.0.10', port: 80, count: 20, concurrency: 4, size: 100 })).toMatchObject({ ok: 20, failed: 0 });
  }, 60_000);

  it('relays 10 000 short connections and then holds no more fds than before them', async () => {
    // Pipes pooled by the first test are closed after pipeIdleMs (500 ms here).
    await new Promise((r) => setTimeout(r, 800));
    const before = await ask('stats');
    const t0 = Date.now();
    const r = await client({ host: '10.10.0.10', port: 80, count: 10_000, concurrency: 16, size: 100 });
    const secs = (Date.now() - t0) / 1000;
    expect(r).toMatchObject({ ok: 10_000, failed: 0 });
    console.log(`10 000 short connections through the proxy in ${secs.toFixed(1)} s (client included)`);
    await new Promise((r) => setTimeout(r, 800));
    const after = await ask('stats');
    expect(after.stats.relayed - before.stats.relayed).toBe(10_000);
    // events: 'failures' — clean ends are counted, not reported one by one.
    expect(after.codes.eof ?? 0).toBe(before.codes.eof ?? 0);
    expect(after.codes).toEqual(before.codes);
    expect(after.stats.active).toBe(0);
    expect(after.fds).toBeLessThanOrEqual(before.fds);
    const closed = await ask('close');
    expect(closed.stats.active).toBe(0);
    expect(closed.fds).toBeLessThan(before.fds); // listener, epoll and eventfds gone too
  }, 90_000);
});
