import { mkdtempSync, renameSync, rmSync, unlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { StaticSource } from '../../src/cluster/static.js';
import { ClusterStore } from '../../src/cluster/store.js';
import { loadDir } from '../helpers/sources.js';

const service = (name: string, ip: string, labels = ''): string => `apiVersion: v1
kind: Service
metadata:
  name: ${name}
  namespace: ns
${labels ? `  labels: {${labels}}\n` : ''}spec:
  clusterIP: ${ip}
  ports: [{port: 80}]
`;

const nodeYaml = (name: string, tunnelAddress?: string): string => `apiVersion: v1
kind: Node
metadata:
  name: ${name}
${tunnelAddress !== undefined ? `  annotations:\n    edgemesh.io/tunnel-address: "${tunnelAddress}"\n` : ''}`;

const tunnels = (store: ClusterStore): Record<string, string> =>
  Object.fromEntries([...store.snapshot().nodes.values()].map((n) => [n.name, n.tunnelAddress ? `${n.tunnelAddress.address}:${n.tunnelAddress.port}` : '-']));

/** Polls until `cond` holds; bounded (5 s by default). */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

let dir: string;
let sources: StaticSource[] = [];
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'edgemesh-static-'));
});
afterEach(() => {
  for (const s of sources) s.stop();
  sources = [];
  rmSync(dir, { recursive: true, force: true });
});

function start(opts: { rescanIntervalMs?: number; errors?: string[]; warnings?: string[]; debug?: string[] } = {}): { store: ClusterStore; src: StaticSource; ready: Promise<unknown> } {
  const store = new ClusterStore();
  const src = new StaticSource({
    dir,
    store,
    debounceMs: 20,
    rescanIntervalMs: opts.rescanIntervalMs ?? 0,
    onFileError: (p, m) => opts.errors?.push(`${p}: ${m}`),
    ...(opts.warnings ? { onWarning: (p: string, m: string) => opts.warnings?.push(`${p}: ${m}`) } : {}),
    onDebug: (m) => opts.debug?.push(m),
  });
  sources.push(src);
  return { store, src, ready: src.start() };
}
const ips = (store: ClusterStore): Record<string, string> =>
  Object.fromEntries([...store.snapshot().services.values()].map((s) => [s.name, s.clusterIPs.join(',')]));

describe('static source', () => {
  it('reads multi-document YAML, kind: List and JSON; skips other kinds with a debug note', async () => {
    writeFileSync(join(dir, 'multi.yaml'), `${service('a', '10.10.0.1')}---\n${service('b', '10.10.0.2')}---\n`);
    writeFileSync(
      join(dir, 'list.yml'),
      `apiVersion: v1\nkind: List\nitems:\n- ${service('c', '10.10.0.3').replace(/\n(?=.)/g, '\n  ')}\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: cm, namespace: ns}\n`,
    );
    writeFileSync(join(dir, 'one.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'd', namespace: 'ns' }, spec: { clusterIP: '10.10.0.4' } }));
    writeFileSync(join(dir, 'notes.txt'), 'not a manifest');
    const errors: string[] = [];
    const debug: string[] = [];
    const { store, ready } = start({ errors, debug });
    await ready;
    expect(errors).toEqual([]);
    expect(ips(store)).toEqual({ a: '10.10.0.1', b: '10.10.0.2', c: '10.10.0.3', d: '10.10.0.4' });
    expect(debug.some((d) => d.includes('list.yml') && d.includes('v1 ConfigMap ns/cm'))).toBe(true);
    expect(store.synced).toBe(true);
  });

  it('reports a bad file with its path and reason and loads the rest', async () => {
    writeFileSync(join(dir, 'good.yaml'), service('a', '10.10.0.1'));
    writeFileSync(join(dir, 'bad-ip.yaml'), service('b', '10.10.0.300'));
    writeFileSync(join(dir, 'bad-syntax.yaml'), 'apiVersion: v1\nkind: Service\nmetadata: {name: [\n');
    writeFileSync(join(dir, 'bad.json'), '{"kind": ');
    const errors: string[] = [];
    const store = await loadDir(dir, errors);
    expect(ips(store)).toEqual({ a: '10.10.0.1' });
    expect(errors.sort()).toEqual([
      expect.stringMatching(new RegExp(`^${join(dir, 'bad-ip.yaml')}: Service ns/b: spec.clusterIP: "10.10.0.300": octet 300 out of range`)),
      expect.stringMatching(new RegExp(`^${join(dir, 'bad-syntax.yaml')}: invalid YAML in document 1`)),
      expect.stringMatching(new RegExp(`^${join(dir, 'bad.json')}: invalid JSON`)),
    ]);
    expect(errors.every((e) => !e.includes('\n'))).toBe(true);
  });

  it('with strictStart, a bad file at start is a ConfigError naming the file', async () => {
    writeFileSync(join(dir, 'good.yaml'), service('a', '10.10.0.1'));
    writeFileSync(join(dir, 'bad.yaml'), service('b', '10.10.0.1/32'));
    const store = new ClusterStore();
    const src = new StaticSource({ dir, store, rescanIntervalMs: 0, strictStart: true });
    sources.push(src);
    await expect(src.start()).rejects.toThrow(ConfigError);
    await expect(new StaticSource({ dir, store, rescanIntervalMs: 0, strictStart: true }).start()).rejects.toThrow(
      `${join(dir, 'bad.yaml')}: Service ns/b: spec.clusterIP: "10.10.0.1/32": not an IPv4 address`,
    );
  });

  it('reports a service defined in two files and keeps the first (by file name)', async () => {
    writeFileSync(join(dir, 'a.yaml'), service('x', '10.10.0.1'));
    writeFileSync(join(dir, 'b.yaml'), service('x', '10.10.0.2'));
    const errors: string[] = [];
    const store = await loadDir(dir, errors);
    expect(ips(store)).toEqual({ x: '10.10.0.1' });
    expect(errors).toEqual([`${join(dir, 'b.yaml')}: Service ns/x is also defined in ${join(dir, 'a.yaml')}; this definition is ignored`]);
  });

  it('fails to start on a missing directory or a file in its place (ConfigError)', async () => {
    const store = new ClusterStore();
    await expect(new StaticSource({ dir: join(dir, 'nope'), store }).start()).rejects.toThrow(ConfigError);
    await expect(new StaticSource({ dir: join(dir, 'nope'), store }).start()).rejects.toThrow(`--services-dir "${join(dir, 'nope')}": ENOENT`);
    writeFileSync(join(dir, 'f'), '');
    await expect(new StaticSource({ dir: join(dir, 'f'), store }).start()).rejects.toThrow('not a directory');
  });

  it('picks up an edit, an atomic rename-over, a new file and a removal through fs.watch', async () => {
    const f = join(dir, 'svc.yaml');
    writeFileSync(f, service('a', '10.10.0.1'));
    const { store, ready } = start();
    await ready;
    expect(ips(store)).toEqual({ a: '10.10.0.1' });

    writeFileSync(f, service('a', '10.10.0.2')); // in-place edit
    await until(() => ips(store).a === '10.10.0.2');

    writeFileSync(join(dir, '.svc.yaml.tmp'), service('a', '10.10.0.3', 'noproxy: edgemesh')); // editor / kubectl style
    renameSync(join(dir, '.svc.yaml.tmp'), f);
    await until(() => ips(store).a === '10.10.0.3');
    expect(store.snapshot().services.get('ns/a')!.labels).toEqual({ noproxy: 'edgemesh' });

    writeFileSync(join(dir, 'more.json'), JSON.stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name: 'b', namespace: 'ns' }, spec: { clusterIP: '10.10.0.9' } }));
    await until(() => ips(store).b === '10.10.0.9');

    unlinkSync(f);
    await until(() => !('a' in ips(store)));
    expect(ips(store)).toEqual({ b: '10.10.0.9' });
  });

  it('keeps the last good state of a file that turns bad, reports it once, and recovers', async () => {
    const f = join(dir, 'svc.yaml');
    writeFileSync(f, service('a', '10.10.0.1'));
    const errors: string[] = [];
    const { store, src, ready } = start({ errors });
    await ready;
    let changes = 0;
    store.onChange(() => changes++);
    writeFileSync(f, service('a', '10.10.0.999'));
    await until(() => errors.length === 1);
    expect(errors[0]).toBe(`${f}: Service ns/a: spec.clusterIP: "10.10.0.999": octet 999 out of range 0-255; keeping its last good state`);
    expect(ips(store)).toEqual({ a: '10.10.0.1' });
    await src.rescan();
    await src.rescan();
    expect(errors).toHaveLength(1); // not repeated while unchanged
    expect(changes).toBe(0);
    writeFileSync(f, service('a', '10.10.0.7'));
    await until(() => ips(store).a === '10.10.0.7');
  });

  it('the periodic rescan sees changes even without fs.watch events, and survives the directory vanishing', async () => {
    writeFileSync(join(dir, 'a.yaml'), service('a', '10.10.0.1'));
    const errors: string[] = [];
    const { store, src, ready } = start({ rescanIntervalMs: 50, errors });
    await ready;
    // Simulate a lost watch: close the watcher the source holds.
    (src as unknown as { watcher?: { close(): void } }).watcher?.close();
    (src as unknown as { watcher?: unknown }).watcher = { close() {} };
    writeFileSync(join(dir, 'b.yaml'), service('b', '10.10.0.2'));
    await until(() => ips(store).b === '10.10.0.2');

    rmSync(dir, { recursive: true, force: true });
    await until(() => errors.some((e) => e.includes('cannot read directory')));
    expect(ips(store)).toEqual({ a: '10.10.0.1', b: '10.10.0.2' });
    mkdirSync(dir);
    writeFileSync(join(dir, 'c.yaml'), service('c', '10.10.0.3'));
    await until(() => JSON.stringify(ips(store)) === JSON.stringify({ c: '10.10.0.3' }));
  });
  it('a directory written more often than the debounce is still rescanned, within maxDelayMs of the first event', async () => {
    const f = join(dir, 'svc.yaml');
    writeFileSync(f, service('a', '10.10.1.0'));
    const store = new ClusterStore();
    const src = new StaticSource({ dir, store, debounceMs: 100, maxDelayMs: 300, rescanIntervalMs: 0 });
    sources.push(src);
    await src.start();
    let changes = 0;
    store.onChange(() => changes++);
    // A write every 10 ms for 1.5 s: never 100 ms of quiet. A trailing-only debounce would not
    // rescan at all until the writes stop.
    const t0 = Date.now();
    for (let n = 1; Date.now() - t0 < 1500 && n < 1000; n++) {
      writeFileSync(join(dir, '.svc.tmp'), service('a', `10.10.1.${n % 250}`));
      renameSync(join(dir, '.svc.tmp'), f);
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(changes).toBeGreaterThanOrEqual(2);
  });

  it('a rescan of an untouched directory publishes nothing; a touched file is published again', async () => {
    writeFileSync(join(dir, 'a.yaml'), service('a', '10.10.0.1'));
    const { store, src, ready } = start({ rescanIntervalMs: 30 });
    await ready;
    let publishes = 0;
    const replaceAll = store.replaceAll.bind(store);
    store.replaceAll = (input) => {
      publishes++;
      replaceAll(input);
    };
    await new Promise((r) => setTimeout(r, 300)); // about ten periodic rescans
    expect(publishes).toBe(0);
    writeFileSync(join(dir, 'a.yaml'), service('a', '10.10.0.9'));
    await until(() => ips(store).a === '10.10.0.9');
    expect(publishes).toBeGreaterThanOrEqual(1);
    unlinkSync(join(dir, 'a.yaml'));
    await until(() => ips(store).a === undefined);
    src.stop();
  });

  it('reads kind: Node manifests: tunnel addresses in the store, a node removed with its file', async () => {
    writeFileSync(join(dir, 'nodes.yaml'), `${nodeYaml('edge-1', '192.168.1.10:20006')}---\n${nodeYaml('edge-2', '[fd00::2]:20006')}---\n${nodeYaml('edge-3')}`);
    writeFileSync(join(dir, 'more.yaml'), nodeYaml('edge-4', '192.168.1.40:20006'));
    const errors: string[] = [];
    const warnings: string[] = [];
    const { store, src, ready } = start({ errors, warnings });
    expect(await ready).toMatchObject({ files: 2, badFiles: [], nodes: 4 });
    expect([errors, warnings]).toEqual([[], []]);
    expect(tunnels(store)).toEqual({ 'edge-1': '192.168.1.10:20006', 'edge-2': 'fd00::2:20006', 'edge-3': '-', 'edge-4': '192.168.1.40:20006' });
    expect(store.nodesListed).toBe(true);
    unlinkSync(join(dir, 'more.yaml'));
    await src.rescan();
    expect(Object.keys(tunnels(store))).toEqual(['edge-1', 'edge-2', 'edge-3']);
  });

  it('a Node with a bad tunnel address annotation loads without an address and is named in a warning with its file', async () => {
    writeFileSync(join(dir, 'nodes.yaml'), nodeYaml('edge-1', '192.168.1.10:99999'));
    const errors: string[] = [];
    const warnings: string[] = [];
    const { store, ready } = start({ errors, warnings });
    expect(await ready).toMatchObject({ badFiles: [], nodes: 1 });
    expect(tunnels(store)).toEqual({ 'edge-1': '-' });
    expect(errors).toEqual([]);
    expect(warnings).toEqual([`${join(dir, 'nodes.yaml')}: Node edge-1: annotation edgemesh.io/tunnel-address "192.168.1.10:99999": port 99999 out of range 1-65535; the node has no tunnel address`]);
  });

  it('a bad Node manifest is skipped with an error naming the file; the other files load; a Node in two files is reported', async () => {
    writeFileSync(join(dir, 'a-good.yaml'), nodeYaml('edge-1', '192.168.1.10:20006') + '---\n' + service('a', '10.10.0.1'));
    writeFileSync(join(dir, 'b-bad.yaml'), 'apiVersion: v1\nkind: Node\nmetadata:\n  annotations: {}\n');
    writeFileSync(join(dir, 'c-dup.yaml'), nodeYaml('edge-1', '192.168.1.99:20006'));
    const errors: string[] = [];
    const { store, ready } = start({ errors });
    expect(await ready).toMatchObject({ badFiles: [join(dir, 'b-bad.yaml')] });
    expect(ips(store)).toEqual({ a: '10.10.0.1' });
    expect(tunnels(store)).toEqual({ 'edge-1': '192.168.1.10:20006' });
    expect(errors.sort()).toEqual([
      `${join(dir, 'b-bad.yaml')}: Node: metadata.name: required`,
      `${join(dir, 'c-dup.yaml')}: Node edge-1 is also defined in ${join(dir, 'a-good.yaml')}; this definition is ignored`,
    ]);
  });
});
