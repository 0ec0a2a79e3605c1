// API objects (v1 Service, discovery.k8s.io/v1 EndpointSlice, v1 Endpoints, v1 Node) -> the normalized
// model. Applies the defaults the API server would have applied and rejects what would make a
// wrong rule: every error is a ConfigError naming the object and the field.
//
// Inputs are typed as the client library's models but are checked at runtime: manifests from a
// directory (and watch events, which the client does not deserialize) are plain JSON.
import type { V1EndpointSlice, V1Endpoints, V1Node, V1Service } from '@kubernetes/client-node';
import { ConfigError } from '../errors.js';
import type { EndpointInfo, EndpointPortInfo, EndpointSliceInfo, NodeInfo, ServiceInfo, ServicePortInfo } from './model.js';
import { NetParseError, parseHostPort, parseIp, type HostPort } from '../net.js';
import type { Family } from '../netfilter/rules.js';

export const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';
/** On a Node: "IP:PORT" (IPv6 "[addr]:port") of the tunnel listener of that node's agent. */
export const TUNNEL_ADDRESS_ANNOTATION = 'edgemesh.io/tunnel-address';
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;
const MAX_AFFINITY_TIMEOUT_SECONDS = 86400;

const PROTOCOLS = ['TCP', 'UDP', 'SCTP'] as const;
const SERVICE_TYPES = ['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'] as const;
const TRAFFIC_POLICIES = ['Cluster', 'Local'] as const;
/** IANA_SVC_NAME, as Kubernetes validates named target ports. */
const PORT_NAME = /^(?=.*[a-z])[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/;

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Builds errors that name the object ("Service monitoring/grafana") and the field path. */
class Ctx {
  constructor(readonly what: string) {}
  fail(field: string, problem: string): never {
    throw new ConfigError(`${this.what}: ${field}: ${problem}`, field);
  }
  str(v: unknown, field: string, opts: { required?: boolean } = {}): string | undefined {
    if (v === undefined || v === null) {
      if (opts.required) this.fail(field, 'required');
      return undefined;
    }
    if (typeof v !== 'string') this.fail(field, `must be a string, got ${JSON.stringify(v)}`);
    return v;
  }
  arr(v: unknown, field: string): unknown[] {
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v)) this.fail(field, 'must be a list');
    return v;
  }
  obj(v: unknown, field: string): Json {
    if (v === undefined || v === null) return {};
    if (!isObject(v)) this.fail(field, 'must be an object');
    return v;
  }
  bool(v: unknown, field: string): boolean | undefined {
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') this.fail(field, `must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }
  ip(v: unknown, field: string): { text: string; family: Family } {
    const s = this.str(v, field, { required: true }) as string;
    try {
      const p = parseIp(s);
      return { text: p.text, family: p.family };
    } catch (e) {
      this.fail(field, `"${s}": ${e instanceof NetParseError ? e.message : String(e)}`);
    }
  }
  port(v: unknown, field: string): number {
    if (typeof v !== 'number' || !Number.isInteger(v)) this.fail(field, `must be a port number, got ${JSON.stringify(v)}`);
    if (v < 1 || v > 65535) this.fail(field, `${v} out of range 1-65535`);
    return v;
  }
  protocol(v: unknown, field: string): 'TCP' | 'UDP' | 'SCTP' {
    const s = this.str(v, field) ?? 'TCP';
    if (!(PROTOCOLS as readonly string[]).includes(s)) this.fail(field, `"${s}" is not one of ${PROTOCOLS.join(', ')}`);
    return s as 'TCP' | 'UDP' | 'SCTP';
  }
  labels(v: unknown, field: string): Record<string, string> {
    const o = this.obj(v, field);
    const out: Record<string, string> = {};
    for (const k of Object.keys(o).sort()) {
      const val = o[k];
      if (typeof val !== 'string') this.fail(`${field}.${k}`, `label value must be a string, got ${JSON.stringify(val)}`);
      out[k] = val;
    }
    return out;
  }
}

/** namespace/name of an object, "default" when the namespace is omitted (as kubectl applies manifests). */
function identity(kind: string, obj: unknown): { ctx: Ctx; meta: Json; namespace: string; name: string } {
  if (!isObject(obj)) throw new ConfigError(`${kind}: not an object`, 'metadata');
  const pre = new Ctx(kind);
  const meta = pre.obj(obj.metadata, 'metadata');
  const name = pre.str(meta.name, 'metadata.name', { required: true }) as string;
  if (name === '') pre.fail('metadata.name', 'required');
  const namespace = pre.str(meta.namespace, 'metadata.namespace') || 'default';
  return { ctx: new Ctx(`${kind} ${namespace}/${name}`), meta, namespace, name };
}

export function convertService(svc: V1Service): ServiceInfo {
  const { ctx, meta, namespace, name } = identity('Service', svc);
  const spec = ctx.obj((svc as Json).spec, 'spec');
  const type = (ctx.str(spec.type, 'spec.type') ?? 'ClusterIP') as ServiceInfo['type'];
  if (!SERVICE_TYPES.includes(type)) ctx.fail('spec.type', `"${type}" is not one of ${SERVICE_TYPES.join(', ')}`);

  const clusterIP = ctx.str(spec.clusterIP, 'spec.clusterIP');
  const listed = ctx.arr(spec.clusterIPs, 'spec.clusterIPs').map((v, i) => ctx.str(v, `spec.clusterIPs[${i}]`, { required: true }) as string);
  if (clusterIP !== undefined && clusterIP !== '' && listed.length > 0 && listed[0] !== clusterIP) {
    ctx.fail('spec.clusterIPs[0]', `"${listed[0]}" must equal spec.clusterIP "${clusterIP}"`);
  }
  const raw = listed.length > 0 ? listed : clusterIP ? [clusterIP] : [];
  const field = listed.length > 0 ? 'spec.clusterIPs' : 'spec.clusterIP';
  const headless = raw[0] === 'None';
  const clusterIPs: string[] = [];
  if (type !== 'ExternalName') {
    if (headless && raw.length > 1) ctx.fail(field, '"None" cannot be combined with addresses');
    if (raw.length > 2) ctx.fail(field, 'at most two addresses (one per family)');
    const families = new Set<Family>();
    raw.forEach((v, i) => {
      if (v === 'None' || v === '') return;
      const ip = ctx.ip(v, listed.length > 0 ? `spec.clusterIPs[${i}]` : 'spec.clusterIP');
      if (families.has(ip.family)) ctx.fail(field, `two ${ip.family} addresses (dual-stack needs one per family)`);
      families.add(ip.family);
      clusterIPs.push(ip.text);
    });
  }

  const ports: ServicePortInfo[] = ctx.arr(spec.ports, 'spec.ports').map((p, i) => {
    const f = `spec.ports[${i}]`;
    const po = ctx.obj(p, f);
    const port = ctx.port(po.port, `${f}.port`);
    let targetPort: number | string = port;
    const tp = po.targetPort;
    if (typeof tp === 'number') targetPort = ctx.port(tp, `${f}.targetPort`);
    else if (typeof tp === 'string' && /^\d+$/.test(tp)) targetPort = ctx.port(Number(tp), `${f}.targetPort`);
    else if (typeof tp === 'string' && tp !== '') {
      if (!PORT_NAME.test(tp)) ctx.fail(`${f}.targetPort`, `"${tp}" is neither a port number nor a valid port name`);
      targetPort = tp;
    } else if (tp !== undefined && tp !== null && tp !== '') ctx.fail(`${f}.targetPort`, `must be a number or a name, got ${JSON.stringify(tp)}`);
    return { name: ctx.str(po.name, `${f}.name`) ?? '', protocol: ctx.protocol(po.protocol, `${f}.protocol`), port, targetPort };
  });

  const affinity = ctx.str(spec.sessionAffinity, 'spec.sessionAffinity') ?? 'None';
  if (affinity !== 'None' && affinity !== 'ClientIP') ctx.fail('spec.sessionAffinity', `"${affinity}" is not one of None, ClientIP`);
  let affinityTimeoutSeconds = DEFAULT_AFFINITY_TIMEOUT_SECONDS;
  const cfg = ctx.obj(ctx.obj(spec.sessionAffinityConfig, 'spec.sessionAffinityConfig').clientIP, 'spec.sessionAffinityConfig.clientIP');
  if (cfg.timeoutSeconds !== undefined && cfg.timeoutSeconds !== null) {
    const t = cfg.timeoutSeconds;
    const tf = 'spec.sessionAffinityConfig.clientIP.timeoutSeconds';
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > MAX_AFFINITY_TIMEOUT_SECONDS) {
      ctx.fail(tf, `must be an integer 1-${MAX_AFFINITY_TIMEOUT_SECONDS}, got ${JSON.stringify(t)}`);
    }
    affinityTimeoutSeconds = t as number;
  }
  const internalTrafficPolicy = ctx.str(spec.internalTrafficPolicy, 'spec.internalTrafficPolicy') ?? 'Cluster';
  if (!(TRAFFIC_POLICIES as readonly string[]).includes(internalTrafficPolicy)) {
    ctx.fail('spec.internalTrafficPolicy', `"${internalTrafficPolicy}" is not one of ${TRAFFIC_POLICIES.join(', ')}`);
  }

  return {
    namespace,
    name,
    labels: ctx.labels(meta.labels, 'metadata.labels'),
    type,
    clusterIPs,
    headless: type !== 'ExternalName' && headless,
    ports,
    sessionAffinity: affinity as 'None' | 'ClientIP',
    affinityTimeoutSeconds,
    internalTrafficPolicy: internalTrafficPolicy as ServiceInfo['internalTrafficPolicy'],
  };
}

function endpointPorts(ctx: Ctx, list: unknown, field: string, requirePort: boolean): EndpointPortInfo[] {
  const out: EndpointPortInfo[] = [];
  ctx.arr(list, field).forEach((p, i) => {
    const f = `${field}[${i}]`;
    const po = ctx.obj(p, f);
    // An EndpointSlice port without a number means "all ports": nothing a proxy can route to.
    if (!requirePort && (po.port === undefined || po.port === null)) return;
    out.push({ name: ctx.str(po.name, `${f}.name`) ?? '', protocol: ctx.protocol(po.protocol, `${f}.protocol`), port: ctx.port(po.port, `${f}.port`) });
  });
  return out;
}

export function convertEndpointSlice(slice: V1EndpointSlice): EndpointSliceInfo {
  const { ctx, meta, namespace, name } = identity('EndpointSlice', slice);
  const s = slice as unknown as Json;
  const labels = ctx.labels(meta.labels, 'metadata.labels');
  const serviceName = labels[SERVICE_NAME_LABEL] ?? '';
  if (!serviceName) ctx.fail(`metadata.labels.${SERVICE_NAME_LABEL}`, 'required (the service this slice belongs to)');
  const addressType = ctx.str(s.addressType, 'addressType', { required: true }) as string;
  if (addressType !== 'IPv4' && addressType !== 'IPv6' && addressType !== 'FQDN') ctx.fail('addressType', `"${addressType}" is not one of IPv4, IPv6, FQDN`);
  const want: Family | undefined = addressType === 'IPv4' ? 'ipv4' : addressType === 'IPv6' ? 'ipv6' : undefined;

  const endpoints: EndpointInfo[] = ctx.arr(s.endpoints, 'endpoints').map((e, i) => {
    const f = `endpoints[${i}]`;
    const eo = ctx.obj(e, f);
    const raw = ctx.arr(eo.addresses, `${f}.addresses`);
    if (raw.length === 0) ctx.fail(`${f}.addresses`, 'at least one address is required');
    const addresses = raw.map((a, j) => {
      const af = `${f}.addresses[${j}]`;
      if (!want) return ctx.str(a, af, { required: true }) as string;
      const ip = ctx.ip(a, af);
      if (ip.family !== want) ctx.fail(af, `"${ip.text}" is not an ${addressType} address (addressType ${addressType})`);
      return ip.text;
    });
    const cond = ctx.obj(eo.conditions, `${f}.conditions`);
    const ready = ctx.bool(cond.ready, `${f}.conditions.ready`) ?? true;
    const info: EndpointInfo = {
      addresses,
      ready,
      serving: ctx.bool(cond.serving, `${f}.conditions.serving`) ?? ready,
      terminating: ctx.bool(cond.terminating, `${f}.conditions.terminating`) ?? false,
    };
    const nodeName = ctx.str(eo.nodeName, `${f}.nodeName`);
    if (nodeName) info.nodeName = nodeName;
    return info;
  });

  return { namespace, name, serviceName, addressType: addressType as EndpointSliceInfo['addressType'], ports: endpointPorts(ctx, s.ports, 'ports', false), endpoints, source: 'EndpointSlice' };
}

/**
 * A v1 Endpoints object as slices: one per (subset, address family), named after the service.
 * `addresses` are ready; `notReadyAddresses` are neither ready nor serving.
 */
export function convertEndpoints(ep: V1Endpoints): EndpointSliceInfo[] {
  const { ctx, namespace, name } = identity('Endpoints', ep);
  const out: EndpointSliceInfo[] = [];
  ctx.arr((ep as unknown as Json).subsets, 'subsets').forEach((sub, i) => {
    const f = `subsets[${i}]`;
    const so = ctx.obj(sub, f);
    const ports = endpointPorts(ctx, so.ports, `${f}.ports`, true);
    const byFamily = new Map<Family, EndpointInfo[]>();
    const add = (list: unknown, field: string, ready: boolean): void => {
      ctx.arr(list, field).forEach((a, j) => {
        const ao = ctx.obj(a, `${field}[${j}]`);
        const ip = ctx.ip(ao.ip, `${field}[${j}].ip`);
        const info: EndpointInfo = { addresses: [ip.text], ready, serving: ready, terminating: false };
        const nodeName = ctx.str(ao.nodeName, `${field}[${j}].nodeName`);
        if (nodeName) info.nodeName = nodeName;
        const l = byFamily.get(ip.family) ?? [];
        l.push(info);
        byFamily.set(ip.family, l);
      });
    };
    add(so.addresses, `${f}.addresses`, true);
    add(so.notReadyAddresses, `${f}.notReadyAddresses`, false);
    for (const family of ['ipv4', 'ipv6'] as const) {
      const endpoints = byFamily.get(family);
      if (!endpoints) continue;
      out.push({ namespace, name, serviceName: name, addressType: family === 'ipv4' ? 'IPv4' : 'IPv6', ports, endpoints, source: 'Endpoints' });
    }
  });
  return out;
}

/**
 * A v1 Node: its name and the tunnel address its annotation gives. A bad annotation is not a bad
 * object (the node's endpoints are still dialled directly where they can be): `warn` gets a
 * one-line message naming the node and the value, and the node is kept without an address.
 */
export function convertNode(node: V1Node, warn: (message: string) => void): NodeInfo {
  if (!isObject(node)) throw new ConfigError('Node: not an object', 'metadata');
  const pre = new Ctx('Node');
  const meta = pre.obj(node.metadata, 'metadata');
  const name = pre.str(meta.name, 'metadata.name', { required: true }) as string;
  if (name === '') pre.fail('metadata.name', 'required');
  const ctx = new Ctx(`Node ${name}`);
  const raw = ctx.obj(meta.annotations, 'metadata.annotations')[TUNNEL_ADDRESS_ANNOTATION];
  const info: NodeInfo = { name };
  if (raw === undefined || raw === null) return info;
  const tunnelAddress = parseTunnelAddress(raw);
  if (typeof tunnelAddress === 'string') {
    warn(`Node ${name}: annotation ${TUNNEL_ADDRESS_ANNOTATION} ${JSON.stringify(raw)}: ${tunnelAddress}; the node has no tunnel address`);
  } else info.tunnelAddress = tunnelAddress;
  return info;
}

/** The annotation's address, or the reason it is unusable. */
function parseTunnelAddress(raw: unknown): HostPort | string {
  if (typeof raw !== 'string') return 'must be a string';
  let hp: HostPort;
  try {
    hp = parseHostPort(raw.trim());
  } catch (e) {
    return e instanceof NetParseError ? e.message : String(e);
  }
  // Dialling these would reach this node itself, never the node's agent.
  const ip = parseIp(hp.address);
  const v4 = ip.family === 'ipv4' ? ip.value : ip.value >> 32n === 0xffffn ? ip.value & 0xffffffffn : undefined;
  if (ip.value === 0n || (ip.family === 'ipv6' && ip.value === 1n) || (v4 !== undefined && (v4 === 0n || v4 >> 24n === 127n))) {
    return 'an unspecified or loopback address is not a peer address';
  }
  return hp;
}
