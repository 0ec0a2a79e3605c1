// src/ has no import cycles: a cycle makes load order (and so which binding is still undefined
// when a module body runs) depend on which module an embedder imports first, and says two
// modules cannot be understood apart. Type-only imports count (see test/helpers/import-graph.ts).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { importCycles, importGraph } from '../helpers/import-graph.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('import graph', () => {
  it('src/ has no import cycle (each one found is named as a loop of modules)', () => {
    const graph = importGraph(root, 'src');
    expect(graph.size).toBeGreaterThan(40);
    expect(graph.get('src/native/load.ts')).toContain('src/native/binding.ts');
    const cycles = importCycles(graph).map((c) => c.join(' -> '));
    expect(cycles, `import cycles in src/:\n${cycles.join('\n')}`).toEqual([]);
  });

  it('the detector names a loop per cycle, through type-only imports and export-from, ignoring dynamic import()', () => {
    const dir = mkdtempSync(join(tmpdir(), 'edgemesh-cycles-'));
    try {
      const file = (path: string, text: string): void => {
        mkdirSync(dirname(join(dir, path)), { recursive: true });
        writeFileSync(join(dir, path), text);
      };
      // a -> b (type only) -> c (export from) -> a; d -> e -> d; f -> g by import() only; h alone.
      file('x/a.ts', "import type { B } from './sub/b.js';\nexport const a = 1;\n");
      file('x/sub/b.ts', "export * from '../c.js';\nexport type B = number;\n");
      file('x/c.ts', "import { a } from './a.js';\nexport const c = a;\n");
      file('x/d.ts', "import './e.js';\n");
      file('x/e.ts', "import { d } from './d.js';\nimport { readFileSync } from 'node:fs';\n");
      file('x/f.ts', "import { g } from './g.js';\n");
      file('x/g.ts', "export async function g() { return import('./f.js'); }\n");
      file('x/h.ts', "import { h } from './h.js';\n");
      const graph = importGraph(dir, 'x');
      expect(graph.get('x/e.ts')).toEqual(['x/d.ts']);
      expect(graph.get('x/g.ts')).toEqual([]);
      expect(importCycles(graph).map((c) => c.join(' -> ')).sort()).toEqual([
        'x/a.ts -> x/sub/b.ts -> x/c.ts -> x/a.ts',
        'x/d.ts -> x/e.ts -> x/d.ts',
        'x/h.ts -> x/h.ts',
      ]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
