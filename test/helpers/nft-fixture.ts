// Loads kube-proxy's nftables-mode dump (NFTABLES_FIXTURE) with `nft -f`. The dump is the fake
// knftables Dump() order, in which a rule can `goto` an endpoint chain declared further down;
// nft 1.0.6 refuses such forward references ("Could not process rule: No such file or
// directory"). Declarations (table, chains, sets, maps) are therefore hoisted, in their
// original order, ahead of the rules and elements: the same objects, one transaction.
import type { Netns } from './netns.js';
import { NFTABLES_FIXTURE, readFixture } from './fixtures.js';

export function loadableNftFixture(text: string = readFixture(NFTABLES_FIXTURE)): string {
  const lines = text.split('\n').filter((l) => l.trim() !== '' && !l.trimStart().startsWith('#'));
  const isDecl = (l: string) => /^add (table|chain|set|map) /.test(l);
  return [...lines.filter(isDecl), ...lines.filter((l) => !isDecl(l))].join('\n') + '\n';
}

/** kube-proxy (nftables mode, IPv4) as it is after a full sync: table `ip kube-proxy`. */
export async function loadKubeProxyNftables(ns: Netns): Promise<void> {
  await ns.run('nft', ['-f', '-'], { input: loadableNftFixture() });
}
