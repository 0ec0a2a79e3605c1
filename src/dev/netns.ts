// Throwaway network namespaces, for the demo, the bench and the privileged tests. Every
// namespace gets a unique name, every process started in it is tracked by PID, and destroy()
// ends those processes and deletes the namespace (a process-exit hook does the same as a last
// resort), also after a failure. Nothing here touches the root namespace's tables, routes or links.
import { execFile, spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { netnsPath } from '../netns-path.js';

const execFileP = promisify(execFile);

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

const live = new Set<Netns>();

export class Netns {
  readonly name: string;
  readonly path: string;
  private readonly children = new Set<ChildProcess>();
  private destroyed = false;

  private constructor(name: string) {
    this.name = name;
    this.path = netnsPath(name);
  }

  /** Creates `em-<label>-<random>` with loopback up. */
  static async create(label = 't'): Promise<Netns> {
    const name = `em-${label.replace(/[^a-z0-9]/gi, '').slice(0, 8)}-${process.pid}-${randomBytes(3).toString('hex')}`;
    await execFileP('ip', ['netns', 'add', name]);
    const ns = new Netns(name);
    live.add(ns);
    try {
      await ns.run('ip', ['link', 'set', 'lo', 'up']);
    } catch (e) {
      await ns.destroy();
      throw e;
    }
    return ns;
  }

  /** Runs a command inside the namespace; rejects with stderr on a nonzero exit unless allowFail. */
  async run(cmd: string, args: string[] = [], opts: { input?: string; allowFail?: boolean; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
    return new Promise((resolve, reject) => {
      const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], {
        stdio: ['pipe', 'pipe', 'pipe'],
        env: opts.env ?? process.env,
      });
      let stdout = '';
      let stderr = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const res = { stdout, stderr, code: code ?? (signal ? 128 : 1) };
        if (res.code !== 0 && !opts.allowFail) {
          reject(new Error(`${cmd} ${args.join(' ')} (in ${this.name}) exited ${res.code}: ${stderr.trim() || stdout.trim()}`));
        } else resolve(res);
      });
      // A command that exits without reading its stdin makes the write fail with EPIPE: not an error of ours.
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input ?? '');
    });
  }

  /** Runs a shell snippet inside the namespace. */
  sh(script: string, opts: { input?: string; allowFail?: boolean; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
    return this.run('sh', ['-c', script], opts);
  }

  /** Starts a long-running process in the namespace; it is ended (by PID) in destroy(). */
  spawn(cmd: string, args: string[] = [], opts: SpawnOptions = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', this.name, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.children.add(child);
    child.on('exit', () => this.children.delete(child));
    return child;
  }

  /** Ends every process started here, then deletes the namespace. Safe to call twice. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const c of this.children) {
      if (c.exitCode === null && c.pid) {
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }
    // Processes we did not start ourselves may still hold it (a daemon forked by a command):
    // list them by namespace and end them by PID.
    const pids = spawnSync('ip', ['netns', 'pids', this.name], { encoding: 'utf8' }).stdout?.split(/\s+/).filter(Boolean) ?? [];
    for (const p of pids) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    spawnSync('ip', ['netns', 'del', this.name]);
    live.delete(this);
  }
}

/** Links two namespaces with a veth pair and addresses (CIDR form, e.g. "10.200.0.1/24"). */
export async function linkNetns(a: Netns, aAddr: string, b: Netns, bAddr: string, opts: { a6?: string; b6?: string } = {}): Promise<{ aIf: string; bIf: string }> {
  const id = randomBytes(3).toString('hex');
  const aIf = `va${id}`;
  const bIf = `vb${id}`;
  await a.run('ip', ['link', 'add', aIf, 'type', 'veth', 'peer', 'name', bIf, 'netns', b.name]);
  await a.run('ip', ['addr', 'add', aAddr, 'dev', aIf]);
  await b.run('ip', ['addr', 'add', bAddr, 'dev', bIf]);
  if (opts.a6) await a.run('ip', ['-6', 'addr', 'add', opts.a6, 'dev', aIf, 'nodad']);
  if (opts.b6) await b.run('ip', ['-6', 'addr', 'add', opts.b6, 'dev', bIf, 'nodad']);
  await a.run('ip', ['link', 'set', aIf, 'up']);
  await b.run('ip', ['link', 'set', bIf, 'up']);
  return { aIf, bIf };
}

/** Deletes every namespace still alive (afterAll of a suite, and process exit). */
export async function destroyAllNetns(): Promise<void> {
  for (const ns of [...live]) await ns.destroy();
}

process.once('exit', () => {
  for (const ns of live) {
    for (const p of spawnSync('ip', ['netns', 'pids', ns.name], { encoding: 'utf8' }).stdout?.split(/\s+/).filter(Boolean) ?? []) {
      try {
        process.kill(Number(p), 'SIGKILL');
      } catch {
        /* gone */
      }
    }
    spawnSync('ip', ['netns', 'del', ns.name]);
  }
});
