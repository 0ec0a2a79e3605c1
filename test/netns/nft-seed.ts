// The seed's example (hybrid-nat.en.md) as a DesiredRuleSet, the TxOps that write it into an
// iptables table, and the same as iptables CLI arguments: shared by the nft netns suites.
import { DNAT_COMMENT, EDGE_MESH_CHAIN, EDGE_MESH_TCP_CHAIN, ROOT_COMMENT, TCP_PROXY_COMMENT, ignoreComment, renderRule, type DesiredRuleSet, type Family, type Rule } from '../../src/netfilter/rules.js';
import type { TxOp } from '../../src/netfilter/types.js';

export interface SeedParams {
  ignores: { ip: string; namespace: string; name: string }[];
  cidr: string;
  proxy: { address: string; port: number };
}

export const SEED: Record<Family, SeedParams> = {
  ipv4: {
    ignores: [
      { ip: '10.10.0.3/32', namespace: 'kube-system', name: 'coredns' },
      { ip: '10.10.0.1/32', namespace: 'default', name: 'kubernetes' },
    ],
    cidr: '10.10.0.0/16',
    proxy: { address: '169.254.96.16', port: 40001 },
  },
  ipv6: {
    ignores: [
      { ip: 'fd00:10::3/128', namespace: 'kube-system', name: 'coredns' },
      { ip: 'fd00:10::1/128', namespace: 'default', name: 'kubernetes' },
    ],
    cidr: 'fd00:10::/64',
    proxy: { address: 'fd00:99::16', port: 40001 },
  },
};

export function desiredFor(family: Family, p: SeedParams = SEED[family]): DesiredRuleSet {
  const root: Rule = { comment: ROOT_COMMENT, target: EDGE_MESH_CHAIN };
  return {
    family,
    chains: [
      { name: EDGE_MESH_TCP_CHAIN, rules: [{ protocol: 'tcp', comment: DNAT_COMMENT, target: 'DNAT', toDestination: { ...p.proxy } }] },
      {
        name: EDGE_MESH_CHAIN,
        rules: [
          ...p.ignores.map((i): Rule => ({ dst: i.ip, comment: ignoreComment(i.namespace, i.name), target: 'RETURN' })),
          { dst: p.cidr, protocol: 'tcp', comment: TCP_PROXY_COMMENT, target: EDGE_MESH_TCP_CHAIN },
        ],
      },
    ],
    jumps: [
      { chain: 'PREROUTING', rule: root },
      { chain: 'OUTPUT', rule: root },
    ],
  };
}

/** The ops that write a DesiredRuleSet into a table that has none of it yet. */
export function opsFor(set: DesiredRuleSet): TxOp[] {
  return [
    ...set.chains.map((c): TxOp => ({ op: 'replaceChain', chain: c.name, rules: c.rules })),
    ...set.jumps.map((j): TxOp => ({ op: 'insertRule', chain: j.chain, rule: j.rule, position: 1 })),
  ];
}

/** The same state as iptables CLI invocations (arguments after `-t nat`), in the same order. */
export function cliFor(set: DesiredRuleSet): string[] {
  return [
    ...set.chains.map((c) => `-N ${c.name}`),
    ...set.chains.flatMap((c) => c.rules.map((r) => renderRule(c.name, r))),
    ...set.jumps.map((j) => renderRule(j.chain, j.rule, '-I').replace(/^-I (\S+)/, '-I $1 1')),
  ];
}
