// The Kubernetes source: list + watch on v1 Services, discovery.k8s.io/v1 EndpointSlices (or v1
// Endpoints where the EndpointSlice API is missing, as on some KubeEdge MetaServers) and v1
// Nodes, feeding a ClusterStore, through the lean client of kube-client.ts.
//
// Each resource runs under a supervisor, the reflector loop:
// - list (following `continue`), replace that kind in the store at once (removing what
//   vanished), which counts as its complete list for `synced`;
// - watch from the list's resourceVersion with bookmarks (allowWatchBookmarks=true) and a
//   jittered timeoutSeconds; events upsert/delete single objects; bookmarks and events advance
//   the resourceVersion;
// - a watch the server ends cleanly is re-opened from the last resourceVersion, no relist;
// - 410 Gone (HTTP status or an ERROR event with code 410) relists at once;
// - any other error relists after a capped exponential backoff.
import type { EndpointSliceInfo, NodeInfo, ServiceInfo } from './model.js';
import { convertEndpoints, convertEndpointSlice, convertNode, convertService } from './convert.js';
import { KubeClient, KubeHttpError, loadClientConfig, type KubeClientConfig, type KubeSourceConfig, type LoadOptions } from './kube-client.js';
import type { ClusterStore } from './store.js';

export type { KubeClientConfig, KubeSourceConfig } from './kube-client.js';
export { KubeClient, KubeHttpError, loadClientConfig } from './kube-client.js';

/** The connection settings for the source: in-cluster, a kubeconfig file, or a URL (KubeEdge MetaServer). Throws ConfigError. */
export function makeKubeConfig(source: KubeSourceConfig, options: LoadOptions = {}): KubeClientConfig {
  return loadClientConfig(source, options);
}

export interface BackoffOptions {
  /** First retry delay. Default 500 ms. */
  initialMs?: number;
  /** Cap. Default 30 s. */
  maxMs?: number;
  /** A resource that ran this long without error resets the backoff. Default 30 s. */
  resetAfterMs?: number;
}

export type KubeResource = 'services' | 'endpointslices' | 'endpoints' | 'nodes';
export const ENDPOINTS_APIS = ['auto', 'endpointslices', 'endpoints'] as const;
export type EndpointsApi = (typeof ENDPOINTS_APIS)[number];

export interface KubeSourceOptions {
  kubeConfig: KubeClientConfig;
  store: ClusterStore;
  backoff?: BackoffOptions;
  /** Also list and watch v1 Nodes (their tunnel addresses). Default true. */
  watchNodes?: boolean;
  /**
   * Where endpoints come from. `auto` (default): EndpointSlices, and v1 Endpoints when the
   * EndpointSlice list answers 404 (the API is not served).
   */
  endpointsApi?: EndpointsApi;
  /** Bound on each list request. Default 60 s. */
  listTimeoutMs?: number;
  /** Watches last this long (plus up to as much again, random), then are re-opened. Default 300 s. */
  watchTimeoutSeconds?: number;
  /** Items per list page. Default 500. */
  pageSize?: number;
  /** A watch/list failure (before the restart) or an object that failed conversion (skipped; its last good state is kept). */
  onError?: (resource: KubeResource, message: string) => void;
  /** A list or watch request failed (also reported through onError). */
  onRequestError?: (resource: KubeResource, request: 'list' | 'watch') => void;
  /**
   * An object kept with a problem: a Node whose tunnel address annotation does not parse (kept
   * without an address). Once per node and distinct message, not on every heartbeat. Default: onError.
   */
  onWarning?: (resource: KubeResource, message: string) => void;
  /** Worth an info line: which endpoints API is used, why the client library is loaded. */
  onInfo?: (message: string) => void;
  onDebug?: (message: string) => void;
  /** A list or watch event (bookmarks included) arrived for `resource`: the API server answered. */
  onAnswer?: (resource: KubeResource) => void;
  /** A complete list of `resource` was applied to the store. */
  onListed?: (resource: KubeResource) => void;
}

type Obj = Record<string, unknown>;

interface ResourceSpec {
  resource: KubeResource;
  path: string;
  /** Converts and applies a full list. Throws nothing: bad objects are reported and skipped. */
  replace: (items: unknown[]) => number;
  upsert: (obj: Obj) => void;
  remove: (obj: Obj) => void;
}

interface Hooks {
  onError: (resource: KubeResource, message: string) => void;
  onRequestError: (resource: KubeResource, request: 'list' | 'watch') => void;
  onInfo: (message: string) => void;
  onDebug: (message: string) => void;
  onAnswer: (resource: KubeResource) => void;
  onListed: (resource: KubeResource) => void;
}

class Supervisor {
  private timer: NodeJS.Timeout | undefined;
  private abort: (() => void) | undefined;
  /** Bumped on every (re)start and stop: callbacks of an older run do nothing. */
  private run = 0;
  private attempt = 0;
  private startedAt = 0;
  private lastGoneAt = 0;
  private stopped = false;
  /** Count of (re)starts (each a list), for tests and metrics. */
  starts = 0;

  constructor(
    private spec: ResourceSpec,
    private readonly client: KubeClient,
    private readonly backoff: Required<BackoffOptions>,
    private readonly watchTimeoutSeconds: number,
    private readonly hooks: Hooks,
    /** auto: the Endpoints spec to follow when the EndpointSlice list answers 404. */
    private fallback?: ResourceSpec,
  ) {}

  get resource(): KubeResource {
    return this.spec.resource;
  }

  start(): void {
    if (this.stopped) return;
    this.starts++;
    this.startedAt = Date.now();
    const run = ++this.run;
    void this.loop(run);
  }

  private async loop(run: number): Promise<void> {
    const { spec, hooks } = this;
    const stale = (): boolean => this.stopped || run !== this.run;
    let rv: string;
    try {
      const list = await this.client.list(spec.path);
      if (stale()) return;
      hooks.onAnswer(spec.resource);
      const n = spec.replace(list.items);
      hooks.onListed(spec.resource);
      hooks.onDebug(`${spec.resource}: listed ${n} at resourceVersion ${list.resourceVersion || '?'}`);
      rv = list.resourceVersion;
    } catch (e) {
      if (stale()) return;
      if (this.fallback && e instanceof KubeHttpError && e.status === 404) {
        hooks.onInfo(`endpoints: the EndpointSlice API answered 404 (${spec.path}); using v1 Endpoints (${this.fallback.path}) instead`);
        this.spec = this.fallback;
        this.fallback = undefined;
        this.start();
        return;
      }
      hooks.onRequestError(spec.resource, 'list');
      this.restart(e);
      return;
    }
    for (;;) {
      // Jitter spreads the re-watches of many agents (client-go picks 5-10 minutes the same way).
      const timeout = Math.round(this.watchTimeoutSeconds * (1 + Math.random()));
      const opened = Date.now();
      let events = 0;
      const w = this.client.watch(spec.path, rv, timeout, (type, obj) => {
        if (stale()) return;
        events++;
        hooks.onAnswer(spec.resource);
        const meta = obj.metadata as Obj | undefined;
        if (typeof meta?.resourceVersion === 'string' && meta.resourceVersion !== '') rv = meta.resourceVersion;
        if (type === 'ADDED' || type === 'MODIFIED') spec.upsert(obj);
        else if (type === 'DELETED') spec.remove(obj);
      });
      this.abort = w.abort;
      let end;
      try {
        end = await w.done;
      } catch (e) {
        if (stale()) return;
        hooks.onRequestError(spec.resource, 'watch');
        this.restart(e);
        return;
      }
      if (stale()) return;
      if (end === 'gone') {
        // A second 410 within a second (a server that cannot serve our fresh list's version)
        // goes through the backoff instead of a relist loop.
        const again = Date.now() - this.lastGoneAt < 1000;
        this.lastGoneAt = Date.now();
        if (again) {
          hooks.onRequestError(spec.resource, 'watch');
          this.restart(new Error(`watch ${spec.path}: 410 Gone again right after a relist`));
        } else {
          hooks.onDebug(`${spec.resource}: watch from resourceVersion ${rv} is gone (410); relisting`);
          this.start();
        }
        return;
      }
      hooks.onDebug(`${spec.resource}: watch closed by the server after ${events} events; re-watching from resourceVersion ${rv}`);
      // A server that ends every watch at once would make this loop spin: pace it.
      if (Date.now() - opened < 1000 && events === 0) {
        await new Promise<void>((resolve) => {
          this.timer = setTimeout(resolve, this.backoff.initialMs);
        });
        if (stale()) return;
      }
    }
  }

  private restart(err: unknown): void {
    this.abort = undefined;
    const run = ++this.run;
    if (Date.now() - this.startedAt >= this.backoff.resetAfterMs) this.attempt = 0;
    const delay = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** this.attempt);
    this.attempt++;
    this.hooks.onError(this.spec.resource, `${this.spec.resource}: ${err instanceof Error ? err.message : String(err)}; relisting in ${delay} ms`);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (run === this.run) this.start();
    }, delay);
  }

  stop(): void {
    this.stopped = true;
    this.run++;
    if (this.timer) clearTimeout(this.timer);
    this.abort?.();
    this.abort = undefined;
  }
}

const nameOf = (o: Obj): { namespace: string; name: string } => {
  const meta = (o.metadata ?? {}) as Obj;
  return { namespace: (typeof meta.namespace === 'string' && meta.namespace) || 'default', name: typeof meta.name === 'string' ? meta.name : '' };
};

export class KubeSource {
  private readonly client: KubeClient;
  private readonly services: Supervisor;
  private readonly endpoints: Supervisor;
  private readonly nodes: Supervisor | undefined;
  private readonly onInfo: (message: string) => void;
  private endpointsLogged = false;

  constructor(options: KubeSourceOptions) {
    const { store } = options;
    const onError = options.onError ?? (() => {});
    const hooks: Hooks = {
      onError,
      onRequestError: options.onRequestError ?? (() => {}),
      onInfo: options.onInfo ?? (() => {}),
      onDebug: options.onDebug ?? (() => {}),
      onAnswer: options.onAnswer ?? (() => {}),
      onListed: (resource) => {
        // One info line says where endpoints come from, once they do.
        if ((resource === 'endpointslices' || resource === 'endpoints') && !this.endpointsLogged) {
          this.endpointsLogged = true;
          hooks.onInfo(`endpoints: from ${resource === 'endpoints' ? 'v1 Endpoints (/api/v1/endpoints)' : 'discovery.k8s.io/v1 EndpointSlices'}`);
        }
        options.onListed?.(resource);
      },
    };
    this.onInfo = hooks.onInfo;
    this.client = new KubeClient(options.kubeConfig, { listTimeoutMs: options.listTimeoutMs, pageSize: options.pageSize });
    const backoff: Required<BackoffOptions> = { initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000, ...options.backoff };
    const watchTimeout = options.watchTimeoutSeconds ?? 300;
    /** Converts, reporting and skipping an object that fails (its last good state stays). */
    const convert = <I>(resource: KubeResource, fn: (o: never) => I) => (o: unknown): I | undefined => {
      try {
        return fn(o as never);
      } catch (e) {
        onError(resource, `${resource}: skipping object: ${(e as Error).message}`);
        return undefined;
      }
    };
    const all = <I>(items: unknown[], c: (o: unknown) => I | undefined): I[] => items.map(c).filter((x): x is I => x !== undefined);
    const supervisor = (spec: ResourceSpec, fallback?: ResourceSpec) => new Supervisor(spec, this.client, backoff, watchTimeout, hooks, fallback);

    const svc = convert<ServiceInfo>('services', convertService);
    this.services = supervisor({
      resource: 'services',
      path: '/api/v1/services',
      replace: (items) => {
        const l = all(items, svc);
        store.replaceServices(l);
        return l.length;
      },
      upsert: (o) => {
        const c = svc(o);
        if (c) store.upsertService(c);
      },
      remove: (o) => store.deleteService(nameOf(o).namespace, nameOf(o).name),
    });

    const slice = convert<EndpointSliceInfo>('endpointslices', convertEndpointSlice);
    const slices: ResourceSpec = {
      resource: 'endpointslices',
      path: '/apis/discovery.k8s.io/v1/endpointslices',
      replace: (items) => {
        const l = all(items, slice);
        store.replaceEndpointSlices(l);
        return l.length;
      },
      upsert: (o) => {
        const c = slice(o);
        if (c) store.upsertEndpointSlice(c);
      },
      remove: (o) => store.deleteEndpointSlice(nameOf(o).namespace, nameOf(o).name),
    };
    // v1 Endpoints go through the same conversion as Endpoints manifests of --services-dir.
    const eps = convert<EndpointSliceInfo[]>('endpoints', convertEndpoints);
    const endpoints: ResourceSpec = {
      resource: 'endpoints',
      path: '/api/v1/endpoints',
      replace: (items) => {
        const l = all(items, eps);
        store.replaceEndpoints(l.flat());
        return l.length;
      },
      upsert: (o) => {
        const c = eps(o);
        if (c) store.upsertEndpoints(nameOf(o).namespace, nameOf(o).name, c);
      },
      remove: (o) => store.deleteEndpoints(nameOf(o).namespace, nameOf(o).name),
    };
    const api = options.endpointsApi ?? 'auto';
    this.endpoints = api === 'endpoints' ? supervisor(endpoints) : supervisor(slices, api === 'auto' ? endpoints : undefined);

    if (options.watchNodes === false) return;
    const onWarning = options.onWarning ?? onError;
    // Node objects are rewritten on every status update; the warning about one bad annotation
    // is repeated only when it changes.
    const warned = new Map<string, string>();
    const node = convert<NodeInfo>('nodes', (o: never): NodeInfo => {
      let warning: string | undefined;
      const info = convertNode(o, (m) => (warning = m));
      if (warning === undefined) warned.delete(info.name);
      else if (warned.get(info.name) !== warning) {
        warned.set(info.name, warning);
        onWarning('nodes', warning);
      }
      return info;
    });
    this.nodes = supervisor({
      resource: 'nodes',
      path: '/api/v1/nodes',
      replace: (items) => {
        const l = all(items, node);
        store.replaceNodes(l);
        return l.length;
      },
      upsert: (o) => {
        const c = node(o);
        if (c) store.upsertNode(c);
      },
      remove: (o) => {
        warned.delete(nameOf(o).name);
        store.deleteNode(nameOf(o).name);
      },
    });
  }

  /** Starts listing and watching; returns at once. Use store.whenSynced() to wait for the lists. */
  start(): void {
    const why = this.client.libraryReason;
    if (why) this.onInfo(`kubeconfig: loading @kubernetes/client-node for the credentials of ${why}`);
    this.services.start();
    this.endpoints.start();
    this.nodes?.start();
  }

  /** The resource endpoints come from: endpointslices, or endpoints (configured, or after a 404 in auto). */
  get endpointsResource(): KubeResource {
    return this.endpoints.resource;
  }

  /** List/watch (re)starts so far, per resource (nodes: 0 when not watched; endpoint slices and Endpoints share one count). */
  get starts(): { services: number; endpointslices: number; nodes: number } {
    return { services: this.services.starts, endpointslices: this.endpoints.starts, nodes: this.nodes?.starts ?? 0 };
  }

  async stop(): Promise<void> {
    this.services.stop();
    this.endpoints.stop();
    this.nodes?.stop();
    this.client.close();
  }
}
