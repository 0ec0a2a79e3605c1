// `edgemesh-agent demo` is the README's main job: it must run to completion and leave nothing.
import { execFileSync, spawnSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { CLI, assertBuilt } from '../helpers/agent.js';
import { describeNetns } from '../helpers/netns.js';

describeNetns('edgemesh-agent demo', () => {
  for (const backend of ['auto', 'iptables-nft', 'nftables'] as const) {
    it(`(--backend ${backend}) proxies the proxied services, leaves the ignored ones to kube-proxy, and leaves no namespace, interface or process behind`, () => {
      assertBuilt();
      const r = spawnSync(process.execPath, [CLI, 'demo', '--backend', backend], { encoding: 'utf8', timeout: 90_000 });
      expect(r.status, r.stdout + r.stderr).toBe(0);
      const out = r.stdout;
      expect(out).toMatch(/shop\/web \(proxied by edgemesh\)\s+10\.10\.0\.20:80 -> hello from web-1/);
      expect(out).toMatch(/shop\/web \(proxied by edgemesh\)\s+10\.10\.0\.20:80 -> hello from web-2/); // round-robin over both endpoints
      expect(out).toMatch(/kube-system\/coredns \(ignored: kube-proxy DNAT\)\s*10\.10\.0\.3:53 -> hello from coredns/);
      expect(out).toMatch(/edgemesh_proxy_connections_relayed_total 3/); // the two ignored calls never reached the proxy
      expect(out).toMatch(/agent exited 0; EDGE-MESH left in the table: no; edgemesh0 left: no/);
      if (backend === 'auto') expect(out).toMatch(/backend auto: iptables-legacy/);
      // nothing left: namespaces of that demo process, its backend servers
      const pid = /em-demonode-(\d+)-/.exec(out)?.[1];
      expect(pid).toBeDefined();
      const spaces = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
      expect(spaces).not.toContain(`-${pid}-`);
      const procs = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
      expect(procs).not.toMatch(/hello from ' \+ name/);
    });
  }
});
