// The README and docs/ stay true to the code: every option and every metric is documented.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { OPTIONS } from '../../src/config.js';
import { AgentMetrics } from '../../src/metrics.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
import { readdirSync } from 'node:fs';
const readme = readFileSync(join(root, 'README.md'), 'utf8');
/** The README and every page of docs/. */
const docs = [readme, ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => readFileSync(join(root, 'docs', f), 'utf8'))].join('\n');

describe('README', () => {
  it('documents every command-line option of the option table (README or docs/)', () => {
    for (const o of OPTIONS) if (o.flag !== 'config') expect(docs, `--${o.flag}`).toContain(`--${o.flag}`);
  });

  it('names every edgemesh_* metric the agent exports (README or docs/)', async () => {
    const m = new AgentMetrics({ intent: () => undefined });
    const names = m.registry.names().filter((n) => n.startsWith('edgemesh_'));
    expect(names.length).toBeGreaterThan(10);
    for (const n of names) expect(docs, n).toContain(n);
  });

  it('gives exactly the two set-up commands that .ci/run and the demo use', () => {
    expect(readme).toContain('bash scripts/demo.sh');
    expect(readme).toContain('bash scripts/test.sh');
    expect(readFileSync(join(root, '.ci', 'run'), 'utf8')).toMatch(/scripts\/test\.sh/);
  });

  it('stays a front door (under 10 500 bytes) whose links to docs/ all resolve', () => {
    expect(Buffer.byteLength(readme)).toBeLessThan(10_500);
    for (const m of readme.matchAll(/\]\((docs\/[^)#]+)/g)) expect(existsSync(join(root, m[1] as string)), m[1]).toBe(true);
  });

  it('is never rewritten by npm run bench: no bench source names it, and the bench rewrites docs/benchmarks.md between its markers', () => {
    const sources = readdirSync(join(root, 'bench')).filter((f) => /\.(ts|mjs|sh)$/.test(f));
    expect(sources).toContain('run.ts');
    for (const f of sources) expect(readFileSync(join(root, 'bench', f), 'utf8'), f).not.toMatch(/README\.md|['"`]README/i);
    expect(readFileSync(join(root, 'bench', 'run.ts'), 'utf8')).toContain("join(ROOT, 'docs', 'benchmarks.md')");
    const page = readFileSync(join(root, 'docs', 'benchmarks.md'), 'utf8');
    expect(page.indexOf('<!-- bench:start -->')).toBeGreaterThan(0);
    expect(page.indexOf('<!-- bench:end -->')).toBeGreaterThan(page.indexOf('<!-- bench:start -->'));
  });

  it('has the front door sections: the rule layout, deploying, the demo, how it works, key flags, compatibility, numbers, development, the docs index', () => {
    for (const h of ['## Deploy to a cluster', '## The demo', '## How it works', '## Key flags', '## Compatibility', '## Numbers', '## Development', '## Documentation']) expect(readme, h).toContain(`\n${h}\n`);
    expect(readme).toContain('-j DNAT --to-destination <proxy-ip>:<proxy-port>');
    expect(readme).toContain('](docs/benchmarks.md)');
  });
});
