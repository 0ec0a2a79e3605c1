// The agent's typed config and its one validation layer.
//
// Sources, highest precedence first: command-line flags, environment variables (a few per-node
// values), the YAML `--config` file (apiVersion edgemesh.io/v1alpha1, kind AgentConfiguration,
// camelCase keys, one per flag), defaults. A list option (--service-cidr, --proxy-addr,
// --ignore-label-selector, --direct-cidr, --tunnel-relay, --order-before) is taken whole from the
// highest layer that sets it; its flag is repeatable and, except for --ignore-label-selector
// (whose commas belong to the selector), takes comma lists as the environment does. The source
// group (--services-dir | --kubeconfig | --api-server) likewise: the highest layer that names any
// source decides, and naming two in one layer is an error.
//
// Every mistake is a ConfigError with a one-line message naming the flag, variable or field,
// e.g. `--service-cidr "10.10.0.0/33": prefix length must be 0-32`; a --config file's mistakes
// are all reported, one line each. The option table below is
// the single truth for parsing, the config file keys, the environment and `--help`.
import { readFileSync } from 'node:fs';
import { hostname as osHostname } from 'node:os';
import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';
import { flowDepth, MAX_YAML_FLOW_DEPTH } from './cluster/manifests.js';
import { BACKEND_NAMES } from './netfilter/types.js';
import { ConfigError } from './errors.js';
import { cidrsOverlap, formatHostPortText, NetParseError, parseCidr, parseHostPort, type HostPort, type ParsedCidr } from './net.js';
import { DEFAULT_ORDER_BEFORE, ORDER_BEFORE_ANY, OWNED_CHAINS, type Family } from './netfilter/rules.js';
import { chainNameProblem } from './netfilter/iptables/iptables-legacy.js';
import { LOG_FORMATS, type LogFormat } from './log.js';
import { parseLabelSelector, SERVICE_PROXY_FILTER_MODES, SERVICE_PROXY_NAME_LABEL, type SelectionConfig, type ServiceProxyFilterMode } from './intent/selection.js';

// The yaml package is loaded on first use, synchronously (its CommonJS build): only a --config
// file needs it (a plain `edgemesh-agent run`: importing this module took ~40 ms less, measured).
type YamlModule = typeof Yaml;
let yamlModule: YamlModule | undefined;
const yaml = (): YamlModule => (yamlModule ??= createRequire(import.meta.url)('yaml') as YamlModule);

export const COMMANDS = ['run', 'status', 'cleanup', 'demo'] as const;
export type Command = (typeof COMMANDS)[number];
export const BACKEND_CHOICES = ['auto', ...BACKEND_NAMES] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];
export const LOG_LEVELS = ['debug', 'info', 'warn', 'error'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const DEFAULT_SERVICE_CIDR = '10.96.0.0/12'; // kube-apiserver's default --service-cluster-ip-range
export const DEFAULT_PROXY_ADDR = '169.254.96.16:40001'; // EdgeMesh's tunnel/proxy link-local address
// As kube-proxy (metrics 127.0.0.1:10249, health 0.0.0.0:10256), on ports of our own since both
// run on the node: metrics and /status (tunnel peers, certificate, errors) stay on loopback; the
// health endpoints, one line each, answer on every address so that the kubelet's probes of a
// hostNetwork pod, which go to the node IP, reach them.
export const DEFAULT_METRICS_ADDR = '127.0.0.1:10251';
export const DEFAULT_HEALTHZ_ADDR = '0.0.0.0:10252';
/** The --config file's apiVersion and kind. */
export const CONFIG_API_VERSION = 'edgemesh.io/v1alpha1';
export const CONFIG_KIND = 'AgentConfiguration';
export const RELAY_MODES = ['splice', 'copy'] as const;
export type RelayMode = (typeof RELAY_MODES)[number];
/** kube-proxy's --proxy-mode values: a user who gives one means our --backend. */
const KUBE_PROXY_MODES = ['iptables', 'ipvs', 'nftables', 'userspace', 'kernelspace'];
export const DEFAULT_TUNNEL_LISTEN = '0.0.0.0:20006';
/** KubeEdge's MetaServer on an edge node: the source when no other is named and no in-cluster config exists. */
export const METASERVER_URL = 'http://127.0.0.1:10550';
export const ENDPOINTS_API_CHOICES = ['auto', 'endpointslices', 'endpoints'] as const;

export type SourceConfig =
  | { kind: 'static'; dir: string }
  | { kind: 'kubeconfig'; file: string }
  /** ca/cert/key: PEM file paths (--api-server-ca/-cert/-key), checked readable here. */
  | { kind: 'api-server'; url: string; ca?: string; cert?: string; key?: string; why?: string }
  /** why: set when chosen without a source flag (for the log line). */
  | { kind: 'in-cluster'; why?: string }
  /** Only for commands that read no cluster state (status, cleanup, demo). */
  | { kind: 'none' };

export interface AgentConfig {
  backend: BackendChoice;
  /** Canonical, one or more per family; a family is managed only when it has a CIDR. */
  serviceCidrs: ParsedCidr[];
  /** At most one per family; exactly one for each family with a service CIDR. */
  proxyAddrs: HostPort[];
  source: SourceConfig;
  /** Where endpoints come from (the API sources): EndpointSlices, v1 Endpoints, or auto (Endpoints when slices answer 404). */
  endpointsApi: (typeof ENDPOINTS_API_CHOICES)[number];
  /** undefined: metrics off (`--metrics-addr off`). */
  metricsAddr: HostPort | undefined;
  /** /healthz and /readyz; undefined: off. Equal to metricsAddr: one listener serves both. */
  healthzAddr: HostPort | undefined;
  once: boolean;
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  orderCheckPeriodMs: number;
  /** Chains our jump must precede in PREROUTING/OUTPUT; `*`: every rule (strict rule 1). */
  orderBefore: string[];
  /** A bad manifest at start is fatal (exit 2) instead of named and skipped. */
  strictManifests: boolean;
  lockWaitMs: number;
  keepRulesOnExit: boolean;
  selection: SelectionConfig;
  logLevel: LogLevel;
  /** undefined: text on a terminal, else json. */
  logFormat: LogFormat | undefined;
  /** 0: unlimited. */
  maxConnections: number;
  connectTimeoutMs: number;
  /** 0: no idle timeout. */
  idleTimeoutMs: number;
  /** SIGTERM/SIGINT: grace for live connections. */
  drainGraceMs: number;
  relayMode: RelayMode;
  /** The --config file read, if any. */
  configFile: string | undefined;
  /** --write-config-to: write the effective configuration there and exit. */
  writeConfigTo: string | undefined;
  /** This node's name as the API knows it (EndpointSlice nodeName, Node objects). */
  nodeName: string;
  /** Endpoint addresses this node dials directly, whichever node they run on (with the tunnel on). */
  directCidrs: ParsedCidr[];
  /**
   * The tunnel between agents; undefined without credentials (every endpoint dialled directly).
   * PEM file paths, not read here: the module that loads them fails the start with exit 2.
   */
  tunnel: { ca: string; cert: string; key: string; listen: HostPort | undefined; relays: RelayAddress[] } | undefined;
}

type Kind = 'string' | 'bool' | 'duration' | 'int' | 'enum';

export interface OptionDef {
  flag: string;
  /** The --config file key. */
  key: string;
  kind: Kind;
  arg?: string;
  repeat?: boolean;
  values?: readonly string[];
  help: string;
  /** Shown in --help; the value used when nothing sets the option. */
  default?: string;
  /** Shown in --help for a default computed when loading (the host name, a conditional default). */
  defaultText?: string;
  env?: string;
  /** Lower bound in ms (duration) or units (int). */
  min?: number;
  /** A list whose flag and file values may also be comma-separated. */
  comma?: boolean;
  commands: readonly Command[];
}

const RUN: readonly Command[] = ['run'];
const ALL: readonly Command[] = COMMANDS;

export const OPTIONS: readonly OptionDef[] = [
  { flag: 'config', key: 'config', kind: 'string', arg: 'FILE', help: `YAML file (apiVersion: ${CONFIG_API_VERSION}, kind: ${CONFIG_KIND}) with any of these options (camelCase keys); flags win over it`, commands: ALL },
  { flag: 'write-config-to', key: 'writeConfigTo', kind: 'string', arg: 'FILE', help: 'write the effective configuration to FILE in the --config format and exit', commands: RUN },
  { flag: 'backend', key: 'backend', kind: 'enum', values: BACKEND_CHOICES, default: 'auto', env: 'EDGEMESH_BACKEND', help: 'netfilter backend', commands: ['run', 'status', 'cleanup', 'demo'] },
  { flag: 'service-cidr', key: 'serviceCidr', kind: 'string', arg: 'CIDR', repeat: true, comma: true, default: DEFAULT_SERVICE_CIDR, env: 'EDGEMESH_SERVICE_CIDR', help: 'service CIDR to proxy; one per family (IPv6 gets ip6tables rules); repeatable or comma-separated', commands: RUN },
  { flag: 'proxy-addr', key: 'proxyAddr', kind: 'string', arg: 'IP:PORT', repeat: true, comma: true, default: DEFAULT_PROXY_ADDR, env: 'EDGEMESH_PROXY_ADDR', help: 'local proxy address the DNAT targets, one per family ([addr]:port for IPv6); repeatable or comma-separated', commands: RUN },
  { flag: 'services-dir', key: 'servicesDir', kind: 'string', arg: 'DIR', help: 'source: a watched directory of Service/EndpointSlice/Endpoints/Node manifests', commands: RUN },
  { flag: 'kubeconfig', key: 'kubeconfig', kind: 'string', arg: 'FILE', help: 'source: the Kubernetes API through this kubeconfig', commands: RUN },
  { flag: 'api-server', key: 'apiServer', kind: 'string', arg: 'URL', env: 'EDGEMESH_API_SERVER', help: `source: the Kubernetes API at this URL (KubeEdge MetaServer). With no source flag: in-cluster config when KUBERNETES_SERVICE_HOST and _PORT are set, else ${METASERVER_URL}`, commands: RUN },
  { flag: 'api-server-ca', key: 'apiServerCa', kind: 'string', arg: 'FILE', help: '--api-server https: PEM CA bundle to verify the server with (default: the system CAs)', commands: RUN },
  { flag: 'api-server-cert', key: 'apiServerCert', kind: 'string', arg: 'FILE', help: '--api-server https: PEM client certificate (with --api-server-key)', commands: RUN },
  { flag: 'api-server-key', key: 'apiServerKey', kind: 'string', arg: 'FILE', help: '--api-server https: PEM private key of --api-server-cert', commands: RUN },
  { flag: 'endpoints-api', key: 'endpointsApi', kind: 'enum', values: ENDPOINTS_API_CHOICES, default: 'auto', help: 'API sources: endpoints from EndpointSlices, v1 Endpoints, or auto (v1 Endpoints when the EndpointSlice list answers 404)', commands: RUN },
  { flag: 'metrics-addr', key: 'metricsAddr', kind: 'string', arg: 'IP:PORT', default: DEFAULT_METRICS_ADDR, help: 'run: metrics and status listener (/metrics, /status; also /healthz, /readyz); port 0 picks a free one; "off" disables. status: where to ask the running agent for its tunnel', commands: ['run', 'status'] },
  { flag: 'healthz-addr', key: 'healthzAddr', kind: 'string', arg: 'IP:PORT', default: DEFAULT_HEALTHZ_ADDR, help: 'health listener for probes (/healthz, /readyz only); the same IP:PORT as --metrics-addr shares its listener; port 0 picks a free one; "off" disables', commands: RUN },
  { flag: 'once', key: 'once', kind: 'bool', default: 'false', help: 'one full sync, print what was applied, exit', commands: RUN },
  { flag: 'min-sync-period', key: 'minSyncPeriod', kind: 'duration', arg: 'DURATION', default: '1s', min: 0, help: 'at most one sync per this period', commands: RUN },
  { flag: 'sync-period', key: 'syncPeriod', kind: 'duration', arg: 'DURATION', default: '60s', min: 1, help: 'full resync period', commands: RUN },
  { flag: 'order-check-period', key: 'orderCheckPeriod', kind: 'duration', arg: 'DURATION', default: '1s', min: 1, help: 'bound on putting our jumps back ahead of --order-before after another writer (the table is polled 4 times per period)', commands: RUN },
  { flag: 'order-before', key: 'orderBefore', kind: 'string', arg: 'CHAIN', repeat: true, default: DEFAULT_ORDER_BEFORE.join(','), help: 'our jump must come before every jump to these chains in PREROUTING/OUTPUT (the chains that DNAT Service traffic); repeatable or comma-separated; "*": before every rule (strict rule 1)', commands: ['run', 'status'] },
  { flag: 'strict-manifests', key: 'strictManifests', kind: 'bool', default: 'false', help: '--services-dir: a bad manifest at start ends the agent (exit 2) instead of being named and skipped', commands: RUN },
  { flag: 'lock-wait', key: 'lockWait', kind: 'duration', arg: 'DURATION', default: '5s', min: 0, help: 'longest wait for the xtables lock', commands: ['run', 'status', 'cleanup'] },
  { flag: 'keep-rules-on-exit', key: 'keepRulesOnExit', kind: 'bool', default: 'false', help: 'leave our chains and jumps in place on SIGTERM/SIGINT', commands: RUN },
  { flag: 'ignore-label-selector', key: 'ignoreLabelSelector', kind: 'string', arg: 'SELECTOR', repeat: true, help: 'also ignore services matching this label selector (k=v, k!=v, k, !k, k in (a,b), k notin (a,b); commas join requirements, as in kubectl -l); repeat for another selector', commands: RUN },
  { flag: 'service-proxy-name', key: 'serviceProxyName', kind: 'string', arg: 'NAME', help: `value of ${SERVICE_PROXY_NAME_LABEL} that counts for the filter (default: any value)`, commands: RUN },
  { flag: 'service-proxy-filter-mode', key: 'serviceProxyFilterMode', kind: 'enum', values: SERVICE_PROXY_FILTER_MODES, default: 'None', help: 'ignore services that have (FilterIfLabelExists) or lack (FilterIfLabelDoesNotExists) the service-proxy-name label', commands: RUN },
  { flag: 'log-level', key: 'logLevel', kind: 'enum', values: LOG_LEVELS, default: 'info', env: 'EDGEMESH_LOG_LEVEL', help: 'log level', commands: ALL },
  { flag: 'log-format', key: 'logFormat', kind: 'enum', values: LOG_FORMATS, defaultText: 'text on a terminal, else json', help: 'json: string levels, ISO-8601 time, node; pino: pino\'s defaults (numeric level, epoch ms, pid, hostname); text: one short line', commands: ALL },
  { flag: 'max-connections', key: 'maxConnections', kind: 'int', arg: 'N', default: '10000', min: 0, help: 'proxy: concurrent connections (0: unlimited)', commands: RUN },
  { flag: 'connect-timeout', key: 'connectTimeout', kind: 'duration', arg: 'DURATION', default: '1s', min: 1, help: 'proxy: timeout of one endpoint connect (then the next endpoint is tried)', commands: RUN },
  { flag: 'idle-timeout', key: 'idleTimeout', kind: 'duration', arg: 'DURATION', default: '30m', min: 0, help: 'proxy: close a connection idle this long (0: never)', commands: RUN },
  { flag: 'drain-grace', key: 'drainGrace', kind: 'duration', arg: 'DURATION', default: '10s', min: 0, help: 'on SIGTERM/SIGINT: how long live proxied connections may finish before they are closed', commands: RUN },
  { flag: 'relay-mode', key: 'relayMode', kind: 'enum', values: RELAY_MODES, default: 'splice', help: 'proxy: relay with splice(2) (zero copy) or read/write', commands: RUN },
  { flag: 'proxy-mode', key: 'proxyMode', kind: 'enum', values: RELAY_MODES, help: 'deprecated: the old name of --relay-mode (kube-proxy\'s --proxy-mode is our --backend)', commands: RUN },
  { flag: 'node-name', key: 'nodeName', kind: 'string', arg: 'NAME', defaultText: 'the host name', env: 'NODE_NAME', help: "this node's name in the API (EndpointSlice nodeName): its endpoints are dialled locally", commands: RUN },
  { flag: 'direct-cidr', key: 'directCidr', kind: 'string', arg: 'CIDR', repeat: true, comma: true, help: 'endpoint addresses this node dials directly (not through the tunnel), whichever node they run on; repeatable or comma-separated', commands: RUN },
  { flag: 'tunnel-listen', key: 'tunnelListen', kind: 'string', arg: 'IP:PORT|none', defaultText: `${DEFAULT_TUNNEL_LISTEN} with the tunnel certificates, else none`, help: 'tunnel listener for peer agents ("none": this agent only dials)', commands: RUN },
  { flag: 'tunnel-ca', key: 'tunnelCa', kind: 'string', arg: 'FILE', help: 'tunnel: PEM CA that signs every agent certificate (mutual TLS 1.3; with --tunnel-cert and --tunnel-key)', commands: RUN },
  { flag: 'tunnel-cert', key: 'tunnelCert', kind: 'string', arg: 'FILE', help: "tunnel: this agent's PEM certificate", commands: RUN },
  { flag: 'tunnel-key', key: 'tunnelKey', kind: 'string', arg: 'FILE', help: "tunnel: this agent's PEM private key", commands: RUN },
  { flag: 'tunnel-relay', key: 'tunnelRelay', kind: 'string', arg: 'HOST:PORT', repeat: true, comma: true, help: "tunnel: a relay's tunnel listener; a node without a tunnel address registers with every one, and nodes without one are reached through them; repeatable or comma-separated", commands: RUN },
];

const BY_FLAG = new Map(OPTIONS.map((o) => [o.flag, o]));
const BY_KEY = new Map(OPTIONS.map((o) => [o.key, o]));
const SOURCE_KEYS = ['servicesDir', 'kubeconfig', 'apiServer'] as const;
const TUNNEL_FILE_KEYS = ['tunnelCa', 'tunnelCert', 'tunnelKey'] as const;
/** A DNS-1123 subdomain, as Kubernetes validates Node names. */
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

// ---- durations ----

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** "250ms", "1s", "5m", "1h30m", "1.5s", "0" -> milliseconds; throws NetParseError-like Error with the reason. */
export function parseDuration(text: string): number {
  if (text === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  if (text === '') throw new Error('empty duration');
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) throw new Error('not a duration (write e.g. 250ms, 1s, 5m, 1h30m)');
    total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
    pos = re.lastIndex;
  }
  return Math.round(total);
}

export function formatDuration(ms: number): string {
  if (ms === 0) return '0';
  for (const [u, f] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) if (ms % f === 0) return `${ms / f}${u}`;
  return `${ms}ms`;
}

// ---- layers ----

interface RawValue {
  value: unknown;
  /** How to name it in an error: `--service-cidr`, `EDGEMESH_SERVICE_CIDR`, `agent.yaml: serviceCidr`. */
  origin: string;
}
type Layer = Map<string, RawValue>;

export type Env = Readonly<Record<string, string | undefined>>;

export interface LoadOptions {
  command?: Command;
  /** Flags already split into values, keyed by the config file key (camelCase). Highest precedence. */
  values?: Readonly<Record<string, unknown>>;
  /** Origin label per key for `values` (default `--flag`). */
  origins?: Readonly<Record<string, string>>;
  /** A YAML config file to read (the `config` value in `values` also works). */
  file?: string;
  /** Default: process.env. */
  env?: Env;
  readFile?: (path: string) => string;
  /** Default: os.hostname. The default --node-name. */
  hostname?: () => string;
  /** Receives one line per deprecated name or form used (default: dropped). */
  warnings?: string[];
}

export type ParsedArgs =
  | { command: 'help'; help: string }
  | { command: 'version' }
  /** warnings: one line each (deprecated names), for stderr. */
  | { command: Command; config: AgentConfig; warnings: string[] };

/** kube-proxy flags that have an equivalent here: `--master` -> "--api-server". */
const KUBE_PROXY_FLAGS: Record<string, string> = {
  master: '--api-server',
  'iptables-sync-period': '--sync-period',
  'iptables-min-sync-period': '--min-sync-period',
  cleanup: 'the "cleanup" command (edgemesh-agent cleanup)',
  'hostname-override': '--node-name',
  'metrics-bind-address': '--metrics-addr',
  'healthz-bind-address': '--healthz-addr',
  'cluster-cidr': '--direct-cidr (pod addresses this node routes to; --service-cidr is the service range)',
};

const kubeProxyModeProblem = (v: string): string | undefined =>
  KUBE_PROXY_MODES.includes(v) ? `"${v}" is a kube-proxy mode: did you mean --backend (auto, ${BACKEND_NAMES.join(', ')})? --proxy-mode here is the deprecated name of --relay-mode (splice, copy)` : undefined;

const fail = (origin: string, value: unknown, problem: string, field: string): never => {
  let json: string;
  try {
    json = JSON.stringify(value) ?? String(value);
  } catch {
    json = '(a self-referencing value)'; // a recursive YAML alias
  }
  const shown = typeof value === 'string' ? ` "${value}"` : value === undefined ? '' : ` ${json}`;
  throw new ConfigError(`${origin}${shown}: ${problem}`, field);
};

/** Splits argv (without node and script) into a command and the flag layer. */
function parseArgv(argv: readonly string[]): { command: Command | 'help' | 'version'; layer: Layer; helpFor?: Command } {
  const args = [...argv];
  const first = args[0];
  if (args.includes('--version')) return { command: 'version', layer: new Map() };
  if (first === undefined || first === '--help' || first === '-h' || first === 'help') {
    const topic = args[1];
    return { command: 'help', layer: new Map(), ...(topic && (COMMANDS as readonly string[]).includes(topic) ? { helpFor: topic as Command } : {}) };
  }
  if (first.startsWith('-')) {
    const name = first.replace(/^--?/, '').split('=')[0] as string;
    if (KUBE_PROXY_FLAGS[name]) throw new ConfigError(`unknown flag --${name} (kube-proxy's): did you mean ${KUBE_PROXY_FLAGS[name]}?${name === 'cleanup' ? '' : ' (after a command: edgemesh-agent run ...)'}`, name);
    throw new ConfigError(`expected a command (${COMMANDS.join(', ')}) before ${first}`, 'command');
  }
  if (!(COMMANDS as readonly string[]).includes(first)) throw new ConfigError(`unknown command "${first}" (expected ${COMMANDS.join(', ')})`, 'command');
  const command = first as Command;
  const layer: Layer = new Map();
  for (let i = 1; i < args.length; i++) {
    const a = args[i] as string;
    if (a === '--help' || a === '-h') return { command: 'help', layer: new Map(), helpFor: command };
    if (!a.startsWith('--')) throw new ConfigError(`unexpected argument "${a}"`, 'args');
    const eq = a.indexOf('=');
    const name = a.slice(2, eq >= 0 ? eq : undefined);
    const def = BY_FLAG.get(name);
    if (!def) throw new ConfigError(`unknown flag --${name}${KUBE_PROXY_FLAGS[name] ? ` (kube-proxy's): did you mean ${KUBE_PROXY_FLAGS[name]}?` : ''}`, name);
    if (!def.commands.includes(command)) throw new ConfigError(`--${name} is not a flag of "${command}"`, name);
    let value: string | boolean;
    if (def.kind === 'bool') {
      if (eq < 0) value = true;
      else {
        const v = a.slice(eq + 1);
        if (v !== 'true' && v !== 'false') fail(`--${name}`, v, 'must be true or false', name);
        value = v === 'true';
      }
    } else if (eq >= 0) value = a.slice(eq + 1);
    else {
      const next = args[i + 1];
      if (next === undefined || (next.startsWith('--') && next.length > 2)) throw new ConfigError(`--${name}: missing value (${def.arg ?? 'VALUE'})`, name);
      value = next;
      i++;
    }
    const modeProblem = def.key === 'proxyMode' ? kubeProxyModeProblem(value as string) : undefined;
    if (modeProblem) fail(`--${name}`, value, modeProblem, name);
    const prev = layer.get(def.key);
    if (def.repeat) {
      const list = prev ? (prev.value as string[]) : [];
      list.push(value as string);
      layer.set(def.key, { value: list, origin: `--${name}` });
    } else {
      if (prev) throw new ConfigError(`--${name} given more than once`, name);
      layer.set(def.key, { value, origin: `--${name}` });
    }
  }
  return { command, layer };
}

function envLayer(env: Env): Layer {
  const layer: Layer = new Map();
  for (const def of OPTIONS) {
    if (!def.env) continue;
    const v = env[def.env];
    if (v === undefined || v === '') continue;
    const value = def.repeat ? v.split(',').map((s) => s.trim()).filter((s) => s !== '') : v;
    layer.set(def.key, { value, origin: def.env });
  }
  return layer;
}

// Configuration files of the neighbours, recognised by kind: one line naming what corresponds here.
const FOREIGN_KINDS: Record<string, string> = {
  KubeProxyConfiguration:
    "kube-proxy's configuration, not this agent's; the equivalents here: iptables.syncPeriod -> syncPeriod, iptables.minSyncPeriod -> minSyncPeriod, hostnameOverride -> nodeName, metricsBindAddress -> metricsAddr, healthzBindAddress -> healthzAddr, mode -> backend, clientConnection.kubeconfig -> kubeconfig, clusterCIDR (pods) -> directCidr (serviceCidr is the service range)",
  EdgeMeshAgent:
    "EdgeMesh's agent configuration, not this agent's; the equivalents here: kubeAPIConfig.master or the MetaServer -> apiServer, kubeAPIConfig.kubeConfig -> kubeconfig, commonConfig.bridgeDeviceIP and edgeProxy's listen port -> proxyAddr, edgeProxy's serviceFilterMode -> serviceProxyFilterMode, edgeTunnel's listen port -> tunnelListen, edgeTunnel's relay nodes -> tunnelRelay",
};
/** Keys of those files that are pasted into ours: where each goes here. */
const FOREIGN_KEYS: Record<string, string> = {
  hostnameOverride: 'nodeName',
  metricsBindAddress: 'metricsAddr',
  healthzBindAddress: 'healthzAddr',
  mode: 'backend',
  iptables: 'syncPeriod and minSyncPeriod',
  clientConnection: 'kubeconfig',
  clusterCIDR: 'directCidr (pods; serviceCidr is the service range)',
  kubeAPIConfig: 'apiServer or kubeconfig',
};

/** Lines of one ConfigError for a --config file at most (the last one says how many more). */
export const MAX_FILE_ERRORS = 20;

/**
 * Reads a --config file. Every problem of the file (its apiVersion and kind, unknown keys, values
 * that do not parse) is reported at once, one line each; what depends on other options is checked
 * when the layers are merged.
 */
function fileLayer(path: string, readFile: (p: string) => string, warnings: string[]): Layer {
  let text: string;
  try {
    text = readFile(path);
  } catch (e) {
    throw new ConfigError(`--config "${path}": ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'config', { cause: e });
  }
  let doc: unknown;
  if (flowDepth(text, MAX_YAML_FLOW_DEPTH) > MAX_YAML_FLOW_DEPTH) throw new ConfigError(`--config "${path}": invalid YAML: [ ] / { } nested deeper than ${MAX_YAML_FLOW_DEPTH} levels`, 'config');
  try {
    doc = yaml().parse(text, { prettyErrors: false, logLevel: 'error' });
  } catch (e) {
    throw new ConfigError(`--config "${path}": invalid YAML: ${(e as Error).message.split('\n')[0]}`, 'config', { cause: e });
  }
  const layer: Layer = new Map();
  if (doc === null || doc === undefined) return layer;
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError(`--config "${path}": must be a mapping of option names to values`, 'config');
  const obj = doc as Record<string, unknown>;
  const foreign = typeof obj.kind === 'string' ? FOREIGN_KINDS[obj.kind] : undefined;
  if (foreign) throw new ConfigError(`${path}: kind ${String(obj.kind)} is ${foreign}`, 'kind');
  const errors: string[] = [];
  const version = (key: 'apiVersion' | 'kind', want: string) => {
    const v = obj[key];
    if (v === undefined) errors.push(`${path}: ${key}: missing (write ${key}: ${want})`);
    else if (v !== want) errors.push(`${path}: ${key} ${JSON.stringify(v)}: must be ${want}`);
  };
  if (obj.apiVersion === undefined && obj.kind === undefined) {
    warnings.push(`${path}: no apiVersion and kind: deprecated, they will be required in the next release (add apiVersion: ${CONFIG_API_VERSION} and kind: ${CONFIG_KIND})`);
  } else {
    version('apiVersion', CONFIG_API_VERSION);
    version('kind', CONFIG_KIND);
  }
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'apiVersion' || k === 'kind') continue;
    const def = BY_KEY.get(k);
    if (!def) {
      const hint = BY_FLAG.has(k) ? ` (write it ${BY_FLAG.get(k)?.key})` : FOREIGN_KEYS[k] ? ` (kube-proxy's or EdgeMesh's; here: ${FOREIGN_KEYS[k]})` : '';
      errors.push(`${path}: unknown field "${k}"${hint}`);
      continue;
    }
    if (def.key === 'config' || def.key === 'writeConfigTo') {
      errors.push(`${path}: "${k}" is a command-line flag only`);
      continue;
    }
    const raw = { value: v, origin: `${path}: ${k}` };
    try {
      checkValue(def, raw);
    } catch (e) {
      if (!(e instanceof ConfigError)) throw e;
      errors.push(e.message);
      continue;
    }
    layer.set(k, raw);
  }
  // A file of thousands of mistakes (a wrong file given) is not worth thousands of lines.
  if (errors.length > MAX_FILE_ERRORS) errors.splice(MAX_FILE_ERRORS - 1, Infinity, `${path}: ... and ${errors.length - MAX_FILE_ERRORS + 1} more problems`);
  if (errors.length > 0) throw new ConfigError(errors, 'config');
  return layer;
}

/** One value on its own, as the loader will parse it (throws the loader's ConfigError). */
function checkValue(def: OptionDef, raw: RawValue): void {
  const hostPort = (off: string, allowZero: boolean) => {
    const text = asString(def, raw);
    if (text === off) return;
    try {
      parseHostPort(text, { allowZero });
    } catch (e) {
      fail(raw.origin, text, reason(e), def.flag);
    }
  };
  const items = (parse: (text: string) => unknown) => {
    for (const { value, origin } of asList(def, raw)) {
      try {
        parse(value);
      } catch (e) {
        fail(origin, value, reason(e), def.flag);
      }
    }
  };
  switch (def.key) {
    case 'serviceCidr':
    case 'directCidr':
      return items(parseCidr);
    case 'proxyAddr':
      return items((t) => parseHostPort(t));
    case 'tunnelRelay':
      return items(parseRelayAddress);
    case 'ignoreLabelSelector':
      return items(parseLabelSelector);
    case 'orderBefore':
      return void orderBeforeList(def, raw);
    case 'metricsAddr':
    case 'healthzAddr':
      return hostPort('off', true);
    case 'tunnelListen':
      return hostPort('none', false);
    case 'proxyMode': {
      const problem = typeof raw.value === 'string' ? kubeProxyModeProblem(raw.value) : undefined;
      if (problem) fail(raw.origin, raw.value, problem, def.flag);
      return void asEnum(def, raw);
    }
  }
  switch (def.kind) {
    case 'bool':
      return void asBool(def, raw);
    case 'duration':
      return void asDuration(def, raw);
    case 'int':
      return void asInt(def, raw);
    case 'enum':
      return void asEnum(def, raw);
    case 'string':
      return def.repeat ? void asList(def, raw) : void asString(def, raw);
  }
}

// ---- typed values ----

function asString(def: OptionDef, raw: RawValue): string {
  if (typeof raw.value === 'number' && def.kind !== 'enum') return String(raw.value);
  if (typeof raw.value !== 'string') fail(raw.origin, raw.value, 'must be a string', def.key);
  return raw.value as string;
}

function asList(def: OptionDef, raw: RawValue): { value: string; origin: string }[] {
  const v = raw.value;
  const items = typeof v === 'string' ? [v] : Array.isArray(v) ? v : fail(raw.origin, v, 'must be a string or a list of strings', def.key);
  return items.flatMap((item, i) => {
    if (typeof item !== 'string') fail(Array.isArray(v) && !raw.origin.startsWith('--') ? `${raw.origin}[${i}]` : raw.origin, item, 'must be a string', def.key);
    // `--service-cidr 10.96.0.0/12,fd00::/108`, as the environment variables take them.
    const parts = def.comma ? (item as string).split(',').map((p) => p.trim()).filter((p) => p !== '') : [item as string];
    return parts.map((value) => ({ value, origin: raw.origin }));
  });
}

function asBool(def: OptionDef, raw: RawValue): boolean {
  if (typeof raw.value === 'boolean') return raw.value;
  if (raw.value === 'true') return true;
  if (raw.value === 'false') return false;
  return fail(raw.origin, raw.value, 'must be true or false', def.key);
}

function asDuration(def: OptionDef, raw: RawValue): number {
  if (typeof raw.value === 'number') fail(raw.origin, raw.value, 'must be a duration with a unit, e.g. 1s or 250ms', def.key);
  const text = asString(def, raw);
  let ms: number;
  try {
    ms = parseDuration(text);
  } catch (e) {
    return fail(raw.origin, text, (e as Error).message, def.key);
  }
  if (def.min !== undefined && ms < def.min) fail(raw.origin, text, def.min === 1 ? 'must be greater than 0' : `must be at least ${formatDuration(def.min)}`, def.key);
  return ms;
}

function asInt(def: OptionDef, raw: RawValue): number {
  const v = raw.value;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n)) fail(raw.origin, v, 'must be a whole number', def.key);
  if (def.min !== undefined && n < def.min) fail(raw.origin, v, `must be at least ${def.min}`, def.key);
  return n;
}

function asEnum<T extends string>(def: OptionDef, raw: RawValue): T {
  const s = asString(def, raw);
  if (!def.values?.includes(s)) fail(raw.origin, s, `must be one of ${def.values?.join(', ')}`, def.key);
  return s as T;
}

// ---- the loader ----

/** Builds and validates the config from flag values (by key), env and an optional file. */
export function loadConfig(options: LoadOptions = {}): AgentConfig {
  const command = options.command ?? 'run';
  const readFile = options.readFile ?? ((p: string) => readFileSync(p, 'utf8'));
  const flags: Layer = new Map();
  for (const [k, v] of Object.entries(options.values ?? {})) {
    const def = BY_KEY.get(k);
    if (!def) throw new ConfigError(`unknown option "${k}"`, k);
    flags.set(k, { value: v, origin: options.origins?.[k] ?? `--${def.flag}` });
  }
  const configPath = options.file ?? (flags.has('config') ? asString(BY_KEY.get('config') as OptionDef, flags.get('config') as RawValue) : undefined);
  const env = options.env ?? process.env;
  const warnings = options.warnings ?? [];
  const layers: Layer[] = [flags, envLayer(env), configPath !== undefined ? fileLayer(configPath, readFile, warnings) : new Map<string, RawValue>()];
  const pick = (key: string): RawValue | undefined => {
    for (const l of layers) {
      const v = l.get(key);
      if (v !== undefined) return v;
    }
    return undefined;
  };
  const def = (key: string): OptionDef => BY_KEY.get(key) as OptionDef;
  const dflt = (key: string): RawValue => ({ value: def(key).kind === 'bool' ? def(key).default === 'true' : def(key).default, origin: `default of --${def(key).flag}` });
  const get = (key: string): RawValue => pick(key) ?? dflt(key);

  // service CIDRs
  const cidrRaw = get('serviceCidr');
  const serviceCidrs: ParsedCidr[] = [];
  for (const { value, origin } of asList(def('serviceCidr'), cidrRaw)) {
    let c: ParsedCidr;
    try {
      c = parseCidr(value);
    } catch (e) {
      return fail(origin, value, reason(e), 'service-cidr');
    }
    const clash = serviceCidrs.find((o) => cidrsOverlap(o, c));
    if (clash) fail(origin, value, clash.text === c.text ? 'given twice' : `overlaps ${clash.text}`, 'service-cidr');
    serviceCidrs.push(c);
  }
  if (serviceCidrs.length === 0) fail(cidrRaw.origin, undefined, 'at least one service CIDR is required', 'service-cidr');

  // proxy addresses: one per family, and exactly the families that have a CIDR
  // The default (IPv4) proxy address applies only when there is an IPv4 service CIDR.
  const proxyRaw = pick('proxyAddr') ?? (serviceCidrs.some((c) => c.family === 'ipv4') ? dflt('proxyAddr') : { value: [], origin: '--proxy-addr' });
  const proxyAddrs: HostPort[] = [];
  for (const { value, origin } of asList(def('proxyAddr'), proxyRaw)) {
    let hp: HostPort;
    try {
      hp = parseHostPort(value);
    } catch (e) {
      return fail(origin, value, reason(e), 'proxy-addr');
    }
    if (proxyAddrs.some((p) => p.family === hp.family)) fail(origin, value, `a second ${hp.family} proxy address (one per family)`, 'proxy-addr');
    if (!serviceCidrs.some((c) => c.family === hp.family)) fail(origin, value, `no --service-cidr of family ${hp.family} to proxy`, 'proxy-addr');
    proxyAddrs.push(hp);
  }
  for (const family of ['ipv4', 'ipv6'] as Family[]) {
    const c = serviceCidrs.find((x) => x.family === family);
    if (c && !proxyAddrs.some((p) => p.family === family)) {
      fail(cidrRaw.origin, c.text, `no --proxy-addr of family ${family} for this CIDR${family === 'ipv6' ? ' (write it [addr]:port)' : ''}`, 'proxy-addr');
    }
  }

  // source
  let source: SourceConfig = { kind: 'none' };
  for (const layer of layers) {
    const set = SOURCE_KEYS.filter((k) => layer.has(k));
    if (set.length === 0) continue;
    if (set.length > 1) {
      const [a, b] = set.map((k) => (layer.get(k) as RawValue).origin);
      throw new ConfigError(`${a} and ${b} are mutually exclusive (one source)`, 'source');
    }
    const k = set[0] as (typeof SOURCE_KEYS)[number];
    const raw = layer.get(k) as RawValue;
    const v = asString(def(k), raw);
    if (v === '') fail(raw.origin, v, 'must not be empty', def(k).flag);
    if (k === 'servicesDir') source = { kind: 'static', dir: v };
    else if (k === 'kubeconfig') source = { kind: 'kubeconfig', file: v };
    else {
      let url: URL;
      try {
        url = new URL(v);
      } catch {
        return fail(raw.origin, v, 'not a URL (e.g. http://127.0.0.1:10550)', 'api-server');
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') fail(raw.origin, v, 'scheme must be http or https', 'api-server');
      source = { kind: 'api-server', url: v };
    }
    break;
  }
  const writeRaw = pick('writeConfigTo');
  const writeConfigTo = writeRaw ? asString(def('writeConfigTo'), writeRaw) : undefined;
  if (writeConfigTo === '') fail((writeRaw as RawValue).origin, '', 'must not be empty', 'write-config-to');
  // Writing the configuration needs no cluster: the source stays unset when none is named.
  if (command === 'run' && source.kind === 'none' && writeConfigTo === undefined) {
    // An edge node has no KUBERNETES_SERVICE_HOST: KubeEdge's MetaServer serves the API there.
    if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT) source = { kind: 'in-cluster', why: 'no source flag; KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are set' };
    else source = { kind: 'api-server', url: METASERVER_URL, why: 'no source flag and no in-cluster service variables (an edge node): KubeEdge MetaServer' };
  }
  if (command === 'run') source = apiServerTls(source, layers, def, readFile);

  // metrics and health listeners
  const listener = (key: 'metricsAddr' | 'healthzAddr'): HostPort | undefined => {
    const raw = get(key);
    const text = asString(def(key), raw);
    if (text === 'off') return undefined;
    try {
      return parseHostPort(text, { allowZero: true });
    } catch (e) {
      return fail(raw.origin, text, reason(e), def(key).flag);
    }
  };
  const metricsAddr = listener('metricsAddr');
  const healthzAddr = listener('healthzAddr');
  if (metricsAddr && healthzAddr && metricsAddr.port === healthzAddr.port && metricsAddr.port !== 0 && metricsAddr.address !== healthzAddr.address) {
    const ip = (a: HostPort) => a.address === '0.0.0.0' || a.address === '::';
    if (ip(metricsAddr) || ip(healthzAddr)) {
      const raw = get('healthzAddr');
      fail(raw.origin, raw.value, `port ${healthzAddr.port} is also --metrics-addr's, on an overlapping address (give both the same address to share one listener)`, 'healthz-addr');
    }
  }

  // --relay-mode, or its deprecated name --proxy-mode (the highest layer that names either)
  let relayRaw: RawValue = dflt('relayMode');
  let relayDef = def('relayMode');
  for (const layer of layers) {
    const alias = layer.get('proxyMode');
    if (alias) warnings.push(`${alias.origin}: deprecated, use ${alias.origin.startsWith('--') ? '--relay-mode' : 'relayMode'} (kube-proxy's --proxy-mode means the backend)`);
  }
  for (const layer of layers) {
    const v = layer.get('relayMode') ?? layer.get('proxyMode');
    if (!v) continue;
    relayRaw = v;
    relayDef = layer.has('relayMode') ? def('relayMode') : def('proxyMode');
    break;
  }
  const proxyModeProblem = relayDef.key === 'proxyMode' && typeof relayRaw.value === 'string' ? kubeProxyModeProblem(relayRaw.value) : undefined;
  if (proxyModeProblem) fail(relayRaw.origin, relayRaw.value, proxyModeProblem, 'proxy-mode');
  const logFormatRaw = pick('logFormat');

  // selection
  const selectors = pick('ignoreLabelSelector');
  const ignoreLabelSelectors = (selectors ? asList(def('ignoreLabelSelector'), selectors) : []).map(({ value, origin }) => {
    try {
      return parseLabelSelector(value);
    } catch (e) {
      return fail(origin, undefined, (e as Error).message, 'ignore-label-selector');
    }
  });
  const modeRaw = get('serviceProxyFilterMode');
  const serviceProxyFilterMode = asEnum<ServiceProxyFilterMode>(def('serviceProxyFilterMode'), modeRaw);
  const nameRaw = pick('serviceProxyName');
  const serviceProxyName = nameRaw ? asString(def('serviceProxyName'), nameRaw) : '';
  if (nameRaw && serviceProxyName !== '' && !/^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$/.test(serviceProxyName)) {
    fail(nameRaw.origin, serviceProxyName, 'not a valid label value', 'service-proxy-name');
  }
  if (nameRaw && serviceProxyFilterMode === 'None') {
    fail(nameRaw.origin, serviceProxyName, 'needs --service-proxy-filter-mode FilterIfLabelExists or FilterIfLabelDoesNotExists', 'service-proxy-name');
  }

  const { nodeName, directCidrs, tunnel } = tunnelConfig(command, pick, def, options.hostname ?? osHostname);

  const dur = (k: string): number => asDuration(def(k), get(k));
  const configFile = configPath;
  if (dur('minSyncPeriod') > dur('syncPeriod')) {
    const raw = get('minSyncPeriod');
    fail(raw.origin, raw.value, `must not exceed --sync-period (${formatDuration(dur('syncPeriod'))})`, 'min-sync-period');
  }
  const orderBefore = orderBeforeList(def('orderBefore'), get('orderBefore'));
  return {
    backend: asEnum<BackendChoice>(def('backend'), get('backend')),
    serviceCidrs,
    proxyAddrs,
    source,
    endpointsApi: asEnum<AgentConfig['endpointsApi']>(def('endpointsApi'), get('endpointsApi')),
    metricsAddr,
    healthzAddr,
    once: asBool(def('once'), get('once')),
    minSyncPeriodMs: dur('minSyncPeriod'),
    syncPeriodMs: dur('syncPeriod'),
    orderCheckPeriodMs: dur('orderCheckPeriod'),
    orderBefore,
    strictManifests: asBool(def('strictManifests'), get('strictManifests')),
    lockWaitMs: dur('lockWait'),
    keepRulesOnExit: asBool(def('keepRulesOnExit'), get('keepRulesOnExit')),
    selection: { ignoreLabelSelectors, serviceProxyFilterMode, serviceProxyName },
    logLevel: asEnum<LogLevel>(def('logLevel'), get('logLevel')),
    logFormat: logFormatRaw ? asEnum<LogFormat>(def('logFormat'), logFormatRaw) : undefined,
    maxConnections: asInt(def('maxConnections'), get('maxConnections')),
    connectTimeoutMs: dur('connectTimeout'),
    idleTimeoutMs: dur('idleTimeout'),
    drainGraceMs: dur('drainGrace'),
    relayMode: asEnum<RelayMode>(relayDef, relayRaw),
    configFile,
    writeConfigTo,
    nodeName,
    directCidrs,
    tunnel,
  };
}

/**
 * --api-server-ca / -cert / -key: only with an https --api-server; cert and key together; each
 * file readable. They belong to the source group: set in a lower layer than the one that chose
 * another source (a config file's, under a --services-dir flag), they are ignored.
 */
function apiServerTls(source: SourceConfig, layers: Layer[], def: (key: string) => OptionDef, readFile: (path: string) => string): SourceConfig {
  const keys = ['apiServerCa', 'apiServerCert', 'apiServerKey'] as const;
  const files: Partial<Record<(typeof keys)[number], string>> = {};
  const sourceLayer = layers.findIndex((l) => SOURCE_KEYS.some((k) => l.has(k)));
  const pick = (key: string): RawValue | undefined => {
    const i = layers.findIndex((l) => l.has(key));
    if (i < 0 || (source.kind !== 'api-server' && sourceLayer >= 0 && i > sourceLayer)) return undefined;
    return layers[i]?.get(key);
  };
  for (const k of keys) {
    const raw = pick(k);
    if (!raw) continue;
    const v = asString(def(k), raw);
    if (v === '') fail(raw.origin, v, 'must not be empty', def(k).flag);
    if (source.kind !== 'api-server' || source.why !== undefined) fail(raw.origin, v, 'needs --api-server URL (it is for that source only)', def(k).flag);
    else if (!source.url.startsWith('https:')) fail(raw.origin, v, `needs an https:// --api-server (got ${source.url})`, def(k).flag);
    try {
      readFile(v);
    } catch (e) {
      fail(raw.origin, v, `unreadable: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, def(k).flag);
    }
    files[k] = v;
  }
  if ((files.apiServerCert === undefined) !== (files.apiServerKey === undefined)) {
    const [has, lacks] = files.apiServerCert !== undefined ? (['apiServerCert', 'apiServerKey'] as const) : (['apiServerKey', 'apiServerCert'] as const);
    const raw = pick(has) as RawValue;
    fail(raw.origin, raw.value, `needs --${def(lacks).flag} as well (a client certificate and its key go together)`, def(lacks).flag);
  }
  if (source.kind !== 'api-server') return source;
  return { ...source, ...(files.apiServerCa ? { ca: files.apiServerCa } : {}), ...(files.apiServerCert ? { cert: files.apiServerCert } : {}), ...(files.apiServerKey ? { key: files.apiServerKey } : {}) };
}

/** --order-before: chain names (repeatable, comma-separated), or `*`. */
function orderBeforeList(d: OptionDef, raw: RawValue): string[] {
  const out: string[] = [];
  for (const { value, origin } of asList(d, raw)) {
    for (const part of value.split(',')) {
      const name = part.trim();
      if (name === ORDER_BEFORE_ANY) {
        if (!out.includes(name)) out.push(name);
        continue;
      }
      const problem = name === '' ? 'chain name must not be empty' : chainNameProblem(name);
      if (problem) fail(origin, value, problem, 'order-before');
      if (['PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING', ...OWNED_CHAINS].includes(name)) fail(origin, value, `${name} is not a chain our jump can precede`, 'order-before');
      if (!out.includes(name)) out.push(name);
    }
  }
  return out;
}

/** A --tunnel-relay: an IP literal, or a host name the agent resolves (and re-resolves). */
export interface RelayAddress {
  host: string;
  port: number;
  /** The text given, for logs. */
  text: string;
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$/i;

/** "IP:PORT", "[v6]:PORT" or "name:PORT". */
export function parseRelayAddress(text: string): RelayAddress {
  try {
    const hp = parseHostPort(text);
    return { host: hp.address, port: hp.port, text };
  } catch (e) {
    const m = /^([^:[\]]+):(\d{1,5})$/.exec(text);
    if (!m || !HOST_NAME.test(m[1] as string) || /^[\d.]+$/.test(m[1] as string)) throw e;
    const port = Number(m[2]);
    if (port < 1 || port > 65535) throw new Error('port must be 1-65535');
    return { host: (m[1] as string).toLowerCase(), port, text };
  }
}

/** --node-name, --direct-cidr and the tunnel options. */
function tunnelConfig(
  command: Command,
  pick: (key: string) => RawValue | undefined,
  def: (key: string) => OptionDef,
  hostname: () => string,
): Pick<AgentConfig, 'nodeName' | 'directCidrs' | 'tunnel'> {
  // As kubelet names its Node when --hostname-override is not given: the host name, lower-cased.
  const nameRaw = pick('nodeName') ?? { value: hostname().trim().toLowerCase(), origin: 'default of --node-name (the host name)' };
  const nodeName = asString(def('nodeName'), nameRaw);
  // Other commands cannot set it and do not use it: an odd host name must not break `status`.
  if (command === 'run' && (nodeName.length > 253 || !DNS_SUBDOMAIN.test(nodeName))) {
    const hint = pick('nodeName') ? '' : '; set --node-name or NODE_NAME';
    fail(nameRaw.origin, nodeName, `not a DNS-1123 subdomain (lower-case letters, digits, "-" and "."; at most 253 characters)${hint}`, 'node-name');
  }

  const directCidrs: ParsedCidr[] = [];
  const directRaw = pick('directCidr');
  for (const { value, origin } of directRaw ? asList(def('directCidr'), directRaw) : []) {
    let c: ParsedCidr;
    try {
      c = parseCidr(value);
    } catch (e) {
      return fail(origin, value, reason(e), 'direct-cidr');
    }
    const clash = directCidrs.find((o) => cidrsOverlap(o, c));
    if (clash) fail(origin, value, clash.text === c.text ? 'given twice' : `overlaps ${clash.text}`, 'direct-cidr');
    directCidrs.push(c);
  }

  const files = TUNNEL_FILE_KEYS.map((k) => {
    const raw = pick(k);
    if (!raw) return undefined;
    const v = asString(def(k), raw);
    if (v === '') fail(raw.origin, v, 'must not be empty', def(k).flag);
    return { value: v, origin: raw.origin };
  });
  const given = files.filter((f) => f !== undefined);
  if (given.length > 0 && given.length < files.length) {
    const missing = TUNNEL_FILE_KEYS.filter((_, i) => files[i] === undefined).map((k) => `--${def(k).flag}`);
    const first = given[0] as { value: string; origin: string };
    fail(first.origin, first.value, `missing ${missing.join(' and ')} (the tunnel needs --tunnel-ca, --tunnel-cert and --tunnel-key)`, 'tunnel');
  }
  const listenRaw = pick('tunnelListen');
  const listenText = listenRaw ? asString(def('tunnelListen'), listenRaw) : given.length > 0 ? DEFAULT_TUNNEL_LISTEN : 'none';
  let listen: HostPort | undefined;
  if (listenText !== 'none') {
    const origin = listenRaw?.origin ?? 'default of --tunnel-listen';
    if (given.length === 0) fail(origin, listenText, 'needs --tunnel-ca, --tunnel-cert and --tunnel-key', 'tunnel-listen');
    try {
      listen = parseHostPort(listenText);
    } catch (e) {
      return fail(origin, listenText, reason(e), 'tunnel-listen');
    }
  }
  const relays: RelayAddress[] = [];
  const relayRaw = pick('tunnelRelay');
  for (const { value, origin } of relayRaw ? asList(def('tunnelRelay'), relayRaw) : []) {
    if (given.length === 0) fail(origin, value, 'needs --tunnel-ca, --tunnel-cert and --tunnel-key', 'tunnel-relay');
    let r: RelayAddress;
    try {
      r = parseRelayAddress(value);
    } catch (e) {
      return fail(origin, value, `${reason(e)} (write IP:PORT, [IPv6]:PORT or HOST:PORT)`, 'tunnel-relay');
    }
    if (relays.some((o) => o.host === r.host && o.port === r.port)) fail(origin, value, 'given twice', 'tunnel-relay');
    relays.push(r);
  }
  const [ca, cert, key] = files;
  const tunnel = ca && cert && key ? { ca: ca.value, cert: cert.value, key: key.value, listen, relays } : undefined;
  return { nodeName, directCidrs, tunnel };
}

const reason = (e: unknown): string => (e instanceof NetParseError || e instanceof Error ? e.message : String(e));

/** Parses `edgemesh-agent <command> [flags]` (argv without node and the script). env defaults to process.env. */
export function parseArgs(argv: readonly string[], options: { env?: Env; readFile?: (path: string) => string; hostname?: () => string } = {}): ParsedArgs {
  const { command, layer, helpFor } = parseArgv(argv);
  if (command === 'help') return { command: 'help', help: helpText(helpFor) };
  if (command === 'version') return { command: 'version' };
  const values: Record<string, unknown> = {};
  const origins: Record<string, string> = {};
  for (const [k, v] of layer) {
    values[k] = v.value;
    origins[k] = v.origin;
  }
  const warnings: string[] = [];
  const load: LoadOptions = { command, values, origins, warnings };
  if (options.env) load.env = options.env;
  if (options.readFile) load.readFile = options.readFile;
  if (options.hostname) load.hostname = options.hostname;
  return { command, config: loadConfig(load), warnings };
}

/** `--help`, generated from the option table. Without a command: the overview. */
export function helpText(command?: Command): string {
  const lines: string[] = [];
  if (!command) {
    lines.push('Usage: edgemesh-agent <command> [flags]', '', 'Commands:');
    lines.push('  run      keep EDGE-MESH ahead of kube-proxy and proxy service traffic');
    lines.push('  status   our chains and jumps, iptables -nvL style, with counters');
    lines.push('  cleanup  remove every rule, chain and table we own');
    lines.push('  demo     the whole hybrid NAT in a throwaway network namespace');
    lines.push('  certs    tunnel certificates: certs init (cluster CA), certs issue --node NAME');
    lines.push('', 'Run "edgemesh-agent <command> --help" for its flags; "edgemesh-agent --version" prints the version.');
    return lines.join('\n') + '\n';
  }
  lines.push(`Usage: edgemesh-agent ${command} [flags]`, '', 'Flags:');
  const opts = OPTIONS.filter((o) => o.commands.includes(command));
  const left = opts.map((o) => `  --${o.flag}${o.kind === 'bool' ? '' : ` ${o.kind === 'enum' ? (o.values ?? []).join('|') : o.arg ?? 'VALUE'}`}${o.repeat ? ' (repeatable)' : ''}`);
  const width = 36;
  opts.forEach((o, i) => {
    const extra: string[] = [];
    if (o.default !== undefined || o.defaultText !== undefined) extra.push(`default ${o.defaultText ?? o.default}`);
    if (o.env) extra.push(`env ${o.env}`);
    const text = `${o.help}${extra.length ? ` (${extra.join('; ')})` : ''}`;
    const l = left[i] as string;
    if (l.length < width) lines.push(`${l.padEnd(width)}${text}`);
    else lines.push(l, `${' '.repeat(width)}${text}`);
  });
  lines.push(
    '',
    'Durations: 250ms, 1s, 5m, 1h30m. Every flag has a --config file key: its name in camelCase',
    `(--service-cidr -> serviceCidr; lists as YAML lists), next to apiVersion: ${CONFIG_API_VERSION} and`,
    `kind: ${CONFIG_KIND}. Precedence: flags, then environment, then the --config file, then defaults.`,
  );
  return lines.join('\n') + '\n';
}

/** For logs: the effective config in the config file's terms. */
export function describeConfig(c: AgentConfig): Record<string, unknown> {
  return {
    backend: c.backend,
    serviceCidr: c.serviceCidrs.map((x) => x.text),
    proxyAddr: c.proxyAddrs.map(formatHostPortText),
    source: c.source,
    endpointsApi: c.endpointsApi,
    metricsAddr: c.metricsAddr ? formatHostPortText(c.metricsAddr) : 'off',
    healthzAddr: c.healthzAddr ? formatHostPortText(c.healthzAddr) : 'off',
    once: c.once,
    minSyncPeriod: formatDuration(c.minSyncPeriodMs),
    syncPeriod: formatDuration(c.syncPeriodMs),
    orderCheckPeriod: formatDuration(c.orderCheckPeriodMs),
    orderBefore: c.orderBefore,
    strictManifests: c.strictManifests,
    lockWait: formatDuration(c.lockWaitMs),
    keepRulesOnExit: c.keepRulesOnExit,
    ignoreLabelSelector: c.selection.ignoreLabelSelectors.map((s) => s.text),
    serviceProxyName: c.selection.serviceProxyName,
    serviceProxyFilterMode: c.selection.serviceProxyFilterMode,
    logLevel: c.logLevel,
    ...(c.logFormat ? { logFormat: c.logFormat } : {}),
    maxConnections: c.maxConnections,
    connectTimeout: formatDuration(c.connectTimeoutMs),
    idleTimeout: formatDuration(c.idleTimeoutMs),
    drainGrace: formatDuration(c.drainGraceMs),
    relayMode: c.relayMode,
    nodeName: c.nodeName,
    directCidr: c.directCidrs.map((x) => x.text),
    tunnelListen: c.tunnel?.listen ? formatHostPortText(c.tunnel.listen) : 'none',
    ...(c.tunnel ? { tunnelCa: c.tunnel.ca, tunnelCert: c.tunnel.cert, tunnelKey: c.tunnel.key, tunnelRelay: c.tunnel.relays.map((r) => r.text) } : {}),
  };
}

/**
 * `--write-config-to`: the effective configuration as a --config file (what loadConfig reads back
 * to the same AgentConfig). The in-cluster source has no key: it is what no source key means.
 */
export function configFileText(c: AgentConfig): string {
  const { source, ...rest } = describeConfig(c);
  const body: Record<string, unknown> = { apiVersion: CONFIG_API_VERSION, kind: CONFIG_KIND };
  const s = source as SourceConfig;
  if (s.kind === 'static') body.servicesDir = s.dir;
  else if (s.kind === 'kubeconfig') body.kubeconfig = s.file;
  else if (s.kind === 'api-server') {
    body.apiServer = s.url;
    if (s.ca !== undefined) body.apiServerCa = s.ca;
    if (s.cert !== undefined) body.apiServerCert = s.cert;
    if (s.key !== undefined) body.apiServerKey = s.key;
  }
  Object.assign(body, rest);
  // An empty name means "any value" and is only valid without a filter; the default says so.
  if (c.selection.serviceProxyName === '') delete body.serviceProxyName;
  // A conditional default: with the tunnel 0.0.0.0:20006, without it none.
  if (!c.tunnel) delete body.tunnelListen;
  const header = '# Written by edgemesh-agent --write-config-to: the effective configuration (flags, environment,\n# --config file and defaults merged). Read it back with --config.\n';
  return header + yaml().stringify(body, { lineWidth: 0 });
}
