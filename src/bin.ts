#!/usr/bin/env -S node --max-semi-space-size=1 --single-threaded-gc --expose-gc
// edgemesh-agent's entry point. `run` is a small, long-lived daemon on nodes that are often small
// and wants V8 settings for that (node-flags.ts; docs/operations.md, "Memory"). The line above
// passes them when the file is run as a program (the npm bin, the image's entry point); started
// as `node dist/src/bin.js run` without them, `run` re-executes itself once with them (execve:
// same PID, one more node start-up, ~50 ms on an idle machine). Other commands start as they are.
//
// EDGEMESH_NODE_FLAGS replaces the flags ("" or "none": no re-execution); flags given to node
// itself (node --inspect dist/src/bin.js run) are kept, after ours, so that they win.
import { fileURLToPath } from 'node:url';
import { NODE_FLAGS } from './node-flags.js';

const MARK = 'EDGEMESH_REEXECUTED';

function flagsFromEnv(): string[] {
  const v = process.env.EDGEMESH_NODE_FLAGS;
  if (v === undefined) return [...NODE_FLAGS];
  return v.trim() === '' || v.trim() === 'none' ? [] : v.trim().split(/\s+/);
}

const args = process.argv.slice(2);
const flags = flagsFromEnv();
const applied = flags.every((f) => process.execArgv.includes(f));
if (args[0] === 'run' && !applied && process.env[MARK] === undefined) {
  const { native } = await import('./native/load.js');
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
