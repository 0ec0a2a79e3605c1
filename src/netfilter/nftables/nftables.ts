// The nftables backend: tables of our own, `ip edgemesh` / `ip6 edgemesh`, with nat base chains
// on prerouting and output at priority dstnat - 1 (-101). Every type-nat chain on a hook feeds
// the same NAT core and the first chain that binds a new connection wins: at -101 ours run
// before kube-proxy's at -100 in every mode (iptables-legacy, iptables-nft, nftables), so no
// position has to be defended and a kube-proxy restart cannot overtake us. `return` lets a
// packet go on to kube-proxy.
//
// Layout: the DESIGN rule layout, except that the ignored addresses are the elements of one
// set, looked up by one rule, as kube-proxy's own nftables mode does for its service IPs. Each
// element keeps its own counter and comment ("ignore <ns>/<name> service"), so the listing
// still says which ignored service saw traffic:
//
//   table ip edgemesh {
//     set ignored { type ipv4_addr; counter;
//       elements = { 10.10.0.3 counter packets 0 bytes 0 comment "ignore kube-system/coredns service", ... } }
//     chain prerouting { type nat hook prerouting priority dstnat - 1; policy accept;
//       counter jump EDGE-MESH comment "edgemesh root chain" }
//     chain output     { type nat hook output priority dstnat - 1; policy accept;   (same) }
//     chain EDGE-MESH {
//       ip daddr @ignored counter return comment "ignored services"
//       ip daddr 10.10.0.0/16 meta l4proto tcp counter jump EDGE-MESH-TCP comment "tcp service proxy" }
//     chain EDGE-MESH-TCP { meta l4proto tcp counter dnat to 169.254.96.16:40001 comment "edgemesh tcp proxy" }
//   }
//
// Why a set: a new connection to a proxied service is classified by one hash lookup instead of
// a walk over every ignore rule, and a change writes set elements, which the kernel takes far
// faster than rules (a rule's expressions are parsed one by one; an element is a key). The
// iptables backends keep one rule per address: that is the DESIGN layout iptables lists.
import { EdgeMeshError, FamilyMismatchError, GenerationChangedError, nativeCall } from '../../errors.js';
import { native } from '../../native/load.js';
import { netnsPath } from '../../netns-path.js';
import { compareIps, memoCanonicalCidr, parseIp } from '../../net.js';
import { EDGE_MESH_CHAIN, JUMP_CHAINS, ROOT_COMMENT, formatHostPort, sameRule, type DesiredRuleSet, type Family, type JumpChain, type LiveRule, type Rule } from '../rules.js';
import { genToken } from '../iptables/iptables-nft.js';
import { withoutHostPrefix } from '../listing.js';
import type { NftBaseChain, NftChain, NftLiveRule, NftLiveSetElement, NftSet, NftSetElement } from '../../native/binding.js';
import type { CleanupOutcome, NatBackend, OrderState, StatusReport, SyncOutcome, TxOp } from '../types.js';

export const NFT_TABLE = 'edgemesh';
/** nf_tables priority of our nat base chains: NF_IP_PRI_NAT_DST (-100, "dstnat") - 1. */
export const NFT_PRIORITY = -101;
/** The set of ignored addresses in our table, and the comment of the rule that looks it up. */
export const NFT_IGNORE_SET = 'ignored';
export const IGNORE_SET_COMMENT = 'ignored services';
/** Our base chain for each hook chain of the rule layout. */
export const NFT_BASE_CHAINS: Record<JumpChain, NftBaseChain> = {
  PREROUTING: { name: 'prerouting', hook: 'prerouting', priority: NFT_PRIORITY },
  OUTPUT: { name: 'output', hook: 'output', priority: NFT_PRIORITY },
};

export interface NftablesBackendOptions {
  /** Network namespace: a path (/run/netns/NAME, /proc/PID/ns/net) or a bare name (= /run/netns/NAME). Default: the agent's own. */
  netns?: string;
  /** Table name (tests); default `edgemesh`. */
  table?: string;
  /** Reads and plans of one sync while somebody else keeps writing the ruleset in between (GenerationChangedError); default 5. */
  maxAttempts?: number;
}

const nftFamily = (f: Family): string => (f === 'ipv4' ? 'ip' : 'ip6');

export class NftablesBackend implements NatBackend {
  readonly name = 'nftables' as const;
  readonly family: Family;
  readonly table: string;
  private readonly netns: string;
  private readonly maxAttempts: number;

  constructor(family: Family, opts: NftablesBackendOptions = {}) {
    if (family !== 'ipv4' && family !== 'ipv6') throw new TypeError(`family must be 'ipv4' or 'ipv6', not ${String(family)}`);
    this.family = family;
    this.table = opts.table ?? NFT_TABLE;
    this.netns = netnsPath(opts.netns);
    this.maxAttempts = opts.maxAttempts ?? 5;
  }

  private readTable(chains?: readonly string[], sets: readonly string[] = []) {
    return nativeCall(() =>
      native().nftRead({ netns: this.netns, family: this.family, table: this.table, dialect: 'nft', sets, ...(chains ? { chains } : {}) }),
    );
  }

  /**
   * What the desired state means in our table: chain name -> exact rules, and the elements of
   * the ignore set. EDGE-MESH's leading RETURN rules for one address each become the set's
   * elements (the first rule of an address gives its comment) and one rule looking the set up.
   */
  private translate(desired: DesiredRuleSet): { chains: Map<string, Rule[]>; ignored: NftSetElement[] } {
    if (desired.family !== this.family) throw new FamilyMismatchError(desired.family, this.family);
    const want = new Map<string, Rule[]>();
    const ignored = new Map<string, NftSetElement>();
    for (const base of JUMP_CHAINS) want.set(NFT_BASE_CHAINS[base].name, []);
    for (const j of desired.jumps) want.get(NFT_BASE_CHAINS[j.chain].name)!.push(j.rule);
    for (const c of desired.chains) {
      if (want.has(c.name)) throw new EdgeMeshError('ECONFLICT', `chain name ${c.name} is reserved for a base chain of table ${this.table}`);
      if (c.name !== EDGE_MESH_CHAIN) {
        want.set(c.name, c.rules);
        continue;
      }
      let k = 0;
      for (; k < c.rules.length; k++) {
        const key = this.ignoreKey(c.rules[k]!);
        if (key === undefined) break;
        if (!ignored.has(key)) ignored.set(key, c.rules[k]!.comment === undefined ? { key } : { key, comment: c.rules[k]!.comment });
      }
      want.set(c.name, [{ dstSet: NFT_IGNORE_SET, comment: IGNORE_SET_COMMENT, target: 'RETURN' }, ...c.rules.slice(k)]);
    }
    return { chains: want, ignored: [...ignored.values()] };
  }

  /** The set element a rule is, when it is a RETURN for one destination address and nothing else. */
  private ignoreKey(r: Rule): string | undefined {
    if (r.target !== 'RETURN' || !r.dst || r.src || r.protocol || r.toDestination) return undefined;
    // Not an address of the family: left as a rule, and the addon names the problem.
    const c = memoCanonicalCidr(r.dst);
    return c && c.family === this.family && c.text.endsWith(this.family === 'ipv4' ? '/32' : '/128') ? c.text : undefined;
  }

  private baseChainOk(c: NftChain | undefined, spec: NftBaseChain): boolean {
    return !!c && c.base && c.hook === spec.hook && c.priority === spec.priority && c.type === 'nat';
  }

  /**
   * One read, one plan, one batch guarded by the read's generation id: when somebody else wrote
   * in between, nothing is written (GenerationChangedError) and we read and plan again, up to
   * maxAttempts times.
   */
  async sync(desired: DesiredRuleSet): Promise<SyncOutcome> {
    const t0 = performance.now();
    const { chains: want, ignored } = this.translate(desired);
    for (let attempt = 1; ; attempt++) {
      try {
        const out = await this.syncOnce(want, ignored, t0);
        // Batches refused because the ruleset changed under them count as attempts too.
        return out.apply ? { ...out, apply: { ...out.apply, attempts: out.apply.attempts + attempt - 1 } } : out;
      } catch (e) {
        if (e instanceof GenerationChangedError && attempt < this.maxAttempts) continue;
        throw e;
      }
    }
  }

  private async syncOnce(want: Map<string, Rule[]>, ignored: NftSetElement[], t0: number): Promise<SyncOutcome> {
    const live = await this.readTable(undefined, [NFT_IGNORE_SET]);
    // A set of that name in another shape (edited by hand, or another version's) is deleted and
    // created anew by the same batch, with the rules that look it up.
    const liveSet = live.sets.find((s) => s.name === NFT_IGNORE_SET);
    const byName = new Map(live.chains.map((c) => [c.name, c]));
    let added = 0;
    let removed = 0;
    let orderRepairs = 0;
    const ops: TxOp[] = [];
    let baseBad = false;
    for (const base of JUMP_CHAINS) {
      const spec = NFT_BASE_CHAINS[base];
      const c = byName.get(spec.name);
      if (!this.baseChainOk(c, spec)) baseBad = true;
      const jumps = want.get(spec.name)!;
      const ok = this.baseChainOk(c, spec) && sameRules(c!.rules, jumps);
      // A repair is putting back what someone changed; creating our table the first time is not one.
      if (!ok && jumps.length > 0 && live.tableExists) orderRepairs++;
    }
    for (const [name, rules] of want) {
      const c = byName.get(name);
      const liveRules = c ? c.rules : [];
      const baseSpec = Object.values(NFT_BASE_CHAINS).find((b) => b.name === name);
      const chainOk = c !== undefined && (baseSpec ? this.baseChainOk(c, baseSpec) : !c.base);
      if (chainOk && sameRules(liveRules, rules)) continue;
      const d = countDiff(chainOk ? liveRules : [], rules);
      added += d.added;
      removed += d.removed + (chainOk ? 0 : liveRules.length);
      ops.push({ op: 'replaceChain', chain: name, rules });
    }
    // Chains of our table that the desired state no longer has (residue of earlier layouts).
    const extra = live.chains.filter((c) => !want.has(c.name));
    for (const c of extra) {
      removed += c.rules.length;
      ops.push({ op: 'flushChain', chain: c.name });
    }
    for (const c of extra) ops.push({ op: 'deleteChain', chain: c.name });
    const setDiff = liveSet && !liveSet.ours ? { added: ignored.length, removed: liveSet.elements.length } : diffElements(liveSet?.elements ?? [], ignored);
    added += setDiff.added;
    removed += setDiff.removed;
    if (ops.length === 0 && !baseBad && live.tableExists && liveSet?.ours && setDiff.added + setDiff.removed === 0) {
      return { family: this.family, changed: false, added: 0, removed: 0, orderRepairs: 0, ops: [], durationMs: performance.now() - t0 };
    }
    const t1 = performance.now();
    const res = await nativeCall(() =>
      native().nftApply({
        netns: this.netns,
        family: this.family,
        table: this.table,
        dialect: 'nft',
        baseChains: JUMP_CHAINS.map((b) => NFT_BASE_CHAINS[b]),
        sets: [{ name: NFT_IGNORE_SET, elements: ignored }],
        ops,
        genid: live.genid,
      }),
    );
    return {
      family: this.family,
      changed: res.messages > 0,
      added,
      removed,
      orderRepairs,
      ops,
      ...(setDiff.added + setDiff.removed > 0 || !liveSet?.ours ? { sets: [{ name: NFT_IGNORE_SET, family: this.family, elements: ignored }] } : {}),
      apply: { attempts: res.attempts, lockWaitMs: 0, durationMs: performance.now() - t1, tokenAfter: genToken(res.genid) },
      durationMs: performance.now() - t0,
    };
  }

  async changeToken(): Promise<string> {
    return genToken(await nativeCall(() => native().nftGenId(this.netns)));
  }

  /**
   * Our chains run first by priority, not by position: "position 1" means our base chain exists
   * with the right hook and priority and its first rule is the jump into EDGE-MESH.
   */
  async checkOrder(): Promise<OrderState> {
    const names = JUMP_CHAINS.map((b) => NFT_BASE_CHAINS[b].name);
    const live = await this.readTable(names);
    const byName = new Map(live.chains.map((c) => [c.name, c]));
    const positions = { PREROUTING: 0, OUTPUT: 0 };
    for (const base of JUMP_CHAINS) {
      const spec = NFT_BASE_CHAINS[base];
      const c = byName.get(spec.name);
      if (!this.baseChainOk(c, spec)) continue;
      const idx = c!.rules.findIndex((r) => r.target === EDGE_MESH_CHAIN && r.comment === ROOT_COMMENT && !r.unknown?.length);
      positions[base] = idx >= 0 ? idx + 1 : 0;
    }
    return { family: this.family, positions, ok: positions.PREROUTING === 1 && positions.OUTPUT === 1 };
  }

  /** Deletes our table (one batch). removed: 1 when it existed. */
  async cleanup(): Promise<CleanupOutcome> {
    const gone = await nativeCall(() => native().nftDeleteTable(this.netns, this.family, this.table));
    return { family: this.family, backend: this.name, removed: gone ? 1 : 0 };
  }

  /** `nft list table`-like text of our table, with counters. */
  async status(): Promise<StatusReport> {
    const live = await this.readTable(undefined, [NFT_IGNORE_SET]);
    const order = await this.checkOrder();
    return {
      family: this.family,
      backend: this.name,
      present: live.tableExists,
      text: renderNftTable(this.family, this.table, live.tableExists, live.chains, live.sets),
      order,
    };
  }
}

function sameRules(live: readonly NftLiveRule[], want: readonly Rule[]): boolean {
  return live.length === want.length && live.every((r, i) => sameRule(r, want[i]!));
}

/** Elements added/removed between the live set and the wanted one (a changed comment is both). */
function diffElements(live: readonly NftLiveSetElement[], want: readonly NftSetElement[]): { added: number; removed: number } {
  const left = new Map(live.map((e) => [e.key, e]));
  let added = 0;
  for (const w of want) {
    const l = left.get(w.key);
    if (l && !l.unknown && (l.comment ?? '') === (w.comment ?? '')) {
      left.delete(w.key);
      continue;
    }
    added++;
  }
  return { added, removed: left.size };
}

/** Rules added/removed between two lists (multiset difference of modelled rules), O(n). */
function countDiff(live: readonly NftLiveRule[], want: readonly Rule[]): { added: number; removed: number } {
  const key = (r: Rule | NftLiveRule) =>
    (r as LiveRule).unknown?.length
      ? null
      : JSON.stringify([r.src ?? '', r.dst ?? '', r.dstSet ?? '', r.protocol ?? '', r.comment ?? '', r.target, r.toDestination?.address ?? '', r.toDestination?.port ?? 0]);
  const left = new Map<string, number>();
  let removed = 0;
  for (const r of live) {
    const k = key(r);
    if (k === null) removed++;
    else left.set(k, (left.get(k) ?? 0) + 1);
  }
  let added = 0;
  for (const w of want) {
    const k = key(w)!;
    const n = left.get(k) ?? 0;
    if (n > 0) left.set(k, n - 1);
    else added++;
  }
  for (const n of left.values()) removed += n;
  return { added, removed };
}

const quote = (s: string): string => `"${s.replace(/(["\\])/g, '\\$1')}"`;

/** Priority as nft 1.0 prints it for nat chains ("dstnat - 1" on prerouting, numbers elsewhere). */
function priorityText(p: number | undefined, hook: string | undefined): string {
  if (p === undefined) return '0';
  const names = hook === 'prerouting' ? ([['dstnat', -100]] as const) : hook === 'postrouting' ? ([['srcnat', 100]] as const) : [];
  for (const [name, base] of names) {
    const d = p - base;
    if (d === 0) return name;
    if (Math.abs(d) <= 10) return `${name} ${d < 0 ? '-' : '+'} ${Math.abs(d)}`;
  }
  return String(p);
}

/** One rule in nft syntax, as `nft list` prints our rules. */
export function renderNftRule(family: Family, r: NftLiveRule | LiveRule): string {
  const ip = family === 'ipv4' ? 'ip' : 'ip6';
  const addr = (c: string) => withoutHostPrefix(c, family);
  const parts: string[] = [];
  if (r.src) parts.push(`${ip} saddr ${addr(r.src)}`);
  if (r.dst) parts.push(`${ip} daddr ${addr(r.dst)}`);
  if (r.dstSet) parts.push(`${ip} daddr @${r.dstSet}`);
  if (r.protocol) parts.push(`meta l4proto ${r.protocol}`);
  if (r.unknown?.length) parts.push(`# unmodelled: ${r.unknown.join(', ')} #`);
  parts.push(`counter packets ${r.packets} bytes ${r.bytes}`);
  if (r.target === 'RETURN' || r.target === 'ACCEPT' || r.target === 'DROP') parts.push(r.target.toLowerCase());
  else if (r.target === 'DNAT' && r.toDestination) parts.push(`dnat to ${formatHostPort(r.toDestination.address, r.toDestination.port)}`);
  else if (r.target) parts.push(`jump ${r.target}`);
  if (r.comment !== undefined) parts.push(`comment ${quote(r.comment)}`);
  return parts.join(' ');
}

/** A set as `nft list` prints it, one element per line. */
function renderNftSet(family: Family, s: NftSet): string[] {
  const lines = [`\tset ${s.name} {`];
  if (s.ours) lines.push(`\t\ttype ${family === 'ipv4' ? 'ipv4_addr' : 'ipv6_addr'}`, '\t\tcounter');
  else lines.push(`\t\t# not the address set with counters this backend writes: key type ${s.keyType}, length ${s.keyLen}, flags ${s.flags}`);
  // Sorted by address, as nft lists them.
  const addr = (e: NftLiveSetElement) => withoutHostPrefix(e.key, family);
  const keyed = s.elements.map((e) => ({ e, ip: e.key ? parseIp(addr(e)) : undefined }));
  keyed.sort((a, b) => (a.ip && b.ip ? compareIps(a.ip, b.ip) : a.ip ? -1 : b.ip ? 1 : 0));
  const els = keyed.map(({ e }) => {
    const parts = [addr(e)];
    if (s.counter) parts.push(`counter packets ${e.packets} bytes ${e.bytes}`);
    if (e.comment !== undefined) parts.push(`comment ${quote(e.comment)}`);
    if (e.unknown) parts.push('# unmodelled parts #');
    return parts.join(' ');
  });
  if (els.length > 0) lines.push(`\t\telements = { ${els.join(',\n\t\t\t     ')} }`);
  lines.push('\t}');
  return lines;
}

export function renderNftTable(family: Family, table: string, exists: boolean, chains: readonly NftChain[], sets: readonly NftSet[] = []): string {
  if (!exists) return `# table ${nftFamily(family)} ${table} does not exist\n`;
  const lines = [`table ${nftFamily(family)} ${table} {`];
  sets.forEach((s, i) => {
    if (i > 0) lines.push('');
    lines.push(...renderNftSet(family, s));
  });
  chains.forEach((c, i) => {
    if (i > 0 || sets.length > 0) lines.push('');
    lines.push(`\tchain ${c.name} {`);
    if (c.base) lines.push(`\t\ttype ${c.type} hook ${c.hook} priority ${priorityText(c.priority, c.hook)}; policy ${c.policy};`);
    for (const r of c.rules) lines.push(`\t\t${renderNftRule(family, r)}`);
    lines.push('\t}');
  });
  lines.push('}');
  return lines.join('\n') + '\n';
}
