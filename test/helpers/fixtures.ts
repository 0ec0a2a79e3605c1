// Real kube-proxy rule dumps (test/fixtures/kube-proxy/, from kube-proxy's own tests) loaded into a
// namespace, as kube-proxy writes them.
import { readFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Netns } from './netns.js';

const here = dirname(fileURLToPath(import.meta.url));

/** test/fixtures/kube-proxy; EDGEMESH_FIXTURES overrides it. */
export function fixturesDir(): string {
  const candidates = [process.env.EDGEMESH_FIXTURES, resolve(here, '..', 'fixtures', 'kube-proxy')].filter(
    (p): p is string => !!p,
  );
  for (const c of candidates) if (existsSync(join(c, 'kube-proxy-iptables-restore-TestOverallIPTablesRules.txt'))) return c;
  throw new Error(`kube-proxy fixtures not found; tried ${candidates.join(', ')}`);
}

export function readFixture(name: string): string {
  return readFileSync(join(fixturesDir(), name), 'utf8');
}

export const IPTABLES_RESTORE_FIXTURE = 'kube-proxy-iptables-restore-TestOverallIPTablesRules.txt';
export const IPTABLES_JUMPS_FIXTURE = 'kube-proxy-iptables-jump-rules.txt';
export const NFTABLES_FIXTURE = 'kube-proxy-nftables-TestOverallNFTablesRules.nft';

/**
 * Loads kube-proxy's iptables-mode rules into the namespace as kube-proxy does: the full-sync
 * restore (--noflush) and then its jump rules at position 1. `tool` picks legacy or nft.
 */
export async function loadKubeProxyIptables(ns: Netns, tool: 'legacy' | 'nft' = 'legacy', family: 'ipv4' | 'ipv6' = 'ipv4'): Promise<void> {
  await ns.sh('nfacct add ct_state_invalid_dropped_pkts; nfacct add localhost_nps_accepted_pkts', { allowFail: true });
  const restore = family === 'ipv4' ? `iptables-${tool}-restore` : `ip6tables-${tool}-restore`;
  let rules = readFixture(IPTABLES_RESTORE_FIXTURE);
  if (family === 'ipv6') rules = toIPv6Fixture(rules);
  await ns.run(restore, ['--noflush', '-w'], { input: rules });
  await ns.run(restore, ['--noflush', '-w'], { input: readFixture(IPTABLES_JUMPS_FIXTURE) });
}

/**
 * The IPv4 fixture translated to IPv6 addresses (kube-proxy's IPv6 instance writes the same
 * shape): 172.30.0.4x -> fd00:30::4x, 10.0.0.0/8 -> fd00:10::/64, others mapped likewise;
 * rules IPv6 cannot express (REJECT types) are kept with ip6tables' equivalents.
 */
export function toIPv6Fixture(v4: string): string {
  return v4
    .split('\n')
    .filter((l) => !l.includes('127.0.0.0/8')) // no IPv6 equivalent of the localnet rule
    .map((l) =>
      l
        .replace(/172\.30\.0\.(\d+)/g, 'fd00:30::$1')
        .replace(/10\.0\.0\.0\/8/g, 'fd00:10::/64')
        .replace(/10\.(\d+)\.(\d+)\.(\d+)/g, 'fd00:10::$1:$2:$3')
        .replace(/192\.168\.(\d+)\.(\d+)/g, 'fd00:192:168::$1:$2')
        .replace(/(\d+)\.(\d+)\.(\d+)\.(\d+)/g, 'fd00:99::$1:$2:$3:$4'),
    )
    .join('\n');
}
