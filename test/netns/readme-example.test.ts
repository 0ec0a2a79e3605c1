// The embedding example of docs/architecture.md compiles against the package's types and runs.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { afterAll, expect, it } from 'vitest';
import { describeNetns, Netns, destroyAllNetns } from '../helpers/netns.js';
import { ServicesDir, seedBasics } from '../helpers/manifests.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

function example(): string {
  const readme = readFileSync(join(root, 'docs', 'architecture.md'), 'utf8');
  const m = /<!-- embed-example -->\s*```ts\n([\s\S]*?)```/.exec(readme);
  if (!m?.[1]) throw new Error('docs/architecture.md has no <!-- embed-example --> ts block');
  return m[1];
}

describeNetns('README embedding example', () => {
  afterAll(destroyAllNetns);

  it('type-checks against the package exports and, run in a namespace, syncs the rules and removes them', async () => {
    const dir = join(root, '.readme-example');
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    const svc = new ServicesDir();
    let ns: Netns | undefined;
    try {
      const file = join(dir, 'example.mts');
      writeFileSync(file, example());
      const program = ts.createProgram([file], {
        module: ts.ModuleKind.NodeNext,
        moduleResolution: ts.ModuleResolutionKind.NodeNext,
        target: ts.ScriptTarget.ES2022,
        strict: true,
        noEmit: true,
        skipLibCheck: true,
        types: ['node'],
      });
      const diags = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n'));
      expect(diags).toEqual([]);
      const js = ts.transpileModule(example(), { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
      writeFileSync(join(dir, 'example.mjs'), js);
      seedBasics(svc);
      ns = await Netns.create('readme');
      const r = await ns.run(process.execPath, [join(dir, 'example.mjs')], { env: { ...process.env, SERVICES_DIR: svc.path } });
      expect(r.stdout).toContain('-A EDGE-MESH -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN');
      expect(r.stdout).toContain('wrote 1 transaction(s)');
      expect((await ns.sh('nft list tables')).stdout).not.toContain('edgemesh'); // stop() removed them
    } finally {
      await ns?.destroy();
      svc.destroy();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
