// The rule layout (docs/design.md, "Rule layout"): how a family's intent becomes rules. The
// iptables backends write it as it is here; the nftables backend takes the same proxy rules and
// writes the ignored addresses as the elements of one set instead of one RETURN each.
//
//   EDGE-MESH-TCP  -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination <proxy>
//   EDGE-MESH      -d <ip>/32 -m comment --comment "ignore <ns>/<name> service" -j RETURN   (per ignored IP)
//                  -d <service-cidr> -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP
//   PREROUTING/OUTPUT 1: -m comment --comment "edgemesh root chain" -j EDGE-MESH
import type { FamilyIntent, IgnoredAddress } from '../intent/desired.js';
import { familyBits } from '../net.js';
import { DNAT_COMMENT, EDGE_MESH_CHAIN, EDGE_MESH_TCP_CHAIN, ROOT_JUMP_RULE, TCP_PROXY_COMMENT, ignoreComment, type DesiredRuleSet, type Rule } from './rules.js';

/** EDGE-MESH-TCP's one rule: TCP to the proxy. */
export function dnatRule(intent: FamilyIntent): Rule {
  return { protocol: 'tcp', comment: DNAT_COMMENT, target: 'DNAT', toDestination: { address: intent.proxy.address, port: intent.proxy.port } };
}

/** EDGE-MESH's rules after the ignored addresses: TCP to a service CIDR goes to EDGE-MESH-TCP. */
export function serviceCidrRules(intent: FamilyIntent): Rule[] {
  return intent.serviceCidrs.map((c): Rule => ({ dst: c.text, protocol: 'tcp', comment: TCP_PROXY_COMMENT, target: EDGE_MESH_TCP_CHAIN }));
}

/** The host CIDR of an ignored address ("10.10.0.3/32", "fd00::3/128"). */
export const ignoredCidr = (a: IgnoredAddress): string => `${a.ip.text}/${familyBits(a.ip.family)}`;

/** The RETURN for one ignored address. */
export function ignoreRule(a: IgnoredAddress): Rule {
  return { dst: ignoredCidr(a), comment: ignoreComment(a.service), target: 'RETURN' };
}

/**
 * The intent as iptables chains: EDGE-MESH-TCP, then EDGE-MESH (a chain before the chains that
 * jump to it), and the jump into EDGE-MESH in PREROUTING and OUTPUT. `orderBefore`: the chains
 * our jump must precede (DEFAULT_ORDER_BEFORE when absent).
 */
export function iptablesRuleSet(intent: FamilyIntent, orderBefore?: readonly string[]): DesiredRuleSet {
  return {
    family: intent.family,
    chains: [
      { name: EDGE_MESH_TCP_CHAIN, rules: [dnatRule(intent)] },
      { name: EDGE_MESH_CHAIN, rules: [...intent.ignored.map(ignoreRule), ...serviceCidrRules(intent)] },
    ],
    jumps: [
      { chain: 'PREROUTING', rule: { ...ROOT_JUMP_RULE } },
      { chain: 'OUTPUT', rule: { ...ROOT_JUMP_RULE } },
    ],
    ...(orderBefore ? { orderBefore } : {}),
  };
}

/** Rules per chain of our layout, without rendering them (the edgemesh_rules gauge). */
export function layoutRuleCounts(intent: FamilyIntent): Record<typeof EDGE_MESH_TCP_CHAIN | typeof EDGE_MESH_CHAIN, number> {
  return { [EDGE_MESH_TCP_CHAIN]: 1, [EDGE_MESH_CHAIN]: intent.ignored.length + intent.serviceCidrs.length };
}
