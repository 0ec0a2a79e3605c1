// The desired rule set per family: a pure function of the cluster state and the config, in the
// DESIGN "Rule layout [contract]":
//
//   EDGE-MESH-TCP  -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination <proxy>
//   EDGE-MESH      -d <ip>/32 -m comment --comment "ignore <ns>/<name> service" -j RETURN   (per ignored IP)
//                  -d <service-cidr> -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP
//   PREROUTING/OUTPUT 1: -m comment --comment "edgemesh root chain" -j EDGE-MESH
//
// Ignore rules are sorted by namespace/name, then by address numerically, so an unchanged state
// renders identical rules. An ignored address outside the service CIDR (a headless service's pod
// IPs) still gets its RETURN, as in the seed.
import type { ClusterState, ServiceInfo } from '../cluster/model.js';
import { hostCidr, parseIp, type HostPort, type ParsedCidr, type ParsedIp } from '../net.js';
import type { DesiredRuleSet, Family, Rule } from '../netfilter/rules.js';
import { DNAT_COMMENT, EDGE_MESH_CHAIN, EDGE_MESH_TCP_CHAIN, ROOT_COMMENT, TCP_PROXY_COMMENT, ignoreComment } from '../netfilter/rules.js';
import { selectService, type SelectionConfig } from './selection.js';

export interface DesiredConfig {
  /** Parsed service CIDRs; a family gets a rule set only when it has one. */
  serviceCidrs: readonly ParsedCidr[];
  /** One proxy address per family that has a service CIDR. */
  proxyAddrs: readonly HostPort[];
  selection: SelectionConfig;
}

export interface SelectionCounts {
  /** Every service in the state. */
  watched: number;
  ignored: number;
  proxied: number;
  /** ExternalName, without cluster IP, or headless and not ignored. */
  none: number;
}

export interface DesiredResult {
  sets: Partial<Record<Family, DesiredRuleSet>>;
  counts: SelectionCounts;
}

const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];
const cmp = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

/** The addresses a service is ignored by: its cluster IPs, or (headless) its endpoint addresses. */
export function ignoredAddresses(svc: ServiceInfo, state: ClusterState): ParsedIp[] {
  const raw: string[] = [];
  if (svc.headless) {
    for (const slice of state.slices.get(`${svc.namespace}/${svc.name}`) ?? []) {
      if (slice.addressType === 'FQDN') continue;
      // Every address, ready or not: a RETURN for a not-ready pod is harmless and keeps the
      // rules still while readiness flaps.
      for (const ep of slice.endpoints) raw.push(...ep.addresses);
    }
  } else {
    raw.push(...svc.clusterIPs);
  }
  const seen = new Map<string, ParsedIp>();
  for (const a of raw) {
    const p = parseIp(a);
    seen.set(p.text, p);
  }
  return [...seen.values()].sort((a, b) => (a.family !== b.family ? (a.family === 'ipv4' ? -1 : 1) : a.value < b.value ? -1 : a.value > b.value ? 1 : 0));
}

export function desiredRuleSets(state: ClusterState, config: DesiredConfig): DesiredResult {
  const counts: SelectionCounts = { watched: 0, ignored: 0, proxied: 0, none: 0 };
  const ignores: Record<Family, Rule[]> = { ipv4: [], ipv6: [] };
  const services = [...state.services.values()].sort((a, b) => cmp(a.namespace, b.namespace) || cmp(a.name, b.name));
  for (const svc of services) {
    counts.watched++;
    const sel = selectService(svc, config.selection);
    if (sel.kind === 'none') {
      counts.none++;
      continue;
    }
    if (sel.kind === 'proxied') {
      counts.proxied++;
      continue;
    }
    counts.ignored++;
    for (const ip of ignoredAddresses(svc, state)) {
      ignores[ip.family].push({ dst: hostCidr(ip.text), comment: ignoreComment(svc.namespace, svc.name), target: 'RETURN' });
    }
  }

  const sets: Partial<Record<Family, DesiredRuleSet>> = {};
  for (const family of FAMILIES) {
    const cidrs = config.serviceCidrs.filter((c) => c.family === family);
    if (cidrs.length === 0) continue;
    const proxy = config.proxyAddrs.find((p) => p.family === family);
    if (!proxy) throw new Error(`desiredRuleSets: no proxy address of family ${family} (config validation should have refused this)`);
    const tcp: Rule[] = [{ protocol: 'tcp', comment: DNAT_COMMENT, target: 'DNAT', toDestination: { address: proxy.address, port: proxy.port } }];
    const root: Rule[] = [
      ...ignores[family],
      ...cidrs.map((c): Rule => ({ dst: c.text, protocol: 'tcp', comment: TCP_PROXY_COMMENT, target: EDGE_MESH_TCP_CHAIN })),
    ];
    const jump: Rule = { comment: ROOT_COMMENT, target: EDGE_MESH_CHAIN };
    sets[family] = {
      family,
      chains: [
        { name: EDGE_MESH_TCP_CHAIN, rules: tcp },
        { name: EDGE_MESH_CHAIN, rules: root },
      ],
      jumps: [
        { chain: 'PREROUTING', rule: { ...jump } },
        { chain: 'OUTPUT', rule: { ...jump } },
      ],
    };
  }
  return { sets, counts };
}
