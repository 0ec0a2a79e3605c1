// The package's entry point (dist/src/index.js, what `import 'edgemesh-hybrid-nat'` loads)
// exports a curated list and loads nothing heavy: a module hook in a child process refuses
// @kubernetes/client-node and the CLI-only modules, so loading any of them eagerly fails the import.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const entry = join(root, 'dist', 'src', 'index.js');

/** Never loaded by importing the entry point: the Kubernetes client library (the agent loads it lazily) and what only the CLI runs. */
const LAZY = ['/node_modules/@kubernetes/client-node/', '/dist/src/cli.js', '/dist/src/bin.js', '/dist/src/dev/', '/dist/src/tunnel/certs-cli.js', '/dist/src/testing/'];

// Runs in the child: a resolve hook that throws on any module whose URL contains one of argv[2]
// (JSON), then imports argv[1] and prints its export names.
const CHILD = `
import { register } from 'node:module';
const hooks = \`
let blocked = [];
export function initialize(data) { blocked = data.blocked; }
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  if (blocked.some((b) => r.url.includes(b))) throw new Error('loaded eagerly: ' + r.url + ' (imported by ' + context.parentURL + ')');
  return r;
}\`;
register('data:text/javascript,' + encodeURIComponent(hooks), import.meta.url, { data: { blocked: JSON.parse(process.argv[2]) } });
const m = await import(process.argv[1]);
console.log(JSON.stringify(Object.keys(m).sort()));
`;

function importInChild(specifier: string, blocked: readonly string[]): { status: number | null; exports?: string[]; stderr: string } {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', CHILD, specifier, JSON.stringify(blocked)], { cwd: root, encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stderr: r.stderr, ...(r.status === 0 ? { exports: JSON.parse(r.stdout) as string[] } : {}) };
}

/** The runtime exports, pinned: adding one is a decision (document it), not a side effect of `export *`. */
const EXPORTS = [
  'ALL_BACKENDS', 'Agent', 'BACKEND_NAMES', 'ClusterStore', 'ConfigError', 'DEFAULT_PROXY_ADDRESS', 'DEFAULT_PROXY_INTERFACE', 'DEFAULT_PROXY_PORT',
  'DEFAULT_SELECTION', 'EDGE_MESH_CHAIN', 'EDGE_MESH_TCP_CHAIN', 'EdgeMeshError', 'FamilyMismatchError', 'GenerationChangedError', 'InterfaceError', 'KubeClient', 'KubeHttpError', 'KubeSource',
  'LockTimeoutError', 'NOPROXY_LABEL', 'NOPROXY_VALUE', 'NativeLoadError', 'NetParseError', 'SERVICE_PROXY_NAME_LABEL', 'StaticSource', 'SyscallError',
  'TcpProxy', 'TransactionError', 'computeLocalServe', 'computeRoutes', 'configFileText', 'createBackend', 'createLogger', 'describeConfig',
  'desiredRuleSets', 'detectBackend', 'ensureProxyInterface', 'loadConfig', 'makeKubeConfig', 'managedFamilies', 'originalDst', 'parseArgs',
  'parseLabelSelector', 'parseManifests', 'removeProxyInterface', 'renderRule', 'renderRuleSet', 'resolveBackend', 'selectService', 'silentLogger',
];

describe('package entry point', () => {
  it('is built (dist/src/index.js; `npx tsc -p tsconfig.json` makes it)', () => {
    expect(existsSync(entry), `${entry} missing: run npx tsc -p tsconfig.json`).toBe(true);
  });

  it('loads without @kubernetes/client-node or the CLI-only modules, and exports exactly the curated list', () => {
    const r = importInChild(entry, LAZY);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.exports).toEqual([...EXPORTS].sort());
  });

  it('the hook does refuse what it names (control: importing @kubernetes/client-node fails)', () => {
    const r = importInChild('@kubernetes/client-node', LAZY);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/loaded eagerly: file:\/\/.*\/node_modules\/@kubernetes\/client-node\//);
  });

  it('exports every name the embedding section of docs/architecture.md names', () => {
    const doc = readFileSync(join(root, 'docs', 'architecture.md'), 'utf8');
    const section = /# Embedding\n([\s\S]*?)\n# /.exec(doc)?.[1] ?? '';
    const named = [...section.matchAll(/`([A-Za-z][A-Za-z0-9]*)`/g)].map((m) => m[1] as string).filter((n) => n !== 'src');
    const imported = [...section.matchAll(/import \{([^}]*)\} from 'edgemesh-hybrid-nat'/g)].flatMap((m) => (m[1] as string).split(',').map((s) => s.trim()));
    expect(named.length + imported.length).toBeGreaterThan(5);
    for (const n of [...named, ...imported]) expect(EXPORTS, n).toContain(n);
  });
});
