// Runs the real agent CLI (dist/src/cli.js, built by scripts/install.sh) inside a namespace and
// reads its JSON log lines.
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CLI = resolve(root, 'dist', 'src', 'cli.js');
export const HAVE_SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].some((p) => existsSync(p));

export function assertBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "bash scripts/install.sh" (it builds the addon and the TypeScript)`);
}

export interface AgentProcess {
  child: ChildProcess;
  /** Every JSON log line so far (non-JSON lines are kept as {msg: line}). */
  logs: Record<string, unknown>[];
  stderr: string;
  /** Resolves with the first log line that satisfies `pred`. */
  waitFor(pred: (l: Record<string, unknown>) => boolean, timeoutMs?: number, what?: string): Promise<Record<string, unknown>>;
  /** Sends `signal` and resolves with the exit code. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<number | null>;
  exited: Promise<number | null>;
}

export function startAgent(ns: Netns, args: string[], env: NodeJS.ProcessEnv = {}): AgentProcess {
  assertBuilt();
  // setpriv execs the agent with PR_SET_PDEATHSIG=KILL: if the test process dies (a killed
  // vitest run), the agent dies with it instead of running on in a leftover namespace. The PID
  // stays the agent's own (ip netns exec and setpriv both exec), so kill -9 still reaches it.
  const [cmd, argv] = HAVE_SETPRIV ? ['setpriv', ['--pdeathsig', 'KILL', '--', process.execPath, CLI, ...args]] : [process.execPath, [CLI, ...args]];
  const child = ns.spawn(cmd, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const logs: Record<string, unknown>[] = [];
  const waiters: { pred: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  const agent: AgentProcess = {
    child,
    logs,
    stderr: '',
    waitFor(pred, timeoutMs = 10_000, what = 'log line') {
      const hit = logs.find(pred);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolveP, reject) => {
        const timer = setTimeout(() => {
          const i = waiters.findIndex((w) => w.resolve === done);
          if (i >= 0) waiters.splice(i, 1);
          reject(new Error(`agent: no ${what} within ${timeoutMs} ms; last lines:\n${logs.slice(-15).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${agent.stderr.slice(-2000)}`));
        }, timeoutMs);
        const done = (l: Record<string, unknown>) => {
          clearTimeout(timer);
          resolveP(l);
        };
        waiters.push({ pred, resolve: done });
      });
    },
    async stop(signal = 'SIGTERM', timeoutMs = 15_000) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      const code = await agent.exited;
      clearTimeout(timer);
      return code;
    },
    exited: new Promise((r) => child.on('exit', (code) => r(code))),
  };
  createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
    if (!line.trim()) return;
    let obj: Record<string, unknown>;
    try {
      obj = JSON.parse(line) as Record<string, unknown>;
    } catch {
      obj = { msg: line };
    }
    logs.push(obj);
    for (let i = waiters.length - 1; i >= 0; i--) {
      if (waiters[i]!.pred(obj)) {
        waiters[i]!.resolve(obj);
        waiters.splice(i, 1);
      }
    }
  });
  child.stderr!.on('data', (d: Buffer) => (agent.stderr += d.toString()));
  return agent;
}

export async function eventually<T>(fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs: number, what: string): Promise<{ value: T; ms: number }> {
  const t0 = Date.now();
  let last: T | undefined;
  while (Date.now() - t0 < timeoutMs) {
    last = await fn();
    if (ok(last)) return { value: last, ms: Date.now() - t0 };
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not reached within ${timeoutMs} ms; last value: ${typeof last === 'string' ? last : JSON.stringify(last)}`);
}
