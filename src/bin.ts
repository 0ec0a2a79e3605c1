#!/usr/bin/env node
// edgemesh-agent's entry point. `run` is a small, long-lived daemon on nodes that are often small,
// so it re-executes itself once (same PID: execve) with V8 settings for that (NODE_FLAGS below);
// every other command starts as it is. docs/operations.md ("Memory") has the measurements.
//
// EDGEMESH_NODE_FLAGS replaces the flags ("" or "none": no re-execution); flags given to node
// itself (node --inspect dist/src/bin.js run) are kept, after ours, so that they win.
import { fileURLToPath } from 'node:url';

/**
 * --max-semi-space-size=1: the young generation stays at 1 MiB semi-spaces instead of growing
 *   to 16 MiB each while manifests or API lists are parsed (about 25 MiB of peak and settled RSS).
 * --single-threaded-gc: no background GC threads; the agent's event loop is not latency-bound
 *   (the data path is native), and each helper thread costs stack and arena memory.
 * --expose-gc: one full collection after the first sync (agent.ts) instead of waiting for V8's
 *   memory reducer.
 */
export const NODE_FLAGS = ['--max-semi-space-size=1', '--single-threaded-gc', '--expose-gc'];
const MARK = 'EDGEMESH_REEXECUTED';

function flagsFromEnv(): string[] {
  const v = process.env.EDGEMESH_NODE_FLAGS;
  if (v === undefined) return NODE_FLAGS;
  return v.trim() === '' || v.trim() === 'none' ? [] : v.trim().split(/\s+/);
}

const args = process.argv.slice(2);
const flags = flagsFromEnv();
if (args[0] === 'run' && flags.length > 0 && process.env[MARK] === undefined) {
  const { native } = await import('./native.js');
  const env = Object.entries({ ...process.env, [MARK]: '1' }).map(([k, v]) => `${k}=${v ?? ''}`);
  try {
    native().reexec(process.execPath, [process.argv0, ...flags, ...process.execArgv, fileURLToPath(import.meta.url), ...args], env);
  } catch (e) {
    // Not fatal: the agent runs as it is, with V8's defaults (more memory, same behaviour).
    process.stderr.write(`edgemesh-agent: starting without the V8 memory settings: ${(e as Error).message}\n`);
  }
}
delete process.env[MARK];
await import('./cli.js');
