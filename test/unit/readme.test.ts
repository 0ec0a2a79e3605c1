// The README stays true to the code: every option and every metric it should name is there.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { OPTIONS } from '../../src/config.js';
import { AgentMetrics } from '../../src/metrics.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const readme = readFileSync(join(root, 'README.md'), 'utf8');

describe('README', () => {
  it('documents every command-line option of the option table', () => {
    for (const o of OPTIONS) if (o.flag !== 'config') expect(readme, `--${o.flag}`).toContain(`--${o.flag}`);
  });

  it('names every edgemesh_* metric the agent exports', async () => {
    const m = new AgentMetrics({ counts: () => ({ watched: 0, ignored: 0, proxied: 0, none: 0 }), desired: () => undefined });
    const names = (await m.registry.getMetricsAsJSON()).map((x) => x.name).filter((n) => n.startsWith('edgemesh_'));
    expect(names.length).toBeGreaterThan(10);
    for (const n of names) expect(readme, n).toContain(n);
  });

  it('gives exactly the two set-up commands that .ci/run and the demo use', () => {
    expect(readme).toContain('bash scripts/demo.sh');
    expect(readme).toContain('bash scripts/test.sh');
    expect(readFileSync(join(root, '.ci', 'run'), 'utf8')).toMatch(/scripts\/test\.sh/);
  });
});
