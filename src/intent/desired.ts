// The intent per family: which addresses stay with kube-proxy (and for which service), which
// service CIDRs go to the proxy, and where the proxy listens. A pure function of the cluster state
// and the config, parsed once; plain data. Each backend renders it its own way (docs/design.md,
// "Rule layout"): the iptables backends as chains with one RETURN per ignored address
// (src/netfilter/layout.ts), the nftables backend as a set of those addresses and one rule that
// looks it up.
//
// Ignored addresses are sorted by service (namespace, then name), then by address numerically, so
// an unchanged state gives an identical intent. The addresses are the model's, parsed once at
// conversion. An ignored address outside the service CIDR (a headless service's pod IPs) is
// ignored all the same. One address ignored by two services is listed once per service.
import type { ClusterState, ServiceInfo, ServiceKey } from '../cluster/model.js';
import { compareIps, type HostPort, type ParsedCidr, type ParsedIp } from '../net.js';
import type { Family } from '../netfilter/rules.js';
import { selectAll, type SelectedService, type SelectionConfig } from './selection.js';

export interface DesiredConfig {
  /** Parsed service CIDRs; a family has an intent only when it has one. */
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

/** One address kube-proxy keeps, and the service it keeps it for. */
export interface IgnoredAddress {
  ip: ParsedIp;
  service: ServiceKey;
}

/** What one family's nat table must say. */
export interface FamilyIntent {
  family: Family;
  /** Sorted by service, then address; every address is of `family`. */
  ignored: readonly IgnoredAddress[];
  /** The service CIDRs of `family`, in configuration order: traffic to them goes to the proxy. */
  serviceCidrs: readonly ParsedCidr[];
  /** The proxy's address of `family`. */
  proxy: HostPort;
}

export interface Intent {
  /** One entry per family that has a service CIDR. */
  families: Partial<Record<Family, FamilyIntent>>;
  counts: SelectionCounts;
}

const FAMILIES: readonly Family[] = ['ipv4', 'ipv6'];

/** The addresses a service is ignored by: its cluster IPs, or (headless) its endpoint addresses. Sorted, deduplicated. */
export function ignoredAddresses(svc: ServiceInfo, state: ClusterState): ParsedIp[] {
  const raw: ParsedIp[] = [];
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
  for (const a of raw) seen.set(a.text, a);
  return [...seen.values()].sort(compareIps);
}

/** The intent from services already selected (selectAll's order: by namespace, then name). */
export function intentOf(selected: readonly SelectedService[], state: ClusterState, config: DesiredConfig): Intent {
  const counts: SelectionCounts = { watched: 0, ignored: 0, proxied: 0, none: 0 };
  const ignored: Record<Family, IgnoredAddress[]> = { ipv4: [], ipv6: [] };
  for (const { key, svc, selection } of selected) {
    counts.watched++;
    counts[selection.kind]++;
    if (selection.kind !== 'ignored') continue;
    for (const ip of ignoredAddresses(svc, state)) ignored[ip.family].push({ ip, service: key });
  }
  const families: Partial<Record<Family, FamilyIntent>> = {};
  for (const family of FAMILIES) {
    const serviceCidrs = config.serviceCidrs.filter((c) => c.family === family);
    if (serviceCidrs.length === 0) continue;
    const proxy = config.proxyAddrs.find((p) => p.family === family);
    if (!proxy) throw new Error(`desiredIntent: no proxy address of family ${family} (config validation should have refused this)`);
    families[family] = { family, ignored: ignored[family], serviceCidrs, proxy };
  }
  return { families, counts };
}

/** The intent of every family that has a service CIDR, with the selection counts. */
export function desiredIntent(state: ClusterState, config: DesiredConfig): Intent {
  return intentOf(selectAll(state, config.selection), state, config);
}
