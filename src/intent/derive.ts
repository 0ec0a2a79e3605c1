// One derivation per store generation: the services are selected once, and the selection yields
// both the rule intent (what the reconciler writes) and the proxy's routing table (what the proxy
// serves). The agent's two consumers, the reconcile loop and the route push, run on their own
// schedules; they read the same memoised derivation, so a change is selected once.
import type { ClusterState } from '../cluster/model.js';
import { intentOf, type DesiredConfig, type Intent } from './desired.js';
import { computeLocalServe, computeRoutes, type LocalServe, type PathOptions, type RoutingTable } from './routes.js';
import { selectAll } from './selection.js';

export interface DeriveConfig extends DesiredConfig {
  /**
   * The proxy's side: how this node reaches endpoints. Absent: no routing table (an agent
   * without a proxy writes rules only).
   */
  paths?: PathOptions;
}

export interface Derivation {
  intent: Intent;
  /** The proxy's routing table; undefined without `paths`. */
  routes?: Required<RoutingTable>;
  /** With the tunnel: what this node's tunnel listener may serve. */
  localServe?: LocalServe[];
}

/** Pure: the intent and, with `paths`, the routes of one cluster state. */
export function derive(state: ClusterState, config: DeriveConfig): Derivation {
  const selected = selectAll(state, config.selection);
  const intent = intentOf(selected, state, config);
  const paths = config.paths;
  if (!paths) return { intent };
  const proxied = new Set(selected.filter((s) => s.selection.kind === 'proxied').map((s) => s.svc));
  const routes = computeRoutes(state, (svc) => proxied.has(svc), paths);
  return { intent, routes, ...(paths.tunnel ? { localServe: computeLocalServe(state, paths.nodeName) } : {}) };
}

/**
 * derive() memoised by store generation and config: the same generation with the same config
 * object gives the same Derivation object. A new config object (the relays resolved anew) derives
 * again.
 */
export class Deriver {
  private last: { generation: number; config: DeriveConfig; result: Derivation } | undefined;

  /** The derivation of `generation`; `state` is read only when it is not memoised. */
  at(generation: number, state: () => ClusterState, config: DeriveConfig): Derivation {
    const last = this.last;
    if (last && last.generation === generation && last.config === config) return last.result;
    const result = derive(state(), config);
    this.last = { generation, config, result };
    return result;
  }
}
