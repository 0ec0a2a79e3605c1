// Measures one libiptc commit of N rules against N commits of one rule each, in a throwaway
// network namespace (iptables-legacy backend). Prints the times; asserts nothing.
// Run: npx tsc -p tsconfig.json && node dist/bench/iptc-commit.js [N]
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LegacyIptablesTable } from '../src/netfilter/iptables/iptables-legacy.js';
import type { TxOp } from '../src/netfilter/types.js';

const n = Number(process.argv[2] ?? 1000);
const ns = `em-bench-${process.pid}`;
const dir = mkdtempSync(join(tmpdir(), 'em-bench-'));
execFileSync('ip', ['netns', 'add', ns]);
try {
  const t = new LegacyIptablesTable({ family: 'ipv4', netns: ns, lockfile: join(dir, 'xtables.lock') });
  const rule = (i: number) => ({ dst: `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`, protocol: 'tcp' as const, comment: `rule ${i}`, target: 'RETURN' });
  await t.apply([
    { op: 'replaceChain', chain: 'EM-ONE', rules: [] },
    { op: 'replaceChain', chain: 'EM-MANY', rules: [] },
  ]);
  const ops: TxOp[] = [{ op: 'replaceChain', chain: 'EM-ONE', rules: Array.from({ length: n }, (_, i) => rule(i)) }];
  let t0 = performance.now();
  await t.apply(ops);
  const one = performance.now() - t0;
  t0 = performance.now();
  for (let i = 0; i < n; i++) await t.apply([{ op: 'insertRule', chain: 'EM-MANY', rule: rule(i), position: i + 1 }]);
  const many = performance.now() - t0;
  const info = await t.info();
  console.log(`rules: ${n}; table now ${info.entries} entries, ${info.size} bytes`);
  console.log(`one commit of ${n} rules:      ${one.toFixed(1)} ms`);
  console.log(`${n} commits of one rule each: ${many.toFixed(1)} ms (${(many / n).toFixed(2)} ms per commit)`);
  console.log(`ratio: ${(many / one).toFixed(0)}x`);
} finally {
  execFileSync('ip', ['netns', 'del', ns]);
  rmSync(dir, { recursive: true, force: true });
}
