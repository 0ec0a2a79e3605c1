// `auto`: which backend fits this node, decided from where kubelet and kube-proxy keep their
// rules, as kubernetes-sigs/iptables-wrappers decides between iptables-nft and -legacy, plus
// kube-proxy's nftables mode. Returns the decision with the reasons (for the log).
//
// Order of evidence:
//  1. kube-proxy in nftables mode (an `ip kube-proxy` / `ip6 kube-proxy` nft table) -> `nftables`.
//     kubelet keeps creating its iptables hint chain in that mode, so this check comes first.
//  2. Kubernetes rules (KUBE-SERVICES in the nat table) in exactly one iptables flavour -> it.
//     In both (split brain): a loud warning naming both; kubelet's KUBE-IPTABLES-HINT (mangle)
//     decides; with no single hint, the flavour with more KUBE-SERVICES rules, then nft.
//  3. No kube-proxy rules: kubelet's hint, iptables-nft first, then legacy (iptables-wrappers).
//  4. Nothing at all: `iptables-nft`. Like iptables-wrappers' default: current distributions
//     ship iptables on nftables, a kube-proxy started later in iptables mode will most likely use
//     it, and unlike legacy it does not register x_tables hooks on a node that has none.
//
// Legacy tables are read only when /proc/net/ip_tables_names (ip6_tables_names) lists them:
// opening a legacy table that does not exist would instantiate it and register its hooks,
// which changes which NAT chain wins on an nft node.
import { spawn } from 'node:child_process';
import { nativeCall } from '../errors.js';
import { native } from '../native/load.js';
import { netnsPath } from '../netns-path.js';
import type { Family } from './rules.js';
import type { BackendName } from './types.js';

export interface LegacyTableDump {
  /** iptables-legacy-save style text of one existing legacy table. */
  (family: Family, table: 'nat' | 'mangle'): Promise<string>;
}

export interface DetectOptions {
  /** Network namespace: a path or a bare name (= /run/netns/NAME). Default: our own. */
  netns?: string;
  /** Families to look at; default both. */
  families?: readonly Family[];
  /**
   * Reads one existing legacy table (only ever called for tables listed in
   * /proc/net/ip{,6}_tables_names). Default: `iptables-legacy-save -t TABLE` (through nsenter
   * for another namespace).
   */
  legacyDump?: LegacyTableDump;
}

export interface FlavourEvidence {
  /** kubelet's KUBE-IPTABLES-HINT (or KUBE-KUBELET-CANARY) chain in mangle, per family. */
  hint: Family[];
  /** Rules in KUBE-SERVICES of the nat table, summed over families; -1: no such chain. */
  kubeServicesRules: number;
}

export interface Detection {
  backend: BackendName;
  /** Why, one line each, for the log. */
  reasons: string[];
  /** Loud problems (split brain), one line each. */
  warnings: string[];
  evidence: {
    legacyTables: Record<Family, string[]>;
    nftTables: string[];
    legacy: FlavourEvidence;
    nft: FlavourEvidence;
    kubeProxyNftTables: string[];
  };
}

const HINT_CHAINS = ['KUBE-IPTABLES-HINT', 'KUBE-KUBELET-CANARY'];

function defaultLegacyDump(netns: string | undefined): LegacyTableDump {
  return (family, table) =>
    new Promise((resolve, reject) => {
      const tool = family === 'ipv4' ? 'iptables-legacy-save' : 'ip6tables-legacy-save';
      const [cmd, args] = netns ? ['nsenter', [`--net=${netns}`, tool, '-t', table]] : [tool, ['-t', table]];
      const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
      child.on('close', (code) => {
        clearTimeout(timer);
        if (code === 0) resolve(out);
        else reject(new Error(`${tool} -t ${table} exited ${code}: ${err.trim()}`));
      });
    });
}

const procNames: Record<Family, string> = { ipv4: 'ip_tables_names', ipv6: 'ip6_tables_names' };

/** Legacy (x_tables) tables that exist, from /proc/net; never opens a table. */
export async function legacyTablesPresent(netns?: string): Promise<Record<Family, string[]>> {
  const path = netnsPath(netns);
  const out: Record<Family, string[]> = { ipv4: [], ipv6: [] };
  for (const f of ['ipv4', 'ipv6'] as const) {
    const text = await nativeCall(() => native().readProcNet(path, procNames[f]));
    out[f] = (text ?? '').split('\n').map((s) => s.trim()).filter(Boolean);
  }
  return out;
}

export async function detectBackend(opts: DetectOptions = {}): Promise<Detection> {
  const families = opts.families ?? (['ipv4', 'ipv6'] as const);
  const netns = netnsPath(opts.netns) || undefined;
  const legacyDump = opts.legacyDump ?? defaultLegacyDump(netns);
  const reasons: string[] = [];
  const warnings: string[] = [];

  const legacyTables = await legacyTablesPresent(netns);
  const tables = await nativeCall(() => native().nftListTables(netns));
  const nftTables = tables.map((t) => `${t.family} ${t.name}`);
  const kubeProxyNftTables = nftTables.filter((t) => t === 'ip kube-proxy' || t === 'ip6 kube-proxy');

  const legacy: FlavourEvidence = { hint: [], kubeServicesRules: -1 };
  const nft: FlavourEvidence = { hint: [], kubeServicesRules: -1 };
  for (const f of families) {
    const fam = f === 'ipv4' ? 'ip' : 'ip6';
    // iptables-nft: the ip/ip6 mangle and nat tables.
    if (nftTables.includes(`${fam} mangle`)) {
      const r = await nativeCall(() => native().nftRead({ netns, family: f, table: 'mangle', dialect: 'xt', chains: HINT_CHAINS, withRules: false }));
      if (r.chains.length > 0) nft.hint.push(f);
    }
    if (nftTables.includes(`${fam} nat`)) {
      const r = await nativeCall(() => native().nftRead({ netns, family: f, table: 'nat', dialect: 'xt', chains: ['KUBE-SERVICES'] }));
      const c = r.chains[0];
      if (c) nft.kubeServicesRules = Math.max(nft.kubeServicesRules, 0) + c.rules.length;
    }
    // legacy: only tables the kernel already has.
    if (legacyTables[f].includes('mangle')) {
      const text = await legacyDump(f, 'mangle');
      if (HINT_CHAINS.some((h) => new RegExp(`^:${h} `, 'm').test(text))) legacy.hint.push(f);
    }
    if (legacyTables[f].includes('nat')) {
      const text = await legacyDump(f, 'nat');
      if (/^:KUBE-SERVICES /m.test(text)) {
        legacy.kubeServicesRules = Math.max(legacy.kubeServicesRules, 0) + (text.match(/^-A KUBE-SERVICES /gm)?.length ?? 0);
      }
    }
  }
  const evidence = { legacyTables, nftTables, legacy, nft, kubeProxyNftTables };
  const describe = (name: string, e: FlavourEvidence) =>
    `${name}: ${e.kubeServicesRules >= 0 ? `KUBE-SERVICES with ${e.kubeServicesRules} rules` : 'no KUBE-SERVICES'}, ${
      e.hint.length ? `kubelet hint in mangle (${e.hint.join(', ')})` : 'no kubelet hint'
    }`;
  reasons.push(`legacy tables present: ${[...legacyTables.ipv4.map((t) => `ip ${t}`), ...legacyTables.ipv6.map((t) => `ip6 ${t}`)].join(', ') || 'none'}`);
  reasons.push(describe('iptables-legacy', legacy), describe('iptables-nft', nft));

  if (kubeProxyNftTables.length > 0) {
    reasons.push(`nft table ${kubeProxyNftTables.join(' and ')} exists: kube-proxy runs in nftables mode -> nftables`);
    if (legacy.kubeServicesRules > 0 || nft.kubeServicesRules > 0) {
      warnings.push(
        `kube-proxy rules found both in nftables mode (${kubeProxyNftTables.join(', ')}) and in iptables (${[
          legacy.kubeServicesRules > 0 ? `iptables-legacy KUBE-SERVICES ${legacy.kubeServicesRules} rules` : '',
          nft.kubeServicesRules > 0 ? `iptables-nft KUBE-SERVICES ${nft.kubeServicesRules} rules` : '',
        ]
          .filter(Boolean)
          .join(', ')}); the nftables backend runs before both (priority dstnat - 1)`,
      );
    }
    return { backend: 'nftables', reasons, warnings, evidence };
  }

  const legacyKube = legacy.kubeServicesRules >= 0;
  const nftKube = nft.kubeServicesRules >= 0;
  if (legacyKube && nftKube) {
    warnings.push(
      `SPLIT BRAIN: Kubernetes rules in BOTH iptables-legacy (KUBE-SERVICES ${legacy.kubeServicesRules} rules) and iptables-nft (KUBE-SERVICES ${nft.kubeServicesRules} rules); ` +
        `one of them is stale and its rules may win the race for new connections`,
    );
    const h = pickByHint(legacy, nft);
    if (h) {
      reasons.push(`split brain resolved by kubelet's hint: KUBE-IPTABLES-HINT is in ${h} only -> ${h}`);
      return { backend: h, reasons, warnings, evidence };
    }
    const backend: BackendName = legacy.kubeServicesRules > nft.kubeServicesRules ? 'iptables-legacy' : 'iptables-nft';
    reasons.push(`split brain without a single kubelet hint: the flavour with more KUBE-SERVICES rules (nft on a tie) -> ${backend}`);
    return { backend, reasons, warnings, evidence };
  }
  if (legacyKube || nftKube) {
    const backend: BackendName = legacyKube ? 'iptables-legacy' : 'iptables-nft';
    reasons.push(`kube-proxy's KUBE-SERVICES chain is in ${backend} -> ${backend}`);
    const other = legacyKube ? nft : legacy;
    if (other.hint.length) warnings.push(`kubelet's hint is in ${legacyKube ? 'iptables-nft' : 'iptables-legacy'} but kube-proxy's rules are in ${backend}`);
    return { backend, reasons, warnings, evidence };
  }
  if (nft.hint.length) {
    reasons.push('no kube-proxy rules; kubelet hint in iptables-nft -> iptables-nft');
    return { backend: 'iptables-nft', reasons, warnings, evidence };
  }
  if (legacy.hint.length) {
    reasons.push('no kube-proxy rules; kubelet hint in iptables-legacy -> iptables-legacy');
    return { backend: 'iptables-legacy', reasons, warnings, evidence };
  }
  reasons.push('no kube-proxy rules and no kubelet hint anywhere: default iptables-nft (as kubernetes-sigs/iptables-wrappers)');
  return { backend: 'iptables-nft', reasons, warnings, evidence };
}

function pickByHint(legacy: FlavourEvidence, nft: FlavourEvidence): BackendName | undefined {
  if (nft.hint.length && !legacy.hint.length) return 'iptables-nft';
  if (legacy.hint.length && !nft.hint.length) return 'iptables-legacy';
  return undefined;
}
