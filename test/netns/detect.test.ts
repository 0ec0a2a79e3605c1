// `auto` detection against each kube-proxy flavour in its own namespace; detection must never
// instantiate a legacy table (that alone changes which NAT chain wins on an nft node).
import { afterAll, afterEach, expect, it } from 'vitest';
import { detectBackend, legacyTablesPresent } from '../../src/netfilter/detect.js';
import { describeNetns, destroyAllNetns, Netns } from '../helpers/netns.js';
import { loadKubeProxyIptables } from '../helpers/fixtures.js';
import { loadKubeProxyNftables } from '../helpers/nft-fixture.js';

describeNetns('auto backend detection', () => {
  let ns: Netns | undefined;
  afterEach(async () => {
    await ns?.destroy();
    ns = undefined;
  });
  afterAll(destroyAllNetns);

  const detect = async (n: Netns) => {
    const before = await legacyTablesPresent(n.path);
    const d = await detectBackend({ netns: n.path });
    expect(await legacyTablesPresent(n.path), 'detection created a legacy table').toEqual(before);
    return { d, legacy: before };
  };

  it('kube-proxy in iptables mode on legacy -> iptables-legacy', async () => {
    ns = await Netns.create('detleg');
    await loadKubeProxyIptables(ns, 'legacy');
    const { d, legacy } = await detect(ns);
    expect(legacy.ipv4).toContain('nat');
    expect(d.backend).toBe('iptables-legacy');
    expect(d.evidence.legacy.kubeServicesRules).toBeGreaterThan(5);
    expect(d.evidence.nft.kubeServicesRules).toBe(-1);
    expect(d.reasons.join('\n')).toMatch(/KUBE-SERVICES chain is in iptables-legacy -> iptables-legacy/);
    expect(d.warnings).toEqual([]);
  });

  it('the same rules loaded with iptables-nft-restore -> iptables-nft, and no legacy table appears', async () => {
    ns = await Netns.create('detnft');
    await loadKubeProxyIptables(ns, 'nft');
    const { d, legacy } = await detect(ns);
    expect(legacy).toEqual({ ipv4: [], ipv6: [] });
    expect(d.backend).toBe('iptables-nft');
    expect(d.evidence.nft.kubeServicesRules).toBeGreaterThan(5);
    expect(d.evidence.legacy.kubeServicesRules).toBe(-1);
    expect(d.reasons.join('\n')).toMatch(/KUBE-SERVICES chain is in iptables-nft -> iptables-nft/);
  });

  it("kube-proxy's nftables mode (table ip kube-proxy) -> nftables, even with kubelet's iptables hint", async () => {
    ns = await Netns.create('detnftab');
    await loadKubeProxyNftables(ns);
    await ns.run('iptables-nft', ['-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
    const { d, legacy } = await detect(ns);
    expect(legacy).toEqual({ ipv4: [], ipv6: [] });
    expect(d.backend).toBe('nftables');
    expect(d.evidence.kubeProxyNftTables).toEqual(['ip kube-proxy']);
    expect(d.reasons.join('\n')).toMatch(/ip kube-proxy exists: kube-proxy runs in nftables mode -> nftables/);
  });

  it('nothing at all -> iptables-nft by default, with the reason', async () => {
    ns = await Netns.create('detnone');
    const { d, legacy } = await detect(ns);
    expect(legacy).toEqual({ ipv4: [], ipv6: [] });
    expect(d.backend).toBe('iptables-nft');
    expect(d.reasons.at(-1)).toMatch(/default iptables-nft/);
  });

  it("no kube-proxy rules: kubelet's hint decides (legacy hint -> iptables-legacy)", async () => {
    ns = await Netns.create('dethint');
    await ns.run('iptables-legacy', ['-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
    const { d } = await detect(ns);
    expect(d.backend).toBe('iptables-legacy');
    expect(d.evidence.legacy.hint).toEqual(['ipv4']);
  });

  for (const hint of ['iptables-nft', 'iptables-legacy'] as const) {
    it(`split brain (Kubernetes rules in legacy and nft): a loud warning naming both; kubelet's hint in ${hint} decides`, async () => {
      ns = await Netns.create('detsplit');
      await loadKubeProxyIptables(ns, 'legacy');
      await loadKubeProxyIptables(ns, 'nft');
      await ns.run(hint, ['-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
      const { d } = await detect(ns);
      expect(d.backend).toBe(hint);
      expect(d.warnings.length).toBe(1);
      expect(d.warnings[0]).toMatch(/SPLIT BRAIN/);
      expect(d.warnings[0]).toMatch(/iptables-legacy \(KUBE-SERVICES \d+ rules\) and iptables-nft \(KUBE-SERVICES \d+ rules\)/);
      expect(d.reasons.join('\n')).toMatch(new RegExp(`kubelet's hint: KUBE-IPTABLES-HINT is in ${hint} only -> ${hint}`));
    });
  }
});
