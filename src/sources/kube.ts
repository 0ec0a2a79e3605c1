// The Kubernetes source: informers (list + watch) on v1 Services, discovery.k8s.io/v1
// EndpointSlices and v1 Nodes, feeding a ClusterStore.
//
// The client library's informer (ListWatch, what makeInformer returns) relists by itself only
// on a 410 Gone; after any other watch or list error it emits 'error' and stops. So each
// resource runs under a supervisor that, on 'error', discards the informer and starts a fresh
// one (a full relist) after a capped exponential backoff. The informer's list function is
// wrapped: a successful list replaces that kind in the store at once (removing what vanished)
// and counts as the complete list for `synced`. Watch events upsert/delete single objects.
// The watch asks for bookmarks (allowWatchBookmarks=true), which keep its resourceVersion fresh
// so that a re-watch after a clean close rarely needs a relist.
import {
  CoreV1Api,
  DiscoveryV1Api,
  KubeConfig,
  ListWatch,
  Watch,
  type KubernetesListObject,
  type KubernetesObject,
  type V1EndpointSlice,
  type V1Node,
  type V1Service,
} from '@kubernetes/client-node';
import { ConfigError } from '../errors.js';
import type { EndpointSliceInfo, NodeInfo, ServiceInfo } from '../model.js';
import { convertEndpointSlice, convertNode, convertService } from './convert.js';
import type { ClusterStore } from './store.js';

export type KubeSourceConfig = { kind: 'in-cluster' } | { kind: 'kubeconfig'; file: string } | { kind: 'api-server'; url: string };

/** A KubeConfig for the source: in-cluster, a kubeconfig file, or a plain URL without auth (KubeEdge MetaServer). */
export function makeKubeConfig(source: KubeSourceConfig): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (source.kind === 'in-cluster') kc.loadFromCluster();
    else if (source.kind === 'kubeconfig') kc.loadFromFile(source.file);
    else {
      const url = new URL(source.url);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme must be http or https');
      // The client refuses plain http unless skipTLSVerify is set (there is no TLS to verify);
      // an https URL is verified against the system CAs.
      kc.loadFromClusterAndUser({ name: 'api-server', server: source.url.replace(/\/+$/, ''), skipTLSVerify: url.protocol === 'http:' }, { name: 'anonymous' });
    }
  } catch (e) {
    const flag = source.kind === 'kubeconfig' ? `--kubeconfig "${source.file}"` : source.kind === 'api-server' ? `--api-server "${source.url}"` : 'in-cluster config';
    throw new ConfigError(`${flag}: ${(e as Error).message.split('\n')[0]}`, source.kind, { cause: e });
  }
  if (!kc.getCurrentCluster()) throw new ConfigError('kubeconfig has no current cluster', source.kind);
  return kc;
}

export interface BackoffOptions {
  /** First retry delay. Default 500 ms. */
  initialMs?: number;
  /** Cap. Default 30 s. */
  maxMs?: number;
  /** An informer that ran this long without error resets the backoff. Default 30 s. */
  resetAfterMs?: number;
}

export type KubeResource = 'services' | 'endpointslices' | 'nodes';

export interface KubeSourceOptions {
  kubeConfig: KubeConfig;
  store: ClusterStore;
  backoff?: BackoffOptions;
  /** Also list and watch v1 Nodes (their tunnel addresses). Default true. */
  watchNodes?: boolean;
  /** A watch/list failure (before the restart) or an object that failed conversion (skipped; its last good state is kept). */
  onError?: (resource: KubeResource, message: string) => void;
  /**
   * An object kept with a problem: a Node whose tunnel address annotation does not parse (kept
   * without an address). Once per node and distinct message, not on every heartbeat. Default: onError.
   */
  onWarning?: (resource: KubeResource, message: string) => void;
  onDebug?: (message: string) => void;
  /** A list or watch event (bookmarks included) arrived for `resource`: the API server answered. */
  onAnswer?: (resource: KubeResource) => void;
}

interface ResourceSpec<T extends KubernetesObject, I> {
  resource: KubeResource;
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  convert: (obj: T) => I;
  replace: (items: I[]) => void;
  upsert: (item: I) => void;
  remove: (obj: T) => void;
}

/** Watch that asks the server for bookmarks, and tells `onEvent` of every event (bookmarks too). */
class BookmarkWatch extends Watch {
  constructor(
    kc: KubeConfig,
    private readonly onEvent: () => void,
  ) {
    super(kc);
  }
  override watch(...args: Parameters<Watch['watch']>): ReturnType<Watch['watch']> {
    const [path, query, cb, done] = args;
    const seen: typeof cb = (...a) => {
      this.onEvent();
      return cb(...a);
    };
    return super.watch(path, { ...query, allowWatchBookmarks: true }, seen, done);
  }
}

class Supervisor<T extends KubernetesObject, I> {
  private informer: ListWatch<T> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private attempt = 0;
  private startedAt = 0;
  private stopped = false;
  /** Count of (re)starts, for tests and metrics. */
  starts = 0;

  constructor(
    private readonly spec: ResourceSpec<T, I>,
    private readonly kc: KubeConfig,
    private readonly backoff: Required<BackoffOptions>,
    private readonly onError: (message: string) => void,
    private readonly onDebug: (message: string) => void,
    private readonly onAnswer: () => void,
  ) {}

  start(): void {
    if (this.stopped) return;
    this.starts++;
    this.startedAt = Date.now();
    const spec = this.spec;
    const listFn = async (): Promise<KubernetesListObject<T>> => {
      const list = await spec.list();
      if (this.informer !== informer || this.stopped) return list;
      this.onAnswer();
      const items: I[] = [];
      for (const obj of list.items ?? []) {
        const c = this.tryConvert(obj);
        if (c !== undefined) items.push(c);
      }
      spec.replace(items);
      this.onDebug(`${spec.resource}: listed ${items.length} at resourceVersion ${list.metadata?.resourceVersion ?? '?'}`);
      return list;
    };
    const informer = new ListWatch<T>(spec.path, new BookmarkWatch(this.kc, () => this.informer === informer && this.onAnswer()), listFn, false);
    this.informer = informer;
    const upsert = (obj: T): void => {
      if (this.informer !== informer) return;
      const c = this.tryConvert(obj);
      if (c !== undefined) spec.upsert(c);
    };
    informer.on('add', upsert);
    informer.on('update', upsert);
    informer.on('delete', (obj: T) => {
      if (this.informer === informer) spec.remove(obj);
    });
    informer.on('error', (err?: unknown) => {
      if (this.informer !== informer || this.stopped) return;
      this.restart(err);
    });
    informer.start().catch((err: unknown) => {
      if (this.informer === informer && !this.stopped) this.restart(err);
    });
  }

  private tryConvert(obj: T): I | undefined {
    try {
      return this.spec.convert(obj);
    } catch (e) {
      this.onError(`${this.spec.resource}: skipping object: ${(e as Error).message}`);
      return undefined;
    }
  }

  private restart(err: unknown): void {
    const old = this.informer;
    this.informer = undefined;
    void old?.stop();
    if (Date.now() - this.startedAt >= this.backoff.resetAfterMs) this.attempt = 0;
    const delay = Math.min(this.backoff.maxMs, this.backoff.initialMs * 2 ** this.attempt);
    this.attempt++;
    this.onError(`${this.spec.resource}: ${describe(err)}; relisting in ${delay} ms`);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.start();
    }, delay);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const inf = this.informer;
    this.informer = undefined;
    await inf?.stop();
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const status = (err as { statusCode?: unknown; code?: unknown }).statusCode ?? (err as { code?: unknown }).code;
    return status !== undefined ? `${err.message} (${String(status)})` : err.message;
  }
  return `watch error ${JSON.stringify(err)}`;
}

export class KubeSource {
  private readonly services: Supervisor<V1Service, ServiceInfo>;
  private readonly slices: Supervisor<V1EndpointSlice, EndpointSliceInfo>;
  private readonly nodes: Supervisor<V1Node, NodeInfo> | undefined;

  constructor(options: KubeSourceOptions) {
    const { kubeConfig: kc, store } = options;
    const backoff: Required<BackoffOptions> = { initialMs: 500, maxMs: 30_000, resetAfterMs: 30_000, ...options.backoff };
    const core = kc.makeApiClient(CoreV1Api);
    const discovery = kc.makeApiClient(DiscoveryV1Api);
    const onError = options.onError ?? (() => {});
    const onDebug = options.onDebug ?? (() => {});
    const onAnswer = options.onAnswer ?? (() => {});
    const nameOf = (o: KubernetesObject): { namespace: string; name: string } => ({ namespace: o.metadata?.namespace || 'default', name: o.metadata?.name ?? '' });
    this.services = new Supervisor<V1Service, ServiceInfo>(
      {
        resource: 'services',
        path: '/api/v1/services',
        list: () => core.listServiceForAllNamespaces(),
        convert: convertService,
        replace: (items) => store.replaceServices(items),
        upsert: (item) => store.upsertService(item),
        remove: (o) => {
          const { namespace, name } = nameOf(o);
          store.deleteService(namespace, name);
        },
      },
      kc,
      backoff,
      (m) => onError('services', m),
      onDebug,
      () => onAnswer('services'),
    );
    this.slices = new Supervisor<V1EndpointSlice, EndpointSliceInfo>(
      {
        resource: 'endpointslices',
        path: '/apis/discovery.k8s.io/v1/endpointslices',
        list: () => discovery.listEndpointSliceForAllNamespaces(),
        convert: convertEndpointSlice,
        replace: (items) => store.replaceEndpointSlices(items),
        upsert: (item) => store.upsertEndpointSlice(item),
        remove: (o) => {
          const { namespace, name } = nameOf(o);
          store.deleteEndpointSlice(namespace, name);
        },
      },
      kc,
      backoff,
      (m) => onError('endpointslices', m),
      onDebug,
      () => onAnswer('endpointslices'),
    );
    if (options.watchNodes === false) return;
    const onWarning = options.onWarning ?? onError;
    // Node objects are rewritten on every status update; the warning about one bad annotation
    // is repeated only when it changes.
    const warned = new Map<string, string>();
    const convert = (o: V1Node): NodeInfo => {
      let warning: string | undefined;
      const info = convertNode(o, (m) => (warning = m));
      if (warning === undefined) warned.delete(info.name);
      else if (warned.get(info.name) !== warning) {
        warned.set(info.name, warning);
        onWarning('nodes', warning);
      }
      return info;
    };
    this.nodes = new Supervisor<V1Node, NodeInfo>(
      {
        resource: 'nodes',
        path: '/api/v1/nodes',
        list: () => core.listNode(),
        convert,
        replace: (items) => store.replaceNodes(items),
        upsert: (item) => store.upsertNode(item),
        remove: (o) => {
          warned.delete(o.metadata?.name ?? '');
          store.deleteNode(o.metadata?.name ?? '');
        },
      },
      kc,
      backoff,
      (m) => onError('nodes', m),
      onDebug,
      () => onAnswer('nodes'),
    );
  }

  /** Starts the informers; returns at once. Use store.whenSynced() to wait for the lists. */
  start(): void {
    this.services.start();
    this.slices.start();
    this.nodes?.start();
  }

  /** Informer (re)starts so far, per resource (nodes: 0 when not watched). */
  get starts(): { services: number; endpointslices: number; nodes: number } {
    return { services: this.services.starts, endpointslices: this.slices.starts, nodes: this.nodes?.starts ?? 0 };
  }

  async stop(): Promise<void> {
    await Promise.all([this.services.stop(), this.slices.stop(), this.nodes?.stop()]);
  }
}

