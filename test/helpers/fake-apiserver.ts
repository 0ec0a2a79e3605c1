// A small in-process API server for Services, EndpointSlices and Nodes that behaves as kube-apiserver
// does for list and watch: one resourceVersion counter, list with metadata.resourceVersion,
// watch from a resourceVersion streaming JSON lines (ADDED/MODIFIED/DELETED/BOOKMARK), 410 Gone
// for a compacted resourceVersion (HTTP 410, or an ERROR event on an open watch), and knobs to
// drop connections, end watches cleanly, hold or fail lists. Lists page with `limit` and
// `continue` (the continuation serves the first page's snapshot, as etcd does), a resource can be
// switched off (404 NotFound, an API group the server does not serve), and the server can speak
// HTTPS (optionally requiring a client certificate) and require a bearer token (401 otherwise).
// Listens on 127.0.0.1 unless told otherwise.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';

export type Resource = 'services' | 'endpointslices' | 'endpoints' | 'nodes';
export const RESOURCE_PATHS: Record<Resource, string> = {
  services: '/api/v1/services',
  endpointslices: '/apis/discovery.k8s.io/v1/endpointslices',
  endpoints: '/api/v1/endpoints',
  nodes: '/api/v1/nodes',
};
const LIST_KIND: Record<Resource, { apiVersion: string; kind: string }> = {
  services: { apiVersion: 'v1', kind: 'ServiceList' },
  endpointslices: { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSliceList' },
  endpoints: { apiVersion: 'v1', kind: 'EndpointsList' },
  nodes: { apiVersion: 'v1', kind: 'NodeList' },
};
const OBJ_KIND: Record<Resource, { apiVersion: string; kind: string }> = {
  services: { apiVersion: 'v1', kind: 'Service' },
  endpointslices: { apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice' },
  endpoints: { apiVersion: 'v1', kind: 'Endpoints' },
  nodes: { apiVersion: 'v1', kind: 'Node' },
};
const RESOURCES = Object.keys(RESOURCE_PATHS) as Resource[];
const status = (code: number, reason: string, message: string) => JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });

export interface FakeApiServerOptions {
  /** Serve HTTPS with this PEM certificate and key; with `clientCa`, require a client certificate it signed. */
  tls?: { cert: string | Buffer; key: string | Buffer; clientCa?: string | Buffer };
}

type Obj = { metadata: { name: string; namespace?: string; resourceVersion?: string; [k: string]: unknown }; [k: string]: unknown };
interface Event {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}
interface Watcher {
  resource: Resource;
  res: ServerResponse;
  req: IncomingMessage;
}

export interface RequestLog {
  resource: Resource;
  watch: boolean;
  query: Record<string, string>;
  /** The Authorization header, if any. */
  authorization?: string;
}

export class FakeApiServer {
  private server: Server;
  private rv = 100;
  private compactedRv = 0;
  private readonly objects = Object.fromEntries(RESOURCES.map((r) => [r, new Map<string, Obj>()])) as Record<Resource, Map<string, Obj>>;
  private readonly events = Object.fromEntries(RESOURCES.map((r) => [r, [] as Event[]])) as Record<Resource, Event[]>;
  /** Paged lists in progress: continue token -> the first page's snapshot. */
  private readonly pages = new Map<string, { rv: number; items: Obj[]; offset: number }>();
  private nextPage = 0;
  private readonly watchers = new Set<Watcher>();
  readonly requests: RequestLog[] = [];
  /** Lists of these resources wait until released. */
  private readonly held = new Map<Resource, (() => void)[]>();
  private readonly holding = new Set<Resource>();
  /** Next N lists of a resource answer 500. */
  readonly failLists: Record<Resource, number> = { services: 0, endpointslices: 0, endpoints: 0, nodes: 0 };
  /** Resources this server does not serve: 404 NotFound, as for an API group it lacks. */
  readonly disabled = new Set<Resource>();
  /** When set, every request must carry `Authorization: Bearer <token>` (401 otherwise). */
  token: string | undefined;
  url = '';
  private readonly https: boolean;

  constructor(options: FakeApiServerOptions = {}) {
    const handler = (req: IncomingMessage, res: ServerResponse): void => void this.handle(req, res);
    const tls = options.tls;
    this.https = tls !== undefined;
    this.server = tls
      ? createHttpsServer({ cert: tls.cert, key: tls.key, ...(tls.clientCa ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}) }, handler)
      : createServer(handler);
  }

  async start(port = 0, host = '127.0.0.1'): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(port, host, resolve));
    this.url = `${this.https ? 'https' : 'http'}://${host}:${(this.server.address() as AddressInfo).port}`;
    return this.url;
  }

  async close(): Promise<void> {
    for (const w of this.watchers) w.res.destroy();
    this.watchers.clear();
    for (const r of this.held.values()) r.forEach((f) => f());
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private key(o: Obj): string {
    return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
  }

  /** Creates or updates an object. `silent`: no watch event (as if it was lost to compaction). */
  set(resource: Resource, obj: Obj, opts: { silent?: boolean } = {}): void {
    const copy = JSON.parse(JSON.stringify({ ...OBJ_KIND[resource], ...obj })) as Obj;
    copy.metadata.resourceVersion = String(++this.rv);
    const type = this.objects[resource].has(this.key(copy)) ? 'MODIFIED' : 'ADDED';
    this.objects[resource].set(this.key(copy), copy);
    if (!opts.silent) this.emit(resource, { rv: this.rv, type, object: copy });
  }

  /** `namespace` "" for a cluster-scoped object (a Node). */
  delete(resource: Resource, namespace: string, name: string, opts: { silent?: boolean } = {}): void {
    const k = `${namespace}/${name}`;
    const old = this.objects[resource].get(k);
    if (!old) throw new Error(`no ${resource} ${k}`);
    this.objects[resource].delete(k);
    const object = { ...old, metadata: { ...old.metadata, resourceVersion: String(++this.rv) } };
    if (!opts.silent) this.emit(resource, { rv: this.rv, type: 'DELETED', object });
  }

  /** Forgets history: a watch from an older resourceVersion now gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    for (const r of Object.keys(this.events) as Resource[]) this.events[r] = [];
  }

  /** Open watches receive an ERROR event with a 410 Status, then the server ends them (as kube-apiserver does). */
  expireWatches(resource?: Resource): void {
    this.compact();
    for (const w of [...this.watchers]) {
      if (resource && w.resource !== resource) continue;
      w.res.write(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: 'too old resource version', reason: 'Expired', code: 410 } }) + '\n');
      w.res.end();
      this.watchers.delete(w);
    }
  }

  /** Ends every open watch cleanly (a server-side timeout). */
  endWatches(): void {
    for (const w of [...this.watchers]) {
      w.res.end();
      this.watchers.delete(w);
    }
  }

  /** Kills every open watch connection mid-stream. */
  dropConnections(): void {
    for (const w of [...this.watchers]) {
      w.req.socket.destroy();
      this.watchers.delete(w);
    }
  }

  bookmark(): void {
    for (const w of this.watchers) {
      w.res.write(JSON.stringify({ type: 'BOOKMARK', object: { ...OBJ_KIND[w.resource], metadata: { resourceVersion: String(this.rv) } } }) + '\n');
    }
  }

  hold(resource: Resource): void {
    this.holding.add(resource);
  }

  release(resource: Resource): void {
    this.holding.delete(resource);
    for (const f of this.held.get(resource) ?? []) f();
    this.held.delete(resource);
  }

  openWatches(resource?: Resource): number {
    return [...this.watchers].filter((w) => !resource || w.resource === resource).length;
  }

  lists(resource: Resource): number {
    return this.requests.filter((r) => r.resource === resource && !r.watch).length;
  }

  private emit(resource: Resource, ev: Event): void {
    this.events[resource].push(ev);
    for (const w of this.watchers) if (w.resource === resource) w.res.write(JSON.stringify({ type: ev.type, object: ev.object }) + '\n');
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const resource = RESOURCES.find((r) => RESOURCE_PATHS[r] === url.pathname);
    if (this.token !== undefined && req.headers.authorization !== `Bearer ${this.token}`) {
      res.writeHead(401, { 'content-type': 'application/json' }).end(status(401, 'Unauthorized', 'Unauthorized'));
      return;
    }
    if (!resource || req.method !== 'GET' || this.disabled.has(resource)) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(status(404, 'NotFound', 'the server could not find the requested resource'));
      return;
    }
    const query = Object.fromEntries(url.searchParams);
    const watch = query.watch === 'true';
    this.requests.push({ resource, watch, query, ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}) });
    if (!watch) {
      if (this.holding.has(resource)) {
        await new Promise<void>((resolve) => this.held.set(resource, [...(this.held.get(resource) ?? []), resolve]));
      }
      if (this.failLists[resource] > 0) {
        this.failLists[resource]--;
        res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ kind: 'Status', code: 500, message: 'etcd unavailable' }));
        return;
      }
      let page = query.continue ? this.pages.get(query.continue) : { rv: this.rv, items: [...this.objects[resource].values()].sort((a, b) => (this.key(a) < this.key(b) ? -1 : 1)), offset: 0 };
      if (!page) {
        res.writeHead(410, { 'content-type': 'application/json' }).end(status(410, 'Expired', 'the provided continue parameter is too old'));
        return;
      }
      if (query.continue) this.pages.delete(query.continue);
      const limit = Number(query.limit ?? '0');
      const items = limit > 0 ? page.items.slice(page.offset, page.offset + limit) : page.items.slice(page.offset);
      const metadata: Record<string, string> = { resourceVersion: String(page.rv) };
      if (page.offset + items.length < page.items.length) {
        metadata.continue = `page-${++this.nextPage}`;
        page = { ...page, offset: page.offset + items.length };
        this.pages.set(metadata.continue, page);
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ...LIST_KIND[resource], metadata, items }));
      return;
    }
    const from = Number(query.resourceVersion ?? '0');
    if (!Number.isFinite(from) || from < this.compactedRv) {
      res.writeHead(410, { 'content-type': 'application/json' }).end(status(410, 'Expired', 'too old resource version'));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    for (const ev of this.events[resource]) if (ev.rv > from) res.write(JSON.stringify({ type: ev.type, object: ev.object }) + '\n');
    const w: Watcher = { resource, res, req };
    this.watchers.add(w);
    res.on('close', () => this.watchers.delete(w));
  }
}
