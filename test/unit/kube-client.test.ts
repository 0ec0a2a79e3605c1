// The lean Kubernetes client against the in-test API server: paging, the v1 Endpoints fallback
// when the EndpointSlice API answers 404, recovery on an Endpoints watch, HTTPS with client
// certificates (real OpenSSL certificates), kubeconfig files (token, client certificates, an exec
// plugin through the client library), in-cluster config with a rotating token, and one-line
// errors.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { desiredRuleSets } from '../../src/intent/desired.js';
import { renderRuleSet } from '../../src/netfilter/rules.js';
import { KubeClient, KubeSource, makeKubeConfig, type EndpointsApi, type KubeClientConfig, type KubeResource } from '../../src/cluster/kube.js';
import { ClusterStore } from '../../src/cluster/store.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { assertBuilt, CLI } from '../helpers/agent.js';
import { FakeApiServer } from '../helpers/fake-apiserver.js';
import { issueWithOpenssl, makeCa } from '../helpers/openssl.js';
import { SEED_CONFIG } from '../helpers/sources.js';

type Obj = { metadata: { name: string; namespace?: string; labels?: Record<string, string> }; [k: string]: unknown };

const svc = (name: string, ip: string, labels: Record<string, string> = {}): Obj => ({ metadata: { name, namespace: 'shop', labels }, spec: { clusterIP: ip, ports: [{ name: 'http', port: 80, targetPort: 'http' }] } });
const endpoints = (name: string, ready: string[], notReady: string[] = [], nodeName?: string): Obj => ({
  metadata: { name, namespace: 'shop' },
  subsets: [{
    addresses: ready.map((ip) => ({ ip, ...(nodeName ? { nodeName } : {}) })),
    notReadyAddresses: notReady.map((ip) => ({ ip })),
    ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
  }],
});

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const render = (store: ClusterStore): string => renderRuleSet(desiredRuleSets(store.snapshot(), SEED_CONFIG).sets.ipv4!);
/** "ip:port ready|not-ready @node" of a service's endpoints, as the proxy's routes see them. */
const eps = (store: ClusterStore, name: string): string[] =>
  (store.snapshot().slices.get(`shop/${name}`) ?? []).flatMap((s) => s.endpoints.map((e) => `${e.addresses[0]}:${s.ports.find((p) => p.name === 'http')?.port} ${e.ready ? 'ready' : 'not-ready'}${e.nodeName ? ` @${e.nodeName}` : ''}`)).sort();
const ips = (store: ClusterStore): Record<string, string> => Object.fromEntries([...store.snapshot().services.values()].filter((s) => s.namespace === 'shop').map((s) => [s.name, s.clusterIPs.join(',')]));

let api: FakeApiServer;
let source: KubeSource | undefined;
let errors: string[];
let infos: string[];
let requestErrors: string[];

afterEach(async () => {
  await source?.stop();
  source = undefined;
  await api?.close();
});

function startSource(kubeConfig: KubeClientConfig, store: ClusterStore, opts: { endpointsApi?: EndpointsApi; pageSize?: number } = {}): KubeSource {
  errors = [];
  infos = [];
  requestErrors = [];
  source = new KubeSource({
    kubeConfig,
    store,
    watchNodes: false,
    backoff: { initialMs: 20, maxMs: 200, resetAfterMs: 10_000 },
    onError: (r, m) => errors.push(`${r}: ${m}`),
    onInfo: (m) => infos.push(m),
    onRequestError: (r: KubeResource, req) => requestErrors.push(`${r}/${req}`),
    ...opts,
  });
  source.start();
  return source;
}

async function plainServer(): Promise<FakeApiServer> {
  api = new FakeApiServer();
  await api.start();
  return api;
}

describe('lean client: lists and the v1 Endpoints fallback', () => {
  it('follows `continue` through a paged list and watches from the first page\'s resourceVersion', async () => {
    await plainServer();
    for (let i = 0; i < 7; i++) api.set('services', svc(`s${i}`, `10.10.9.${i + 1}`));
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'api-server', url: api.url }), store, { pageSize: 3 });
    await store.whenSynced();
    expect(Object.keys(ips(store))).toHaveLength(7);
    const lists = api.requests.filter((r) => r.resource === 'services' && !r.watch);
    expect(lists.map((r) => [r.query.limit, r.query.continue !== undefined])).toEqual([['3', false], ['3', true], ['3', true]]);
    await until(() => api.openWatches('services') === 1, 'watch open');
    expect(api.requests.find((r) => r.resource === 'services' && r.watch)!.query).toMatchObject({ resourceVersion: '107', allowWatchBookmarks: 'true' });
    expect(Number(api.requests.find((r) => r.resource === 'services' && r.watch)!.query.timeoutSeconds)).toBeGreaterThanOrEqual(300);
  });

  it('auto: an EndpointSlice list answering 404 switches to v1 Endpoints, for rules (an ignored headless service) and for proxy endpoints', async () => {
    await plainServer();
    api.disabled.add('endpointslices');
    api.set('services', svc('web', '10.10.1.1'));
    api.set('services', { metadata: { name: 'db', namespace: 'shop', labels: { noproxy: 'edgemesh' } }, spec: { clusterIP: 'None', ports: [{ port: 5432 }] } });
    api.set('endpoints', endpoints('web', ['10.244.1.10', '10.244.1.11'], ['10.244.1.12'], 'edge-1'));
    api.set('endpoints', endpoints('db', ['10.244.2.5'], ['10.244.2.6']));
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'api-server', url: api.url }), store);
    await store.whenSynced();
    expect(infos).toEqual([
      'endpoints: the EndpointSlice API answered 404 (/apis/discovery.k8s.io/v1/endpointslices); using v1 Endpoints (/api/v1/endpoints) instead',
      'endpoints: from v1 Endpoints (/api/v1/endpoints)',
    ]);
    expect(source!.endpointsResource).toBe('endpoints');
    expect(errors).toEqual([]);
    expect(eps(store, 'web')).toEqual(['10.244.1.10:8080 ready @edge-1', '10.244.1.11:8080 ready @edge-1', '10.244.1.12:8080 not-ready']);
    // The ignored headless service: a RETURN for each endpoint address, ready or not.
    expect(render(store)).toContain('-d 10.244.2.5/32 -m comment --comment "ignore shop/db service" -j RETURN');
    expect(render(store)).toContain('-d 10.244.2.6/32 -m comment --comment "ignore shop/db service" -j RETURN');

    // Watch events on Endpoints: MODIFIED, ADDED, DELETED.
    await until(() => api.openWatches('endpoints') === 1, 'Endpoints watch open');
    api.set('endpoints', endpoints('web', ['10.244.1.11']));
    await until(() => eps(store, 'web').join() === '10.244.1.11:8080 ready', 'MODIFIED');
    api.set('endpoints', endpoints('db', ['10.244.2.7']));
    await until(() => render(store).includes('-d 10.244.2.7/32') && !render(store).includes('-d 10.244.2.5/32'), 'headless RETURNs follow');
    api.delete('endpoints', 'shop', 'web');
    await until(() => eps(store, 'web').length === 0, 'DELETED');
    expect(api.lists('endpoints')).toBe(1);
    expect(api.requests.some((r) => r.resource === 'endpointslices' && r.watch)).toBe(false);
  });

  it('--endpoints-api endpoints asks only for v1 Endpoints; endpointslices never falls back (a 404 is an error)', async () => {
    await plainServer();
    api.set('endpoints', endpoints('web', ['10.244.1.10']));
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'api-server', url: api.url }), store, { endpointsApi: 'endpoints' });
    await store.whenSynced();
    expect(eps(store, 'web')).toEqual(['10.244.1.10:8080 ready']);
    expect(api.requests.some((r) => r.resource === 'endpointslices')).toBe(false);
    await source!.stop();

    api.disabled.add('endpointslices');
    const store2 = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'api-server', url: api.url }), store2, { endpointsApi: 'endpointslices' });
    await until(() => errors.length >= 2, 'the 404 reported and retried');
    expect(errors[0]).toBe('endpointslices: endpointslices: list /apis/discovery.k8s.io/v1/endpointslices: HTTP 404 NotFound: the server could not find the requested resource; relisting in 20 ms');
    expect(store2.synced).toBe(false);
    expect(requestErrors.every((e) => e === 'endpointslices/list')).toBe(true);
  });

  it('recovers from a 410 ERROR event on the Endpoints watch (relist, converges with changes lost to compaction)', async () => {
    await plainServer();
    api.disabled.add('endpointslices');
    api.set('endpoints', endpoints('web', ['10.244.1.10']));
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'api-server', url: api.url }), store);
    await store.whenSynced();
    await until(() => api.openWatches('endpoints') === 1, 'Endpoints watch open');
    api.set('endpoints', endpoints('web', ['10.244.1.20']), { silent: true });
    api.set('endpoints', endpoints('api', ['10.244.1.30']), { silent: true });
    api.expireWatches('endpoints');
    await until(() => eps(store, 'web').join() === '10.244.1.20:8080 ready' && eps(store, 'api').length === 1, 'converged after 410');
    expect(api.lists('endpoints')).toBe(2);
    expect(requestErrors).toEqual([]); // a 410 is the protocol, not a failure
    await until(() => api.openWatches('endpoints') === 1, 'watch re-opened');
    api.set('endpoints', endpoints('web', ['10.244.1.21']));
    await until(() => eps(store, 'web').join() === '10.244.1.21:8080 ready', 'events flow after the relist');
  });

  it('recovers from a cut Endpoints watch connection (backoff, relist) and from a clean close (re-watch, no relist)', async () => {
    await plainServer();
    api.disabled.add('endpointslices');
    api.set('endpoints', endpoints('web', ['10.244.1.10']));
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'api-server', url: api.url }), store);
    await store.whenSynced();
    await until(() => api.openWatches('endpoints') === 1, 'Endpoints watch open');
    api.endWatches();
    await until(() => api.openWatches('endpoints') === 1, 're-watched after a clean close');
    expect(api.lists('endpoints')).toBe(1);
    const rewatch = api.requests.filter((r) => r.resource === 'endpoints' && r.watch);
    expect(rewatch.map((r) => r.query.resourceVersion)).toEqual(['101', '101']);
    api.bookmark();
    api.set('services', svc('x', '10.10.7.7')); // moves the resourceVersion on
    api.bookmark();
    api.dropConnections();
    api.set('endpoints', endpoints('web', ['10.244.1.40']), { silent: true });
    await until(() => eps(store, 'web').join() === '10.244.1.40:8080 ready', 'converged after the cut');
    expect(api.lists('endpoints')).toBe(2);
    expect(requestErrors).toContain('endpoints/watch');
    expect(errors.find((e) => e.startsWith('endpoints:'))).toMatch(/^endpoints: endpoints: watch \/api\/v1\/endpoints: .+; relisting in 20 ms$/);
  });

  it('parses watch events split across chunks anywhere (mid-line, mid-character) and keeps no stream', async () => {
    // A raw server: the list, then one watch whose events arrive a few bytes at a time.
    const events = [
      { type: 'ADDED', object: { metadata: { name: 'ü-1', namespace: 'shop', resourceVersion: '5' }, spec: { clusterIP: '10.10.3.1', ports: [{ port: 80 }] } } },
      { type: 'BOOKMARK', object: { metadata: { resourceVersion: '9' } } },
    ];
    const bytes = Buffer.from(events.map((e) => JSON.stringify(e) + '\n').join(''));
    const seen: string[] = [];
    const srv: Server = createServer((req, res) => {
      const u = new URL(req.url!, 'http://x');
      seen.push(`${u.pathname} ${u.searchParams.get('watch') ?? 'list'} ${u.searchParams.get('resourceVersion') ?? ''}`);
      if (u.searchParams.get('watch') !== 'true') return void res.end(JSON.stringify({ metadata: { resourceVersion: '3' }, items: [] }));
      if (u.searchParams.get('resourceVersion') !== '3') return; // the re-watch stays open
      let i = 0;
      const t = setInterval(() => {
        if (i >= bytes.length) {
          clearInterval(t);
          return void res.end();
        }
        res.write(bytes.subarray(i, i + 7));
        i += 7;
      }, 1);
    });
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    api = new FakeApiServer(); // for afterEach
    await api.start();
    try {
      const client = new KubeClient(makeKubeConfig({ kind: 'api-server', url: `http://127.0.0.1:${(srv.address() as AddressInfo).port}` }));
      const list = await client.list('/api/v1/services');
      const got: string[] = [];
      const w = client.watch('/api/v1/services', list.resourceVersion, 60, (type, o) => got.push(`${type} ${JSON.stringify(o.metadata)}`));
      expect(await w.done).toBe('closed');
      expect(got).toEqual(['ADDED {"name":"ü-1","namespace":"shop","resourceVersion":"5"}', 'BOOKMARK {"resourceVersion":"9"}']);
      client.close();
    } finally {
      srv.closeAllConnections();
      await new Promise((r) => srv.close(r));
    }
  });
});

describe('lean client: TLS, credentials, config files', () => {
  let dir: string;
  let ca: { cert: string; key: string };
  let server: { cert: string; key: string };
  let client: { cert: string; key: string };
  let stranger: { cert: string; key: string };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'kube-client-'));
    ca = await makeCa(join(dir, 'ca'), 'test cluster CA');
    server = await issueWithOpenssl({ dir, caCert: ca.cert, caKey: ca.key, name: 'kube-apiserver', file: 'server', ips: ['127.0.0.1'] });
    client = await issueWithOpenssl({ dir, caCert: ca.cert, caKey: ca.key, name: 'edge-agent', file: 'client' });
    const other = await makeCa(join(dir, 'other'), 'another CA');
    stranger = await issueWithOpenssl({ dir, caCert: other.cert, caKey: other.key, name: 'edge-agent', file: 'stranger' });
  }, 60_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  async function httpsServer(requireClientCert: boolean): Promise<FakeApiServer> {
    api = new FakeApiServer({ tls: { cert: readFileSync(server.cert), key: readFileSync(server.key), ...(requireClientCert ? { clientCa: readFileSync(ca.cert) } : {}) } });
    await api.start();
    api.set('services', svc('web', '10.10.1.1'));
    return api;
  }

  it('--api-server https with --api-server-ca/-cert/-key: a client certificate the server trusts is accepted', async () => {
    await httpsServer(true);
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'api-server', url: api.url, ca: ca.cert, cert: client.cert, key: client.key }), store);
    await store.whenSynced();
    expect(ips(store)).toEqual({ web: '10.10.1.1' });
    expect(errors).toEqual([]);
  });

  it('a missing or untrusted client certificate, or an unknown server CA, fails with a clear one-line error', async () => {
    await httpsServer(true);
    const failsWith = async (cfg: KubeClientConfig): Promise<string> => {
      const c = new KubeClient(cfg);
      try {
        await c.list('/api/v1/services');
      } catch (e) {
        return (e as Error).message;
      } finally {
        c.close();
      }
      throw new Error('the list succeeded');
    };
    const noCert = await failsWith(makeKubeConfig({ kind: 'api-server', url: api.url, ca: ca.cert }));
    expect(noCert).toBe('list /api/v1/services: TLS: tlsv13 alert certificate required (the server requires a client certificate)');
    const wrong = await failsWith(makeKubeConfig({ kind: 'api-server', url: api.url, ca: ca.cert, cert: stranger.cert, key: stranger.key }));
    // The server drops the handshake (or sends an alert): either way the line says what it means.
    expect(wrong).toMatch(/^list \/api\/v1\/services: .*(the server refused our client certificate|the server may have refused it)\)$/);
    const noCa = await failsWith(makeKubeConfig({ kind: 'api-server', url: api.url, cert: client.cert, key: client.key }));
    expect(noCa).toBe('list /api/v1/services: TLS: server certificate not trusted: self-signed certificate in certificate chain (check the CA: --api-server-ca, certificate-authority)');
    for (const m of [noCert, wrong, noCa]) expect(m).not.toContain('\n');
    expect(() => makeKubeConfig({ kind: 'api-server', url: api.url, ca: join(dir, 'nope.pem') })).toThrow(`--api-server "${api.url}": --api-server-ca "${join(dir, 'nope.pem')}": ENOENT`);
  });

  it('a kubeconfig with a bearer token (the server checks it); a wrong token is one line: HTTP 401 with the Status reason', async () => {
    await httpsServer(false);
    api.token = 'sekret-1';
    mkdirp(join(dir, 'kc'));
    const kc = (token: string) => `apiVersion: v1
kind: Config
current-context: edge
contexts: [{ name: edge, context: { cluster: c1, user: u1 } }]
clusters: [{ name: c1, cluster: { server: "${api.url}", certificate-authority: ../ca/ca.pem } }]
users: [{ name: u1, user: { token: ${token} } }]
`;
    writeFileSync(join(dir, 'kc', 'token.yaml'), kc('sekret-1'));
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'kubeconfig', file: join(dir, 'kc', 'token.yaml') }), store);
    await store.whenSynced();
    expect(ips(store)).toEqual({ web: '10.10.1.1' });
    expect(api.requests.every((r) => r.authorization === 'Bearer sekret-1')).toBe(true);
    await source!.stop();

    writeFileSync(join(dir, 'kc', 'bad.yaml'), kc('wrong'));
    const c = new KubeClient(makeKubeConfig({ kind: 'kubeconfig', file: join(dir, 'kc', 'bad.yaml') }));
    await expect(c.list('/api/v1/services')).rejects.toThrow(/^list \/api\/v1\/services: HTTP 401 Unauthorized: Unauthorized$/);
    c.close();
  });

  it('a kubeconfig with client certificates: files relative to the kubeconfig, and inline -data', async () => {
    await httpsServer(true);
    mkdirp(join(dir, 'kc'));
    writeFileSync(join(dir, 'kc', 'files.yaml'), `current-context: edge
contexts: [{ name: edge, context: { cluster: c1, user: u1 } }]
clusters: [{ name: c1, cluster: { server: "${api.url}", certificate-authority: ../ca/ca.pem } }]
users: [{ name: u1, user: { client-certificate: ../client.pem, client-key: ../client.key } }]
`);
    const b64 = (f: string) => readFileSync(f).toString('base64');
    writeFileSync(join(dir, 'kc', 'data.yaml'), `current-context: edge
contexts: [{ name: edge, context: { cluster: c1, user: u1 } }]
clusters: [{ name: c1, cluster: { server: "https://kube-apiserver:${new URL(api.url).port}", certificate-authority-data: ${b64(ca.cert)}, tls-server-name: kube-apiserver } }]
users: [{ name: u1, user: { client-certificate-data: ${b64(client.cert)}, client-key-data: ${b64(client.key)} } }]
`);
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'kubeconfig', file: join(dir, 'kc', 'files.yaml') }), store);
    await store.whenSynced();
    expect(ips(store)).toEqual({ web: '10.10.1.1' });
    await source!.stop();
    // tls-server-name: the server's certificate names kube-apiserver; dial 127.0.0.1 under that name.
    const cfg = makeKubeConfig({ kind: 'kubeconfig', file: join(dir, 'kc', 'data.yaml') });
    cfg.server = new URL(api.url);
    const store2 = new ClusterStore();
    startSource(cfg, store2);
    await store2.whenSynced();
    expect(ips(store2)).toEqual({ web: '10.10.1.1' });
  });

  it('kubeconfig mistakes are one-line ConfigErrors naming the key', () => {
    mkdirp(join(dir, 'kc'));
    const cases: [string, string][] = [
      ['contexts: []\n', 'current-context: not set'],
      ['current-context: x\ncontexts: []\n', 'contexts: no entry named "x"'],
      ['current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\nclusters: [{name: c, cluster: {}}]\n', 'clusters["c"].cluster.server: required'],
      ['current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://h"}}]\nusers: [{name: u, user: {client-certificate: nope.pem, client-key: nope.key}}]\n',
        `users["u"].user.client-certificate "${join(dir, 'kc', 'nope.pem')}": ENOENT`],
      ['current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://h"}}]\nusers: [{name: u, user: {client-certificate-data: QUJD}}]\n',
        'users["u"].user: client-certificate and client-key go together'],
      ['current-context: x\ncontexts: [{name: x, context: {cluster: c}}]\nclusters: [{name: c, cluster: {server: "ftp://h"}}]\n', 'clusters["c"].cluster.server "ftp://h": scheme must be http or https'],
    ];
    for (const [text, msg] of cases) {
      const f = join(dir, 'kc', 'bad-case.yaml');
      writeFileSync(f, text);
      expect(() => makeKubeConfig({ kind: 'kubeconfig', file: f })).toThrow(`--kubeconfig "${f}": ${msg}`);
    }
  });

  it('a kubeconfig user with an exec plugin: the client library makes the token (loaded for that case only)', async () => {
    await httpsServer(false);
    api.token = 'from-exec';
    mkdirp(join(dir, 'kc'));
    const cred = JSON.stringify({ apiVersion: 'client.authentication.k8s.io/v1', kind: 'ExecCredential', status: { token: 'from-exec' } });
    writeFileSync(join(dir, 'kc', 'exec.yaml'), `current-context: edge
contexts: [{ name: edge, context: { cluster: c1, user: u1 } }]
clusters: [{ name: c1, cluster: { server: "${api.url}", certificate-authority: ../ca/ca.pem } }]
users: [{ name: u1, user: { exec: { apiVersion: client.authentication.k8s.io/v1, command: /bin/sh, args: ["-c", ${JSON.stringify(`echo '${cred}'`)}], interactiveMode: Never } } }]
`);
    const store = new ClusterStore();
    startSource(makeKubeConfig({ kind: 'kubeconfig', file: join(dir, 'kc', 'exec.yaml') }), store);
    await store.whenSynced();
    expect(infos[0]).toBe('kubeconfig: loading @kubernetes/client-node for the credentials of users["u1"].user.exec (a credential plugin)');
    expect(api.requests.every((r) => r.authorization === 'Bearer from-exec')).toBe(true);
  });

  it('in-cluster config: the service account CA and token, re-read when the kubelet rotates the token', async () => {
    await httpsServer(false);
    const sa = join(dir, 'sa');
    mkdirp(sa);
    copyFileSync(ca.cert, join(sa, 'ca.crt'));
    writeFileSync(join(sa, 'token'), 'token-one\n');
    api.token = 'token-one';
    const port = new URL(api.url).port;
    const cfg = makeKubeConfig({ kind: 'in-cluster' }, { env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: port }, serviceAccountDir: sa });
    expect(cfg.server.href).toBe(`https://127.0.0.1:${port}/`);
    const store = new ClusterStore();
    startSource(cfg, store);
    await store.whenSynced();
    await until(() => api.openWatches() === 2, 'watches open');
    // The kubelet writes the new token (atomically, by rename); the server accepts only it from now on.
    writeFileSync(join(sa, '.token.new'), 'token-two\n');
    renameSync(join(sa, '.token.new'), join(sa, 'token'));
    api.token = 'token-two';
    const before = api.requests.length;
    api.dropConnections(); // the next requests must carry the new token
    api.set('services', svc('web', '10.10.1.2'), { silent: true });
    await until(() => ips(store).web === '10.10.1.2', 'relisted with the new token');
    expect(api.requests.slice(before).map((r) => r.authorization)).not.toContain('Bearer token-one');
    expect(api.requests.slice(before).length).toBeGreaterThan(0);
    expect(errors.some((e) => e.includes('401'))).toBe(false);
    expect(() => makeKubeConfig({ kind: 'in-cluster' }, { env: { KUBERNETES_SERVICE_HOST: '127.0.0.1' }, serviceAccountDir: sa })).toThrow(
      'in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set',
    );
    expect(() => makeKubeConfig({ kind: 'in-cluster' }, { env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: '1' }, serviceAccountDir: join(dir, 'none') })).toThrow(
      `in-cluster config: CA "${join(dir, 'none', 'ca.crt')}": ENOENT`,
    );
  });
});

function mkdirp(d: string): void {
  mkdirSync(d, { recursive: true });
}

describe('lean client: the client library stays unloaded', () => {
  it('lists and watches without importing @kubernetes/client-node; only an exec user imports it (an import hook refuses it here)', async () => {
    assertBuilt();
    const dist = join(dirname(CLI), '..');
    const dir = mkdtempSync(join(tmpdir(), 'kube-noload-'));
    try {
      writeFileSync(join(dir, 'kc.yaml'), 'current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "http://127.0.0.1:1"}}]\nusers: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/true}}}]\n');
      const hook = `export async function resolve(s, c, next) { if (s.includes('@kubernetes/client-node')) throw new Error('client library imported'); return next(s, c); }`;
      writeFileSync(join(dir, 'probe.mjs'), `
import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hook)}));
const { KubeSource, KubeClient, makeKubeConfig, ClusterStore } = await import(${JSON.stringify(join(dist, 'src', 'index.js'))});
const { FakeApiServer } = await import(${JSON.stringify(join(dist, 'test', 'helpers', 'fake-apiserver.js'))});
const api = new FakeApiServer();
await api.start();
api.set('services', { metadata: { name: 'web', namespace: 'shop' }, spec: { clusterIP: '10.10.1.1', ports: [{ port: 80 }] } });
const store = new ClusterStore();
const src = new KubeSource({ kubeConfig: makeKubeConfig({ kind: 'api-server', url: api.url }), store });
src.start();
await store.whenSynced();
while (api.openWatches() < 3) await new Promise((r) => setTimeout(r, 10));
api.set('services', { metadata: { name: 'api', namespace: 'shop' }, spec: { clusterIP: '10.10.1.2', ports: [{ port: 80 }] } });
while (store.snapshot().services.size < 2) await new Promise((r) => setTimeout(r, 10));
await src.stop();
await api.close();
let exec = 'not imported';
try { await new KubeClient(makeKubeConfig({ kind: 'kubeconfig', file: ${JSON.stringify(join(dir, 'kc.yaml'))} })).list('/api/v1/services'); } catch (e) { exec = e.message; }
console.log(JSON.stringify({ services: store.snapshot().services.size, exec }));
`);
      const { stdout } = await promisify(execFile)(process.execPath, [join(dir, 'probe.mjs')], { timeout: 20_000 });
      expect(JSON.parse(stdout)).toEqual({ services: 2, exec: 'client library imported' });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
