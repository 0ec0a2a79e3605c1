// The cluster store: the services, endpoint slices and nodes a source has seen, as immutable
// snapshots.
//
// - Values are replaced, never mutated, so a snapshot stays consistent after later changes.
// - A change notifies listeners synchronously and cheaply (no snapshot is built until asked);
//   the reconciler rate-limits. A write that changes nothing notifies nobody.
// - `synced` becomes true after the first complete list of BOTH services and endpoint slices
//   (replaceServices / replaceEndpointSlices or replaceAll with both; replaceEndpoints where the
//   API serves v1 Endpoints instead), and stays true. A store
//   made with `requireNodes` (the tunnel needs nodes to route) also waits for a list of nodes.
// - v1 Endpoints are used for a service only where no EndpointSlice exists for it.
// - Once synced, every change is timed (the generation it made and when it was seen) until the
//   sync that includes it takes it (edgemesh_network_programming_duration_seconds). The initial
//   list is not a change to time: its programming is the agent's start.
import { performance } from 'node:perf_hooks';
import type { ClusterState, EndpointSliceInfo, NodeInfo, ServiceInfo, ServiceKey } from './model.js';
import { serviceKey } from './model.js';

export type ChangeListener = () => void;

export interface ReplaceAllInput {
  services?: readonly ServiceInfo[];
  /** source === 'EndpointSlice' */
  endpointSlices?: readonly EndpointSliceInfo[];
  /** source === 'Endpoints' (from convertEndpoints) */
  endpoints?: readonly EndpointSliceInfo[];
  nodes?: readonly NodeInfo[];
}

export interface ClusterStoreOptions {
  /** `synced` also waits for the first complete list of nodes. Default false. */
  requireNodes?: boolean;
}

/** Changes waiting for their sync, at most; later ones go untimed until the backlog is taken. */
export const MAX_TIMED_CHANGES = 10_000;

/** A change seen: the generation it made, and performance.now() when it was seen. */
export interface TimedChange {
  generation: number;
  seenAt: number;
}

const sameValue = (a: unknown, b: unknown): boolean => a === b || JSON.stringify(a) === JSON.stringify(b);

export class ClusterStore {
  private readonly services = new Map<ServiceKey, ServiceInfo>();
  /** EndpointSlices by "namespace/sliceName". */
  private readonly slices = new Map<string, EndpointSliceInfo>();
  /** v1 Endpoints (converted) by "namespace/name". */
  private readonly endpoints = new Map<ServiceKey, readonly EndpointSliceInfo[]>();
  private readonly nodes = new Map<string, NodeInfo>();
  private readonly listeners = new Set<ChangeListener>();
  private cached: ClusterState | undefined;
  private listed = { services: false, endpointSlices: false, nodes: false };
  private syncedResolve!: () => void;
  private readonly syncedPromise = new Promise<void>((resolve) => (this.syncedResolve = resolve));
  private gen = 0;
  private readonly requireNodes: boolean;
  private timed: TimedChange[] = [];

  constructor(options: ClusterStoreOptions = {}) {
    this.requireNodes = options.requireNodes ?? false;
  }

  /** True after the first complete list of both services and endpoint slices (and nodes, with requireNodes). */
  get synced(): boolean {
    return this.listed.services && this.listed.endpointSlices && (this.listed.nodes || !this.requireNodes);
  }

  /** True after the first complete list of nodes. */
  get nodesListed(): boolean {
    return this.listed.nodes;
  }

  /** Resolves once `synced` is true. */
  whenSynced(): Promise<void> {
    return this.syncedPromise;
  }

  /** Incremented on every change; equal generations mean equal snapshots. */
  get generation(): number {
    return this.gen;
  }

  /**
   * Removes and returns the changes a snapshot of `generation` includes (the ones not yet taken),
   * oldest first: the reconciler's successful sync of that generation has programmed them.
   */
  takeChangesUpTo(generation: number): TimedChange[] {
    let n = 0;
    while (n < this.timed.length && (this.timed[n] as TimedChange).generation <= generation) n++;
    return n === 0 ? [] : this.timed.splice(0, n);
  }

  /** Registers a listener; returns its removal. */
  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  upsertService(svc: ServiceInfo): void {
    const key = serviceKey(svc.namespace, svc.name);
    if (sameValue(this.services.get(key), svc)) return;
    this.services.set(key, svc);
    this.changed();
  }

  deleteService(namespace: string, name: string): void {
    if (this.services.delete(serviceKey(namespace, name))) this.changed();
  }

  upsertEndpointSlice(slice: EndpointSliceInfo): void {
    if (slice.source !== 'EndpointSlice') throw new TypeError('upsertEndpointSlice: source must be EndpointSlice');
    const key = `${slice.namespace}/${slice.name}`;
    if (sameValue(this.slices.get(key), slice)) return;
    this.slices.set(key, slice);
    this.changed();
  }

  deleteEndpointSlice(namespace: string, name: string): void {
    if (this.slices.delete(`${namespace}/${name}`)) this.changed();
  }

  /** Sets the converted v1 Endpoints of one service (convertEndpoints output; may be empty). */
  upsertEndpoints(namespace: string, name: string, slices: readonly EndpointSliceInfo[]): void {
    if (slices.some((s) => s.source !== 'Endpoints')) throw new TypeError('upsertEndpoints: source must be Endpoints');
    const key = serviceKey(namespace, name);
    if (sameValue(this.endpoints.get(key), slices)) return;
    this.endpoints.set(key, slices);
    this.changed();
  }

  deleteEndpoints(namespace: string, name: string): void {
    if (this.endpoints.delete(serviceKey(namespace, name))) this.changed();
  }

  upsertNode(node: NodeInfo): void {
    if (sameValue(this.nodes.get(node.name), node)) return;
    this.nodes.set(node.name, node);
    this.changed();
  }

  deleteNode(name: string): void {
    if (this.nodes.delete(name)) this.changed();
  }

  replaceNodes(nodes: readonly NodeInfo[]): void {
    this.replaceAll({ nodes });
  }

  replaceServices(services: readonly ServiceInfo[]): void {
    this.replaceAll({ services });
  }

  replaceEndpointSlices(slices: readonly EndpointSliceInfo[]): void {
    this.replaceAll({ endpointSlices: slices });
  }

  /** A complete list of v1 Endpoints (convertEndpoints output): stands for the endpoint slice list in `synced`. */
  replaceEndpoints(endpoints: readonly EndpointSliceInfo[]): void {
    this.replaceAll({ endpoints }, true);
  }

  /**
   * A relist: each kind given is replaced entirely (one change notification at most). Giving
   * `services` / `endpointSlices` / `nodes` counts as the complete list of that kind for `synced`.
   */
  replaceAll(input: ReplaceAllInput, endpointsListed = false): void {
    let changed = false;
    if (input.services) {
      const next = new Map<ServiceKey, ServiceInfo>();
      for (const s of input.services) next.set(serviceKey(s.namespace, s.name), s);
      changed = replaceMap(this.services, next) || changed;
    }
    if (input.endpointSlices) {
      const next = new Map<string, EndpointSliceInfo>();
      for (const s of input.endpointSlices) {
        if (s.source !== 'EndpointSlice') throw new TypeError('replaceAll: endpointSlices must have source EndpointSlice');
        next.set(`${s.namespace}/${s.name}`, s);
      }
      changed = replaceMap(this.slices, next) || changed;
    }
    if (input.endpoints) {
      const next = new Map<ServiceKey, EndpointSliceInfo[]>();
      for (const s of input.endpoints) {
        if (s.source !== 'Endpoints') throw new TypeError('replaceAll: endpoints must have source Endpoints');
        const key = serviceKey(s.namespace, s.name);
        const l = next.get(key) ?? [];
        l.push(s);
        next.set(key, l);
      }
      changed = replaceMap(this.endpoints, next) || changed;
    }
    if (input.nodes) {
      const next = new Map<string, NodeInfo>();
      for (const n of input.nodes) next.set(n.name, n);
      changed = replaceMap(this.nodes, next) || changed;
    }
    const wasSynced = this.synced;
    if (input.services) this.listed.services = true;
    if (input.endpointSlices || endpointsListed) this.listed.endpointSlices = true;
    if (input.nodes) this.listed.nodes = true;
    if (changed) this.changed(wasSynced);
    else if (!wasSynced && this.synced) this.notify(); // becoming synced is news even with nothing in it
    if (!wasSynced && this.synced) this.syncedResolve();
  }

  /** A consistent view; the same object until the next change. */
  snapshot(): ClusterState {
    if (this.cached) return this.cached;
    const bySvc = new Map<ServiceKey, EndpointSliceInfo[]>();
    for (const s of [...this.slices.values()].sort((a, b) => cmp(a.name, b.name))) {
      const key = serviceKey(s.namespace, s.serviceName);
      const l = bySvc.get(key) ?? [];
      l.push(s);
      bySvc.set(key, l);
    }
    for (const [key, list] of this.endpoints) if (!bySvc.has(key) && list.length > 0) bySvc.set(key, [...list]);
    this.cached = { services: new Map(this.services), slices: bySvc, nodes: new Map(this.nodes) };
    return this.cached;
  }

  private changed(timed = this.synced): void {
    this.gen++;
    this.cached = undefined;
    if (timed && this.timed.length < MAX_TIMED_CHANGES) this.timed.push({ generation: this.gen, seenAt: performance.now() });
    this.notify();
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }
}

const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** Makes `target` equal `next`; returns whether anything differed. Keeps unchanged values. */
function replaceMap<K, V>(target: Map<K, V>, next: Map<K, V>): boolean {
  let changed = false;
  for (const k of [...target.keys()]) {
    if (!next.has(k)) {
      target.delete(k);
      changed = true;
    }
  }
  for (const [k, v] of next) {
    if (!sameValue(target.get(k), v)) {
      target.set(k, v);
      changed = true;
    }
  }
  return changed;
}
