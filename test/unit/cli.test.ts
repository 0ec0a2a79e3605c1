// The CLI as a child process (dist/src/cli.js): exit codes and the exact lines on stdout and
// stderr for --version, kube-proxy's flags, the versioned config file and --write-config-to.
// Nothing here touches a kernel table: every command ends at the configuration.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { assertBuilt, CLI } from '../helpers/agent.js';

const dir = mkdtempSync(join(tmpdir(), 'edgemesh-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

function cli(args: string[], env: NodeJS.ProcessEnv = {}) {
  assertBuilt();
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 20_000, env: { PATH: process.env.PATH, NODE_NAME: 'node-a', ...env } });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr, errLines: r.stderr.split('\n').filter((l) => l !== '') };
}
const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};
const V = 'apiVersion: edgemesh.io/v1alpha1\nkind: AgentConfiguration\n';

describe('edgemesh-agent CLI (child process)', () => {
  it('--version prints the package version and exits 0', () => {
    for (const args of [['--version'], ['run', '--version']]) {
      const r = cli(args);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`edgemesh-agent ${pkg.version}\n`);
      expect(r.stderr).toBe('');
    }
  });

  it.each([
    [['run', '--master', 'https://10.0.0.1:6443'], '--api-server'],
    [['run', '--iptables-sync-period', '30s'], '--sync-period'],
    [['run', '--iptables-min-sync-period', '1s'], '--min-sync-period'],
    [['run', '--proxy-mode', 'ipvs'], '--backend'],
    [['--cleanup'], 'the "cleanup" command'],
    [['run', '--hostname-override', 'n1'], '--node-name'],
    [['run', '--metrics-bind-address', '0.0.0.0:10249'], '--metrics-addr'],
    [['run', '--healthz-bind-address', '0.0.0.0:10256'], '--healthz-addr'],
  ])('kube-proxy flag %j: one line naming %s, exit 2', (args, hint) => {
    const r = cli(args);
    expect(r.code).toBe(2);
    expect(r.errLines).toHaveLength(1);
    expect(r.errLines[0]).toMatch(/^edgemesh-agent: /);
    expect(r.errLines[0]).toContain(`did you mean ${hint}`);
    expect(r.stdout).toBe('');
  });

  it('a config file with several mistakes: every one on its own line naming its key, exit 2', () => {
    const p = file('bad.yaml', 'apiVersion: edgemesh.io/v1beta1\nkind: AgentConfiguration\nservicesDir: /d\nsyncPeriod: soon\nserviceCidr: 10.0.0.0/99\nproxyMode: iptables\n');
    const r = cli(['run', '--config', p]);
    expect(r.code).toBe(2);
    expect(r.errLines).toEqual([
      `edgemesh-agent: ${p}: apiVersion "edgemesh.io/v1beta1": must be edgemesh.io/v1alpha1`,
      `edgemesh-agent: ${p}: syncPeriod "soon": not a duration (write e.g. 250ms, 1s, 5m, 1h30m)`,
      `edgemesh-agent: ${p}: serviceCidr "10.0.0.0/99": prefix length must be 0-32`,
      expect.stringMatching(new RegExp(`^edgemesh-agent: ${p}: proxyMode "iptables": "iptables" is a kube-proxy mode: did you mean --backend`)),
    ]);
  });

  it('a kube-proxy configuration file: one line naming the equivalent keys, exit 2', () => {
    const p = file('kube-proxy.yaml', 'apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: iptables\nclusterCIDR: 10.244.0.0/16\niptables:\n  syncPeriod: 30s\n');
    const r = cli(['run', '--config', p]);
    expect(r.code).toBe(2);
    expect(r.errLines).toHaveLength(1);
    expect(r.errLines[0]).toContain(`${p}: kind KubeProxyConfiguration is kube-proxy's configuration`);
    expect(r.errLines[0]).toContain('iptables.syncPeriod -> syncPeriod');
  });

  it('--write-config-to writes the effective configuration (deprecated names warned once, one line each) and exits 0; the file reads back to the same file', () => {
    const old = file('old.yaml', 'servicesDir: /srv/manifests\nproxyMode: copy\nsyncPeriod: 2m\n');
    const out1 = join(dir, 'effective.yaml');
    const r = cli(['run', '--config', old, '--service-cidr', '10.10.0.0/16,fd00:10::/108', '--proxy-addr', '169.254.96.16:40001,[fd00::16]:40001', '--write-config-to', out1], { EDGEMESH_LOG_LEVEL: 'warn' });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(`wrote the effective configuration to ${out1}\n`);
    expect(r.errLines).toEqual([
      expect.stringMatching(new RegExp(`^edgemesh-agent: warning: ${old}: no apiVersion and kind: deprecated`)),
      `edgemesh-agent: warning: ${old}: proxyMode: deprecated, use relayMode (kube-proxy's --proxy-mode means the backend)`,
    ]);
    const written = readFileSync(out1, 'utf8');
    expect(written).toMatch(/^apiVersion: edgemesh\.io\/v1alpha1$/m);
    expect(written).toMatch(/^kind: AgentConfiguration$/m);
    for (const line of ['servicesDir: /srv/manifests', 'relayMode: copy', 'syncPeriod: 2m', 'logLevel: warn', 'nodeName: node-a', '  - fd00:10::/108', 'healthzAddr: 0.0.0.0:10252']) expect(written).toContain(line);
    expect(written).not.toMatch(/^proxyMode:/m);
    const out2 = join(dir, 'again.yaml');
    const again = cli(['run', '--config', out1, '--write-config-to', out2]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toBe('');
    expect(readFileSync(out2, 'utf8')).toBe(written);
  });

  it('a versioned file is read without a warning (a bad value in it is still named, exit 2)', () => {
    const p = file('v.yaml', `${V}syncPeriod: 2m\nminSyncPeriod: 3m\n`);
    const r = cli(['run', '--config', p]);
    expect(r.code).toBe(2);
    expect(r.errLines.length).toBe(1);
    expect(r.errLines[0]).toMatch(/^edgemesh-agent: .*min-?[sS]ync-?[pP]eriod/);
    expect(r.errLines[0]).not.toMatch(/deprecat|apiVersion/);
  });
});
