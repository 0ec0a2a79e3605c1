// The basic example of the rule layout (default/kubernetes and kube-dns ignored, the service CIDR
// proxied), per family, as an intent and as its iptables rendering (a DesiredRuleSet), the TxOps
// that write it into an iptables table, and the same as iptables CLI arguments: shared by the nft
// netns suites.
import { renderRule, type DesiredRuleSet, type Family } from '../../src/netfilter/rules.js';
import { iptablesRuleSet } from '../../src/netfilter/layout.js';
import type { FamilyIntent } from '../../src/intent/desired.js';
import { parseCidr, parseIp } from '../../src/net.js';
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

/** The basic example as the intent of one family. */
export function intentFor(family: Family, p: SeedParams = SEED[family]): FamilyIntent {
  return {
    family,
    ignored: p.ignores.map((i) => ({ ip: parseIp(i.ip.slice(0, i.ip.indexOf('/'))), service: `${i.namespace}/${i.name}` })),
    serviceCidrs: [parseCidr(p.cidr)],
    proxy: { family, ...p.proxy },
  };
}

/** The same as the iptables backends render it. */
export function desiredFor(family: Family, p: SeedParams = SEED[family]): DesiredRuleSet {
  return iptablesRuleSet(intentFor(family, p));
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
