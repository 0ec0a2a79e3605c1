// parseManifests on its own: where a YAML error is (document, line, column), aliases that would
// expand exponentially, the YAML 1.2 core resolution of plain scalars, and the document number of
// an offset.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { aliasExpansion, documentAt, MAX_ALIAS_EXPANSION, parseManifests } from '../../src/cluster/manifests.js';

const here = dirname(fileURLToPath(import.meta.url));
const CORPUS = resolve(here, '..', 'fuzz-corpus', 'manifests');

const service = (name: string, ip: string, extra = ''): string =>
  `apiVersion: v1\nkind: Service\nmetadata:\n  name: ${name}\n  namespace: ns\n${extra}spec:\n  clusterIP: ${ip}\n  ports:\n  - port: 80\n`;

function failure(text: string, name = 'f.yaml'): string {
  try {
    parseManifests(text, name);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error('parsed without an error');
}

describe('parseManifests', () => {
  it('a syntax error names the document, and the line and column in the file (1-based)', () => {
    const text = `${service('a', '10.10.0.1')}---\n${service('b', '10.10.0.2')}---\napiVersion: v1\nkind: Service\nmetadata: {name: [\n`;
    const msg = failure(text);
    expect(msg).toMatch(/^invalid YAML in document 3: .+ at line (\d+), column (\d+)$/);
    const [, line] = /at line (\d+)/.exec(msg)!;
    expect(Number(line)).toBeGreaterThanOrEqual(22); // the third document's metadata line or after it
    expect(msg.includes('\n')).toBe(false);
  });

  it('a bad indentation in the first document reports line 4, column 3 there', () => {
    expect(failure('apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n namespace: b\n')).toMatch(/^invalid YAML in document 1: .* at line 5, column 2$/);
  });

  it('the "billion laughs" file of the fuzz corpus is refused for its alias expansion, not expanded', () => {
    const t0 = performance.now();
    expect(failure(readFileSync(join(CORPUS, 'alias-bomb.yaml'), 'utf8'))).toMatch(/aliases expand to more than 10000 nodes/);
    expect(performance.now() - t0).toBeLessThan(2_000);
  });

  it('a few aliases (an anchored label map reused within a List) load as plain copies', () => {
    const item = (name: string, ip: string, labels: string) => `- apiVersion: v1\n  kind: Service\n  metadata: {name: ${name}, namespace: ns, labels: ${labels}}\n  spec: {clusterIP: ${ip}, ports: [{port: 80}]}\n`;
    const text = `apiVersion: v1\nkind: List\nitems:\n${item('a', '10.10.0.1', '&l {app: web, tier: front}')}${item('b', '10.10.0.2', '*l')}`;
    const r = parseManifests(text, 'f.yaml');
    expect(r.services.map((s) => [s.name, s.labels])).toEqual([
      ['a', { app: 'web', tier: 'front' }],
      ['b', { app: 'web', tier: 'front' }],
    ]);
    expect(r.services[0]!.labels).not.toBe(r.services[1]!.labels);
  });

  it('plain scalars resolve as YAML 1.2 core: a date, "yes" and "on" stay strings; numbers are numbers', () => {
    const r = parseManifests(service('a', '10.10.0.1', '  labels: {day: 2024-01-01, ok: yes, sw: on}\n'), 'f.yaml');
    expect(r.services[0]!.labels).toEqual({ day: '2024-01-01', ok: 'yes', sw: 'on' });
    expect(r.services[0]!.ports[0]!.port).toBe(80);
  });

  it('a null byte, an unknown alias and an unknown tag are one-line ConfigErrors', () => {
    expect(failure(service('a', '10.10.0.1').replace('ns', 'n\0s'))).toMatch(/^invalid YAML in document 1: null byte/);
    expect(failure(service('a', '10.10.0.1', '  labels: *nowhere\n'))).toMatch(/^invalid YAML in document 1: unidentified alias "nowhere" at line 6/);
    expect(failure(readFileSync(join(CORPUS, 'tags-and-anchors.yaml'), 'utf8'))).toMatch(/^invalid YAML in document 1: unknown tag/);
  });
});

describe('aliasExpansion', () => {
  it('is 0 without shared nodes and counts the copies an expansion adds', () => {
    expect(aliasExpansion([{ a: [1, 2], b: { c: 'x' } }, null, 'y'])).toBe(0);
    const shared = { x: 1, y: 2 }; // 3 nodes
    expect(aliasExpansion([{ a: shared, b: shared, c: shared }])).toBe(6);
    let level: unknown = ['x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x'];
    for (let i = 0; i < 6; i++) level = Array(9).fill(level);
    expect(aliasExpansion([level])).toBeGreaterThan(MAX_ALIAS_EXPANSION);
  });
});

describe('documentAt', () => {
  it('counts documents by --- and ... separators; a leading --- or directive starts none', () => {
    const text = '%YAML 1.2\n---\na: 1\n---\nb: 2\n...\n# c\nc: 3\n---\n---\nd: 4\n';
    const at = (s: string) => documentAt(text, text.indexOf(s));
    expect([at('a:'), at('b:'), at('c:'), at('d:')]).toEqual([1, 2, 3, 5]);
    expect(documentAt('a: 1\n', 2)).toBe(1);
  });
});
