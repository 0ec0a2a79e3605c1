// The typed rule model shared by every backend, the desired state and the diff, and its
// rendering in iptables-save syntax (for logs, `status` and golden-text tests).

export type Family = 'ipv4' | 'ipv6';
export type Protocol = 'tcp' | 'udp';

/** Names of what the agent owns (DESIGN "Rule layout" [contract]). */
export const EDGE_MESH_CHAIN = 'EDGE-MESH';
export const EDGE_MESH_TCP_CHAIN = 'EDGE-MESH-TCP';
export const ROOT_COMMENT = 'edgemesh root chain';
export const TCP_PROXY_COMMENT = 'tcp service proxy';
export const DNAT_COMMENT = 'edgemesh tcp proxy';
export const JUMP_CHAINS = ['PREROUTING', 'OUTPUT'] as const;
export type JumpChain = (typeof JUMP_CHAINS)[number];
export const OWNED_CHAINS = [EDGE_MESH_CHAIN, EDGE_MESH_TCP_CHAIN] as const;
/**
 * The chains that DNAT Service traffic (kube-proxy's, iptables and userspace modes): our jump
 * must come before every jump to them in PREROUTING and OUTPUT (`--order-before`). `*` in the
 * list stands for every other rule: strict rule 1.
 */
export const DEFAULT_ORDER_BEFORE = ['KUBE-SERVICES', 'KUBE-PORTALS-CONTAINER', 'KUBE-PORTALS-HOST', 'KUBE-NODEPORTS'] as const;
export const ORDER_BEFORE_ANY = '*';

export const ignoreComment = (namespace: string, name: string): string => `ignore ${namespace}/${name} service`;

/**
 * One rule. Addresses are CIDRs in canonical form ("10.10.0.3/32", "fd00::/64"); a rule with
 * none of src/dst/protocol matches everything. `target` is a chain name or RETURN/ACCEPT/DROP/DNAT.
 */
export interface Rule {
  src?: string;
  dst?: string;
  protocol?: Protocol;
  comment?: string;
  target: string;
  /** Only with target DNAT. */
  toDestination?: { address: string; port?: number };
  /**
   * The destination address is looked up in this set of our table (`ip daddr @set`); exclusive
   * with dst. Only the nftables backend writes it (its ignore set); the iptables backends refuse it.
   */
  dstSet?: string;
}

export interface Counters {
  packets: number;
  bytes: number;
}

/** A rule as read from the kernel. */
export interface LiveRule extends Rule, Counters {
  /**
   * Names of matches or options the backend read but does not model (e.g. "conntrack",
   * "addrtype", "in-interface"). A rule with any is somebody else's by construction and never
   * equals a Rule we render.
   */
  unknown?: string[];
}

/** The desired content of everything we own in one family's nat table. */
export interface DesiredRuleSet {
  family: Family;
  /** Our chains with their exact contents, in creation order (a chain before the chains that jump to it). */
  chains: { name: string; rules: Rule[] }[];
  /**
   * Jumps into our root chain, exactly once in each built-in chain: inserted at rule 1, and kept
   * ahead of every jump to a chain of `orderBefore` (moved back only when one is above it).
   */
  jumps: { chain: JumpChain; rule: Rule }[];
  /** Chains our jumps must precede; DEFAULT_ORDER_BEFORE when absent; `*`: every rule. */
  orderBefore?: readonly string[];
}

/** Two rules are the same rule when every modelled field is equal and the live one has nothing we do not model. */
export function sameRule(a: Rule | LiveRule, b: Rule | LiveRule): boolean {
  if ((a as LiveRule).unknown?.length || (b as LiveRule).unknown?.length) return false;
  return (
    a.target === b.target &&
    (a.src ?? '') === (b.src ?? '') &&
    (a.dst ?? '') === (b.dst ?? '') &&
    (a.dstSet ?? '') === (b.dstSet ?? '') &&
    (a.protocol ?? '') === (b.protocol ?? '') &&
    (a.comment ?? '') === (b.comment ?? '') &&
    (a.toDestination?.address ?? '') === (b.toDestination?.address ?? '') &&
    (a.toDestination?.port ?? 0) === (b.toDestination?.port ?? 0)
  );
}

/** Quotes a string as iptables-save does (xtables_save_string). */
export function saveString(value: string): string {
  if (/^[A-Za-z0-9_-]+$/.test(value)) return value;
  return `"${value.replace(/["\\']/g, (c) => `\\${c}`)}"`;
}

/** "ip:port", "[ip6]:port" or a bare address, as iptables prints --to-destination. */
export function formatHostPort(address: string, port?: number): string {
  const host = address.includes(':') && port !== undefined ? `[${address}]` : address;
  return port !== undefined ? `${host}:${port}` : host;
}

/** The rule in iptables-save syntax: `-A CHAIN -s .. -d .. -p tcp -m comment --comment ".." -j TARGET ..`. */
export function renderRule(chain: string, rule: Rule, verb: '-A' | '-I' | '-D' = '-A'): string {
  const parts = [verb, chain];
  if (rule.src) parts.push('-s', rule.src);
  if (rule.dst) parts.push('-d', rule.dst);
  // A set lookup in iptables' own notation (the ipset match), as `-d` is for one address.
  if (rule.dstSet) parts.push('-m', 'set', '--match-set', rule.dstSet, 'dst');
  if (rule.protocol) parts.push('-p', rule.protocol);
  const unknown = (rule as LiveRule).unknown;
  if (unknown?.length) parts.push(`[unmodelled: ${unknown.join(',')}]`);
  if (rule.comment !== undefined) parts.push('-m', 'comment', '--comment', saveString(rule.comment));
  parts.push('-j', rule.target);
  if (rule.target === 'DNAT' && rule.toDestination) {
    parts.push('--to-destination', formatHostPort(rule.toDestination.address, rule.toDestination.port));
  }
  return parts.join(' ');
}

/** Whole desired state in iptables-save syntax (chain declarations, then rules), for golden tests and logs. */
export function renderRuleSet(set: DesiredRuleSet): string {
  const lines: string[] = [];
  for (const c of set.chains) lines.push(`:${c.name} - [0:0]`);
  for (const j of set.jumps) lines.push(renderRule(j.chain, j.rule, '-I'));
  for (const c of set.chains) for (const r of c.rules) lines.push(renderRule(c.name, r));
  return lines.join('\n') + '\n';
}

/** The jump into our root chain that sits at rule 1 of PREROUTING and OUTPUT. */
export const ROOT_JUMP_RULE: Readonly<Rule> = Object.freeze({ comment: ROOT_COMMENT, target: EDGE_MESH_CHAIN });
