// Every relative link in the README and docs/ resolves: the file exists inside the repository, and
// an anchor names a heading of the page it points at (GitHub's heading ids).
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const pages = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** The text outside fenced code blocks and inline code spans (links and headings there are not rendered). */
function prose(md: string): string {
  return md.replace(/^```[\s\S]*?^```/gm, '').replace(/`[^`\n]*`/g, (m) => (m.includes('](') ? '' : m));
}

/** GitHub's id of a heading: lower case, punctuation dropped, spaces as hyphens; repeats get -1, -2, ... */
export function anchors(md: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of prose(md).matchAll(/^#{1,6}[ \t]+(.+?)[ \t]*#*$/gm)) {
    const text = (m[1] as string).replace(/\[([^\]]*)\]\([^)]*\)/g, '$1');
    const base = text
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\s_-]/gu, '')
      .replace(/\s/g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/** The broken relative links of one page (path relative to the repository root), one line each. */
export function brokenLinks(page: string, md: string, read: (path: string) => string | undefined): string[] {
  const broken: string[] = [];
  for (const m of prose(md).matchAll(/!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
    const target = m[1] as string;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // http:, https:, mailto:
    const [path = '', anchor] = target.split('#', 2);
    const file = path === '' ? page : relative(root, resolve(root, dirname(page), path));
    if (file.startsWith('..') || file.split(sep).includes('..')) {
      broken.push(`${page}: ${target}: outside the repository`);
      continue;
    }
    const text = read(file);
    if (text === undefined) {
      broken.push(`${page}: ${target}: no such file`);
      continue;
    }
    if (anchor !== undefined && file.endsWith('.md') && !anchors(text).has(anchor)) broken.push(`${page}: ${target}: no heading #${anchor} in ${file}`);
  }
  return broken;
}

const readRepo = (path: string): string | undefined => {
  const full = join(root, path);
  return existsSync(full) ? readFileSync(full, 'utf8') : undefined;
};

/** The repository paths a page names in code spans (`src/...`, `native/...`, ...), braces expanded. */
export function namedPaths(md: string): string[] {
  const out: string[] = [];
  for (const m of md.matchAll(/`((?:src|native|test|bench|deploy|scripts|docs)\/[^`\s]*)`/g)) {
    const p = m[1] as string;
    const brace = /\{([^}]*)\}/.exec(p);
    if (brace) for (const alt of (brace[1] as string).split(',')) out.push(p.replace(brace[0], alt));
    else out.push(p);
  }
  return out;
}

/** A named path exists as a file or folder, or names a source file without its extension (`native/iptc_core`). */
function pathExists(p: string): boolean {
  const full = join(root, p.replace(/\/$/, ''));
  if (existsSync(full)) return true;
  const dir = dirname(full);
  const base = full.slice(dir.length + 1);
  return existsSync(dir) && readdirSync(dir).some((f) => f.startsWith(`${base}.`));
}

describe('links in the README and docs/', () => {
  it('every file or folder of the repository the README and docs/ name in code exists (the map of the code follows the layout)', () => {
    const missing = pages.flatMap((p) => namedPaths(readFileSync(join(root, p), 'utf8')).filter((n) => !pathExists(n)).map((n) => `${p}: ${n}`));
    expect(missing).toEqual([]);
  });

  it("docs/architecture.md's map of the code names every file and folder of src/ and every folder of native/", () => {
    const doc = readFileSync(join(root, 'docs', 'architecture.md'), 'utf8');
    const map = /^## The code\n+```\n([\s\S]*?)```/m.exec(doc)?.[1] ?? '';
    expect(map).toContain('src/');
    const words = new Set(map.split(/[\s(),;+]+/));
    const entries = readdirSync(join(root, 'src'), { withFileTypes: true }).map((e) => (e.isDirectory() ? `${e.name}/` : e.name));
    const nativeDirs = readdirSync(join(root, 'native'), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => `${e.name}/`);
    expect([...entries, ...nativeDirs].filter((e) => !words.has(e))).toEqual([]);
  });

  it('the path check expands braces and would report a moved file', () => {
    expect(namedPaths('`bench/results/latest.{json,md}` and `src/backends/iptables.ts`')).toEqual(['bench/results/latest.json', 'bench/results/latest.md', 'src/backends/iptables.ts']);
    expect(pathExists('src/netfilter/plan.ts')).toBe(true);
    expect(pathExists('src/agent')).toBe(true);
    expect(pathExists('src/backends/iptables.ts')).toBe(false);
  });

  it('every relative link and anchor of the README and docs/ resolves inside the repository', () => {
    const broken = pages.flatMap((p) => brokenLinks(p, readFileSync(join(root, p), 'utf8'), readRepo));
    expect(broken).toEqual([]);
  });

  it('the README links to every page of docs/', () => {
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    for (const p of pages.filter((p) => p !== 'README.md')) expect(readme, p).toContain(`](${p})`);
  });

  it('the checker reports a missing file, a missing anchor and a path leaving the repository, and accepts good links', () => {
    const files: Record<string, string> = { 'docs/a.md': '# A page\n\n## Tunnel credentials: from the node, not a `Secret`\n\n## Setup\n\n## Setup\n' };
    const read = (p: string): string | undefined => files[p];
    const md = [
      '[ok](a.md) [ok](a.md#a-page) [ok](#setup-1) [ok](a.md#tunnel-credentials-from-the-node-not-a-secret) [web](https://example.com/x#y)',
      '[gone](b.md) [bad anchor](a.md#nowhere) [out](../../elsewhere/x.md)',
      '```\n[inside code](missing.md)\n```',
    ].join('\n');
    expect(brokenLinks('docs/a.md', files['docs/a.md'] + md, read)).toEqual([
      'docs/a.md: b.md: no such file',
      'docs/a.md: a.md#nowhere: no heading #nowhere in docs/a.md',
      'docs/a.md: ../../elsewhere/x.md: outside the repository',
    ]);
  });
});
