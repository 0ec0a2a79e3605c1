// The seed's monitoring example (seed/hybrid-nat.en.md), loaded through the static source.
import { describe, expect, it } from 'vitest';
import { desiredRuleSets } from '../../src/intent/desired.js';
import { renderRuleSet, EDGE_MESH_CHAIN } from '../../src/netfilter/rules.js';
import { loadDir, SEED_CONFIG, SEED_MONITORING_DIR } from '../helpers/sources.js';

// The 13 RETURN rules of the seed's listing, (destination, comment), in the seed's order.
const SEED_IGNORES: [string, string][] = [
  ['10.244.3.58', 'monitoring/prometheus-operator'],
  ['10.10.120.87', 'monitoring/prometheus-k8s'],
  ['10.10.250.210', 'monitoring/grafana'],
  ['10.10.212.0', 'monitoring/prometheus-adapter'],
  ['192.168.132.38', 'monitoring/node-exporter'],
  ['192.168.132.37', 'monitoring/node-exporter'],
  ['192.168.132.26', 'monitoring/node-exporter'],
  ['192.168.132.21', 'monitoring/node-exporter'],
  ['192.168.132.19', 'monitoring/node-exporter'],
  ['10.244.3.61', 'monitoring/kube-state-metrics'],
  ['10.10.161.16', 'monitoring/alertmanager-main'],
  ['10.10.0.3', 'kube-system/coredns'],
  ['10.10.0.1', 'default/kubernetes'],
];

const GOLDEN = `:EDGE-MESH-TCP - [0:0]
:EDGE-MESH - [0:0]
-I PREROUTING -m comment --comment "edgemesh root chain" -j EDGE-MESH
-I OUTPUT -m comment --comment "edgemesh root chain" -j EDGE-MESH
-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination 169.254.96.16:40001
-A EDGE-MESH -d 10.10.0.1/32 -m comment --comment "ignore default/kubernetes service" -j RETURN
-A EDGE-MESH -d 10.10.0.3/32 -m comment --comment "ignore kube-system/coredns service" -j RETURN
-A EDGE-MESH -d 10.10.161.16/32 -m comment --comment "ignore monitoring/alertmanager-main service" -j RETURN
-A EDGE-MESH -d 10.10.250.210/32 -m comment --comment "ignore monitoring/grafana service" -j RETURN
-A EDGE-MESH -d 10.244.3.61/32 -m comment --comment "ignore monitoring/kube-state-metrics service" -j RETURN
-A EDGE-MESH -d 192.168.132.19/32 -m comment --comment "ignore monitoring/node-exporter service" -j RETURN
-A EDGE-MESH -d 192.168.132.21/32 -m comment --comment "ignore monitoring/node-exporter service" -j RETURN
-A EDGE-MESH -d 192.168.132.26/32 -m comment --comment "ignore monitoring/node-exporter service" -j RETURN
-A EDGE-MESH -d 192.168.132.37/32 -m comment --comment "ignore monitoring/node-exporter service" -j RETURN
-A EDGE-MESH -d 192.168.132.38/32 -m comment --comment "ignore monitoring/node-exporter service" -j RETURN
-A EDGE-MESH -d 10.10.212.0/32 -m comment --comment "ignore monitoring/prometheus-adapter service" -j RETURN
-A EDGE-MESH -d 10.10.120.87/32 -m comment --comment "ignore monitoring/prometheus-k8s service" -j RETURN
-A EDGE-MESH -d 10.244.3.58/32 -m comment --comment "ignore monitoring/prometheus-operator service" -j RETURN
-A EDGE-MESH -d 10.10.0.0/16 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP
`;

describe('seed monitoring example through the static source', () => {
  it('loads every fixture file without error and is synced', async () => {
    const errors: string[] = [];
    const store = await loadDir(SEED_MONITORING_DIR, errors);
    expect(errors).toEqual([]);
    expect(store.synced).toBe(true);
    expect(store.snapshot().services.size).toBe(11);
  });

  it('yields exactly the seed 13 ignore rules (as a set) and the proxy rule last', async () => {
    const store = await loadDir(SEED_MONITORING_DIR);
    const { sets, counts } = desiredRuleSets(store.snapshot(), SEED_CONFIG);
    const v4 = sets.ipv4;
    expect(v4).toBeDefined();
    expect(sets.ipv6).toBeUndefined();
    const root = v4!.chains.find((c) => c.name === EDGE_MESH_CHAIN)!.rules;
    const returns = root.filter((r) => r.target === 'RETURN').map((r) => `${r.dst} ${r.comment}`);
    const expected = SEED_IGNORES.map(([ip, who]) => `${ip}/32 ignore ${who} service`);
    expect(new Set(returns)).toEqual(new Set(expected));
    expect(returns).toHaveLength(13);
    expect(root).toHaveLength(14);
    expect(root[13]).toEqual({ dst: '10.10.0.0/16', protocol: 'tcp', comment: 'tcp service proxy', target: 'EDGE-MESH-TCP' });
    expect(counts).toEqual({ watched: 11, ignored: 9, proxied: 2, none: 0 });
  });

  it('renders the golden iptables-save text in our deterministic order', async () => {
    const store = await loadDir(SEED_MONITORING_DIR);
    expect(renderRuleSet(desiredRuleSets(store.snapshot(), SEED_CONFIG).sets.ipv4!)).toBe(GOLDEN);
  });
});
