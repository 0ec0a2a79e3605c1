// The static import graph of a TypeScript source tree, and its cycles. Edges are every
// `import ... from`, `import type ... from`, `export ... from` and bare `import '...'` naming a
// relative module; dynamic import() is left out on purpose (it is how the agent defers heavy
// modules, and it cannot form a load-order cycle). Type-only imports count: they do not run, but a
// type cycle still says two modules depend on each other, which is the layering we keep clean.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

/** Module (path relative to root, with .ts) -> the modules it imports statically. */
export function importGraph(root: string, dir: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (name.endsWith('.ts') && !name.endsWith('.d.ts')) graph.set(relative(root, p), importsOf(root, p));
    }
  };
  walk(resolve(root, dir));
  return graph;
}

function importsOf(root: string, file: string): string[] {
  const src = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, false);
  const out = new Set<string>();
  for (const st of src.statements) {
    let spec: ts.Expression | undefined;
    if (ts.isImportDeclaration(st)) spec = st.moduleSpecifier;
    else if (ts.isExportDeclaration(st)) spec = st.moduleSpecifier;
    else if (ts.isImportEqualsDeclaration(st) && ts.isExternalModuleReference(st.moduleReference)) spec = st.moduleReference.expression;
    if (!spec || !ts.isStringLiteral(spec) || !spec.text.startsWith('.')) continue;
    // NodeNext: sources import './x.js' for ./x.ts
    out.add(relative(root, resolve(dirname(file), spec.text.replace(/\.js$/, '.ts'))));
  }
  return [...out].sort();
}

/**
 * Every elementary cycle's strongly connected component, as one cycle through it each: a
 * component of n modules is reported once, by one concrete loop a -> b -> ... -> a, so a
 * failure names a path to cut. Tarjan's algorithm; modules outside the graph are ignored.
 */
export function importCycles(graph: Map<string, string[]>): string[][] {
  let index = 0;
  const idx = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const components: string[][] = [];
  const strong = (v: string): void => {
    idx.set(v, index);
    low.set(v, index++);
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!idx.has(w)) {
        strong(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, idx.get(w)!));
    }
    if (low.get(v) === idx.get(v)) {
      const comp: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        comp.push(w);
      } while (w !== v);
      if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) components.push(comp);
    }
  };
  for (const v of [...graph.keys()].sort()) if (!idx.has(v)) strong(v);
  return components.map((comp) => loopThrough(graph, new Set(comp)));
}

/** A shortest loop from the component's first module (by name) back to itself, staying inside it. */
function loopThrough(graph: Map<string, string[]>, comp: Set<string>): string[] {
  const start = [...comp].sort()[0]!;
  const prev = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of graph.get(v) ?? []) {
      if (!comp.has(w)) continue;
      if (w === start) {
        const path = [start];
        for (let u = v; u !== start; u = prev.get(u)!) path.splice(1, 0, u);
        return [...path, start];
      }
      if (!prev.has(w)) {
        prev.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start, start];
}
