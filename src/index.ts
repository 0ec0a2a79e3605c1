// The package's public API: what an embedder needs to run the agent, or its parts, in a process
// of its own (docs/architecture.md, "Embedding"). An explicit list rather than `export *`: what is
// not here is internal and may change. Importing this module does not load
// @kubernetes/client-node (the Kubernetes source loads it only for kubeconfig credentials it
// cannot handle itself): test/unit/index-exports.test.ts checks, and pins the list.

// The agent, its configuration and its logger.
export { Agent, managedFamilies, type AgentOptions, type AgentStatus, type TunnelState } from './agent.js';
export {
  loadConfig,
  parseArgs,
  describeConfig,
  configFileText,
  type AgentConfig,
  type BackendChoice,
  type Command,
  type LoadOptions,
  type LogLevel,
  type ParsedArgs,
  type RelayMode,
  type SourceConfig,
} from './config.js';
export { createLogger, silentLogger, type CreateLoggerOptions, type LogFormat, type Logger } from './log.js';

// Every failure the package reports: a class and a stable `code`.
export { ConfigError, EdgeMeshError, FamilyMismatchError, GenerationChangedError, InterfaceError, LockTimeoutError, NativeLoadError, SyscallError, TransactionError } from './errors.js';
export { NetParseError } from './net.js';
export { KubeHttpError } from './cluster/kube-client.js';

// Which Services stay with kube-proxy, the rules that say so, and the backends that write them.
export { DEFAULT_SELECTION, NOPROXY_LABEL, NOPROXY_VALUE, SERVICE_PROXY_NAME_LABEL, parseLabelSelector, selectService, type LabelSelector, type Selection, type SelectionConfig } from './intent/selection.js';
export { desiredRuleSets, type DesiredConfig, type DesiredResult, type SelectionCounts } from './intent/desired.js';
export { EDGE_MESH_CHAIN, EDGE_MESH_TCP_CHAIN, renderRule, renderRuleSet, type DesiredRuleSet, type Family, type JumpChain, type Protocol, type Rule } from './netfilter/rules.js';
export { ALL_BACKENDS, createBackend, resolveBackend, type BackendOptions } from './netfilter/factory.js';
export { detectBackend, type DetectOptions, type Detection } from './netfilter/detect.js';
export { BACKEND_NAMES, type BackendName, type CleanupOutcome, type NatBackend, type OrderState, type StatusReport, type SyncOptions, type SyncOutcome } from './netfilter/types.js';
export type { SyncReason, SyncReport } from './netfilter/reconciler.js';

// The proxy: its listener, routing table and address.
export {
  TcpProxy,
  type ConnectionEvent,
  type ConnectionInfo,
  type EndReason,
  type ProxyAddress,
  type ProxyStats,
  type Refusal,
  type TcpProxyEvents,
  type TcpProxyOptions,
  type TlsFailure,
  type TunnelRefusal,
  type TunnelStats,
} from './proxy/proxy.js';
export { computeLocalServe, computeRoutes, type LocalServe, type RouteEndpoint, type RoutingTable, type ServiceRoute, type UnreachableEndpoint } from './intent/routes.js';
export { originalDst, type OriginalDst } from './proxy/sockopt.js';
export {
  DEFAULT_PROXY_ADDRESS,
  DEFAULT_PROXY_INTERFACE,
  DEFAULT_PROXY_PORT,
  ensureProxyInterface,
  removeProxyInterface,
  type ProxyInterfaceKind,
  type ProxyInterfaceOptions,
} from './proxy/iface.js';

// Sources of Services and endpoints, and the store they fill.
export { ClusterStore, type ChangeListener, type ClusterStoreOptions } from './cluster/store.js';
export { StaticSource, type StaticSourceOptions } from './cluster/static.js';
export { KubeSource, makeKubeConfig, type KubeSourceOptions } from './cluster/kube.js';
export { KubeClient, type KubeClientOptions } from './cluster/kube-client.js';
export { parseManifests, type ManifestObjects } from './cluster/manifests.js';
export type { ClusterState, EndpointInfo, EndpointSliceInfo, NodeInfo, ServiceInfo, ServiceKey } from './cluster/model.js';
