// The normalized cluster model that sources produce and selection, desired state and the proxy
// consume. Sources (static manifests, Kubernetes informers) convert API objects into these.
import type { HostPort } from '../net.js';

export type ServiceKey = string; // "namespace/name"

export const serviceKey = (namespace: string, name: string): ServiceKey => `${namespace}/${name}`;

export interface ServicePortInfo {
  name: string; // "" when unnamed
  protocol: 'TCP' | 'UDP' | 'SCTP';
  port: number;
  /** A port number or the name of an endpoint port; defaults to `port`. */
  targetPort: number | string;
}

export interface ServiceInfo {
  namespace: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  type: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  /** spec.clusterIPs (or spec.clusterIP), without "None" and "". */
  clusterIPs: string[];
  /** clusterIP: None */
  headless: boolean;
  ports: ServicePortInfo[];
  sessionAffinity: 'None' | 'ClientIP';
  /** sessionAffinityConfig.clientIP.timeoutSeconds (default 10800). */
  affinityTimeoutSeconds: number;
  /** spec.internalTrafficPolicy (default Cluster). Local: only endpoints on this node, as kube-proxy. */
  internalTrafficPolicy: 'Cluster' | 'Local';
}

/** A v1 Node, as far as the proxy cares: which agent reaches the pods on it. */
export interface NodeInfo {
  name: string;
  /** Its agent's tunnel listener (annotation edgemesh.io/tunnel-address); absent: not reachable by tunnel. */
  tunnelAddress?: HostPort;
}

export interface EndpointInfo {
  addresses: string[];
  /** conditions.ready (nil counts as true, like kube-proxy). */
  ready: boolean;
  /** conditions.serving (nil: same as ready). */
  serving: boolean;
  terminating: boolean;
  nodeName?: string;
}

export interface EndpointPortInfo {
  name: string;
  protocol: 'TCP' | 'UDP' | 'SCTP';
  port: number;
}

/** An EndpointSlice, or a v1 Endpoints object converted to the same shape. */
export interface EndpointSliceInfo {
  namespace: string;
  /** The slice's own name (for v1 Endpoints: the service name). */
  name: string;
  /** kubernetes.io/service-name */
  serviceName: string;
  addressType: 'IPv4' | 'IPv6' | 'FQDN';
  ports: EndpointPortInfo[];
  endpoints: EndpointInfo[];
  /** Where it came from: a discovery.k8s.io/v1 EndpointSlice or a v1 Endpoints. */
  source: 'EndpointSlice' | 'Endpoints';
}

/** A consistent view of the cluster at one moment. */
export interface ClusterState {
  services: ReadonlyMap<ServiceKey, ServiceInfo>;
  /** Endpoint slices by service key. Endpoints-derived entries are used only where no EndpointSlice exists for the service. */
  slices: ReadonlyMap<ServiceKey, readonly EndpointSliceInfo[]>;
  /** Nodes by name. */
  nodes: ReadonlyMap<string, NodeInfo>;
}
