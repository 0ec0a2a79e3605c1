// Ending the JS environment with a proxy still running: the addon's env cleanup hook must stop
// the workers and close every fd, without a crash or a hang (worker_threads terminate, process
// exit). Loopback only, no privileges.
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'src', 'proxy', 'proxy.js');

const connectOutcome = (port: number) =>
  new Promise<string>((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve('connected');
    });
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });

describe('proxy lifecycle across environment teardown', () => {
  it('a worker_thread terminated with a running proxy stops it: listener closed, main thread unharmed', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(pathToFileURL(dist).href)}).then(({ TcpProxy }) => {
        const p = new TcpProxy({ threads: 2 });
        const a = p.start('127.0.0.1', 0);
        parentPort.postMessage(a.port);
      });`;
    const w = new Worker(code, { eval: true });
    const port = await new Promise<number>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    // A listener is there: accepted, then reset at once (no route on plain loopback).
    expect(['connected', 'ECONNRESET']).toContain(await connectOutcome(port));
    const exitCode = await w.terminate();
    expect(exitCode).toBe(1); // terminated
    expect(await connectOutcome(port)).toBe('ECONNREFUSED');
  });

  it('process.exit() with a proxy running exits promptly and cleanly', () => {
    const script = `
      import(${JSON.stringify(pathToFileURL(dist).href)}).then(({ TcpProxy }) => {
        const p = new TcpProxy({ threads: 2 });
        p.start('127.0.0.1', 0);
        setTimeout(() => process.exit(7), 50);
      });`;
    const t0 = Date.now();
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 10_000 });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(7);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('an unref()ed proxy lets the process end by itself', () => {
    const script = `
      import(${JSON.stringify(pathToFileURL(dist).href)}).then(({ TcpProxy }) => {
        new TcpProxy({ threads: 1 }).start('127.0.0.1', 0) && undefined;
      }).then(() => {});
    `;
    const withRef = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 1500 });
    expect(withRef.signal).toBe('SIGTERM'); // kept alive by the running proxy, like a listening net.Server
    const unref = script.replace('new TcpProxy({ threads: 1 }).start', 'const p = new TcpProxy({ threads: 1 }); p.unref(); p.start');
    const r = spawnSync(process.execPath, ['-e', unref], { encoding: 'utf8', timeout: 5000 });
    expect(r.status).toBe(0);
  });
});
