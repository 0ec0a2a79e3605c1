import { describe, expect, it } from 'vitest';
import { configFileText, MAX_FILE_ERRORS, DEFAULT_HEALTHZ_ADDR, DEFAULT_METRICS_ADDR, DEFAULT_TUNNEL_LISTEN, describeConfig, helpText, loadConfig, OPTIONS, parseArgs, parseDuration, type AgentConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';

const files: Record<string, string> = {};
const readFile = (p: string): string => {
  const t = files[p];
  if (t === undefined) throw Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
  return t;
};
const HOST = () => 'Edge-Node-1.Example';
const run = (argv: string[], env: Record<string, string> = {}, hostname = HOST): AgentConfig => {
  const r = parseArgs(['run', ...argv], { env, readFile, hostname });
  if (!('config' in r)) throw new Error(`unexpected ${r.command}`);
  return r.config;
};
const error = (argv: string[], env: Record<string, string> = {}, hostname = HOST): string => {
  try {
    run(argv, env, hostname);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    const msg = (e as Error).message;
    expect(msg).not.toContain('\n');
    return msg;
  }
  throw new Error('no error');
};
const DIR = ['--services-dir', '/srv/manifests'];

describe('config: flags', () => {
  it('has the documented defaults', () => {
    const c = run(DIR);
    expect(c).toMatchObject({
      backend: 'auto',
      serviceCidrs: [{ text: '10.96.0.0/12', family: 'ipv4' }],
      proxyAddrs: [{ family: 'ipv4', address: '169.254.96.16', port: 40001 }],
      source: { kind: 'static', dir: '/srv/manifests' },
      metricsAddr: { address: '127.0.0.1', port: 10251 },
      healthzAddr: { address: '0.0.0.0', port: 10252 },
      once: false,
      minSyncPeriodMs: 1000,
      syncPeriodMs: 60_000,
      orderCheckPeriodMs: 1000,
      lockWaitMs: 5000,
      keepRulesOnExit: false,
      selection: { ignoreLabelSelectors: [], serviceProxyFilterMode: 'None', serviceProxyName: '' },
      logLevel: 'info',
      maxConnections: 10000,
      connectTimeoutMs: 1000,
      idleTimeoutMs: 1_800_000,
      drainGraceMs: 10_000,
      relayMode: 'splice',
      logFormat: undefined,
      configFile: undefined,
      writeConfigTo: undefined,
      nodeName: 'edge-node-1.example',
      directCidrs: [],
      tunnel: undefined,
    });
    expect(DEFAULT_METRICS_ADDR).toBe('127.0.0.1:10251');
  });

  it('parses every flag', () => {
    const c = run([
      '--backend', 'iptables-nft',
      '--service-cidr', '10.10.0.0/16',
      '--service-cidr=fd00:10::/108',
      '--proxy-addr', '169.254.96.16:40002',
      '--proxy-addr', '[fd00::96:16]:40001',
      '--kubeconfig', '/etc/kubeconfig',
      '--metrics-addr', '0.0.0.0:9100',
      '--once',
      '--min-sync-period', '250ms',
      '--sync-period', '5m',
      '--order-check-period', '1.5s',
      '--lock-wait', '0',
      '--keep-rules-on-exit=true',
      '--ignore-label-selector', 'tier=cloud',
      '--ignore-label-selector', 'app in (a,b)',
      '--service-proxy-name', 'edgemesh',
      '--service-proxy-filter-mode', 'FilterIfLabelDoesNotExists',
      '--log-level', 'debug',
      '--max-connections', '0',
      '--connect-timeout', '2s',
      '--idle-timeout', '1h30m',
      '--node-name', 'edge-1',
      '--direct-cidr', '10.244.0.0/16',
      '--direct-cidr', 'fd00:244::/64',
      '--tunnel-listen', '[fd00::1]:20007',
      '--tunnel-ca', '/etc/tunnel/ca.pem',
      '--tunnel-cert', '/etc/tunnel/cert.pem',
      '--tunnel-key', '/etc/tunnel/key.pem',
      '--tunnel-relay', '192.168.50.1:20006',
      '--tunnel-relay', 'relay.cloud.example:20006',
      '--tunnel-relay', '[fd00:50::1]:20006',
    ]);
    expect(c.nodeName).toBe('edge-1');
    expect(c.directCidrs.map((x) => x.text)).toEqual(['10.244.0.0/16', 'fd00:244::/64']);
    expect(c.tunnel).toEqual({
      ca: '/etc/tunnel/ca.pem',
      cert: '/etc/tunnel/cert.pem',
      key: '/etc/tunnel/key.pem',
      listen: { family: 'ipv6', address: 'fd00::1', port: 20007 },
      relays: [
        { host: '192.168.50.1', port: 20006, text: '192.168.50.1:20006' },
        { host: 'relay.cloud.example', port: 20006, text: 'relay.cloud.example:20006' },
        { host: 'fd00:50::1', port: 20006, text: '[fd00:50::1]:20006' },
      ],
    });
    expect(c.backend).toBe('iptables-nft');
    expect(c.serviceCidrs.map((x) => x.text)).toEqual(['10.10.0.0/16', 'fd00:10::/108']);
    expect(c.proxyAddrs.map((x) => `${x.family} ${x.address} ${x.port}`)).toEqual(['ipv4 169.254.96.16 40002', 'ipv6 fd00::96:16 40001']);
    expect(c.source).toEqual({ kind: 'kubeconfig', file: '/etc/kubeconfig' });
    expect(c.metricsAddr).toEqual({ family: 'ipv4', address: '0.0.0.0', port: 9100 });
    expect([c.once, c.keepRulesOnExit]).toEqual([true, true]);
    expect([c.minSyncPeriodMs, c.syncPeriodMs, c.orderCheckPeriodMs, c.lockWaitMs, c.connectTimeoutMs, c.idleTimeoutMs]).toEqual([250, 300_000, 1500, 0, 2000, 5_400_000]);
    expect(c.selection.ignoreLabelSelectors.map((s) => s.text)).toEqual(['tier=cloud', 'app in (a,b)']);
    expect(c.selection.serviceProxyFilterMode).toBe('FilterIfLabelDoesNotExists');
    expect(c.selection.serviceProxyName).toBe('edgemesh');
    expect([c.logLevel, c.maxConnections]).toEqual(['debug', 0]);
  });

  it('accepts --api-server with a plain URL and turns metrics off', () => {
    const c = run(['--api-server', 'http://127.0.0.1:10550', '--metrics-addr', 'off']);
    expect(c.source).toEqual({ kind: 'api-server', url: 'http://127.0.0.1:10550' });
    expect(c.metricsAddr).toBeUndefined();
  });

  it('rejects an --api-server that is not an http(s) URL', () => {
    expect(error(['--api-server', 'localhost:8080'])).toBe('--api-server "localhost:8080": scheme must be http or https');
    expect(error(['--api-server', 'not a url'])).toBe('--api-server "not a url": not a URL (e.g. http://127.0.0.1:10550)');
  });

  it('without a source flag: in-cluster config inside a pod (both service variables), else the MetaServer of an edge node', () => {
    expect(run([], { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }).source).toEqual({
      kind: 'in-cluster',
      why: 'no source flag; KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are set',
    });
    const edge = { kind: 'api-server', url: 'http://127.0.0.1:10550', why: 'no source flag and no in-cluster service variables (an edge node): KubeEdge MetaServer' };
    expect(run([]).source).toEqual(edge);
    // Half the variables is not a pod's environment.
    expect(run([], { KUBERNETES_SERVICE_HOST: '10.96.0.1' }).source).toEqual(edge);
    // Commands that read no cluster state still have none.
    const st = parseArgs(['status'], { env: {}, readFile, hostname: HOST });
    expect(st.command === 'status' && st.config.source).toEqual({ kind: 'none' });
  });

  it('--api-server-ca/-cert/-key: with an https --api-server, cert and key together, each readable', () => {
    files['/pki/ca.pem'] = 'CA';
    files['/pki/agent.pem'] = 'CERT';
    files['/pki/agent.key'] = 'KEY';
    const url = ['--api-server', 'https://10.0.0.1:10550'];
    expect(run([...url, '--api-server-ca', '/pki/ca.pem', '--api-server-cert', '/pki/agent.pem', '--api-server-key', '/pki/agent.key']).source).toEqual({
      kind: 'api-server', url: 'https://10.0.0.1:10550', ca: '/pki/ca.pem', cert: '/pki/agent.pem', key: '/pki/agent.key',
    });
    expect(run([...url, '--api-server-ca', '/pki/ca.pem']).source).toEqual({ kind: 'api-server', url: 'https://10.0.0.1:10550', ca: '/pki/ca.pem' });
    expect(error([...url, '--api-server-cert', '/pki/agent.pem'])).toBe('--api-server-cert "/pki/agent.pem": needs --api-server-key as well (a client certificate and its key go together)');
    expect(error([...url, '--api-server-key', '/pki/agent.key'])).toBe('--api-server-key "/pki/agent.key": needs --api-server-cert as well (a client certificate and its key go together)');
    expect(error([...url, '--api-server-ca', '/pki/missing.pem'])).toBe('--api-server-ca "/pki/missing.pem": unreadable: ENOENT');
    expect(error(['--api-server', 'http://10.0.0.1:10550', '--api-server-ca', '/pki/ca.pem'])).toBe('--api-server-ca "/pki/ca.pem": needs an https:// --api-server (got http://10.0.0.1:10550)');
    expect(error([...DIR, '--api-server-ca', '/pki/ca.pem'])).toBe('--api-server-ca "/pki/ca.pem": needs --api-server URL (it is for that source only)');
    expect(error(['--api-server-ca', '/pki/ca.pem'])).toBe('--api-server-ca "/pki/ca.pem": needs --api-server URL (it is for that source only)');
    // Part of the source group: a file's TLS keys give way with its apiServer to a --services-dir flag.
    files['/tls.yaml'] = 'apiServer: https://10.0.0.1:6443\napiServerCa: /pki/ca.pem\n';
    expect(run([...DIR, '--config', '/tls.yaml']).source).toEqual({ kind: 'static', dir: '/srv/manifests' });
  });

  it('--endpoints-api: auto by default, endpointslices or endpoints', () => {
    expect(run(DIR).endpointsApi).toBe('auto');
    expect(run([...DIR, '--endpoints-api', 'endpoints']).endpointsApi).toBe('endpoints');
    expect(error([...DIR, '--endpoints-api', 'slices'])).toBe('--endpoints-api "slices": must be one of auto, endpointslices, endpoints');
  });

  it.each<[string[], string]>([
    [['--service-cidr', '10.10.0.0/33'], '--service-cidr "10.10.0.0/33": prefix length must be 0-32'],
    [['--service-cidr', '10.10.0.0'], '--service-cidr "10.10.0.0": missing "/prefix-length"'],
    [['--service-cidr', '10.10.0.0/16', '--service-cidr', '10.10.0.0/16'], '--service-cidr "10.10.0.0/16": given twice'],
    [['--service-cidr', '10.10.0.0/16', '--service-cidr', '10.10.128.0/17'], '--service-cidr "10.10.128.0/17": overlaps 10.10.0.0/16'],
    [['--service-cidr', 'fd00::/108'], '--service-cidr "fd00::/108": no --proxy-addr of family ipv6 for this CIDR (write it [addr]:port)'],
    [['--proxy-addr', '[fd00::1]:40001'], '--proxy-addr "[fd00::1]:40001": no --service-cidr of family ipv6 to proxy'],
    [['--proxy-addr', '10.0.0.1:1', '--proxy-addr', '10.0.0.2:1'], '--proxy-addr "10.0.0.2:1": a second ipv4 proxy address (one per family)'],
    [['--proxy-addr', 'fd00::1:40001'], '--proxy-addr "fd00::1:40001": an IPv6 address must be written "[addr]:port"'],
    [['--proxy-addr', '10.0.0.1:99999'], '--proxy-addr "10.0.0.1:99999": port 99999 out of range 1-65535'],
    [['--backend', 'iptables'], '--backend "iptables": must be one of auto, iptables-legacy, iptables-nft, nftables'],
    [['--min-sync-period', '1'], '--min-sync-period "1": not a duration (write e.g. 250ms, 1s, 5m, 1h30m)'],
    [['--sync-period', '0'], '--sync-period "0": must be greater than 0'],
    [['--min-sync-period', '5s', '--sync-period', '2s'], '--min-sync-period "5s": must not exceed --sync-period (2s)'],
    [['--order-before', 'KUBE-SERVICES,'], '--order-before "KUBE-SERVICES,": chain name must not be empty'],
    [['--order-before', 'PREROUTING'], '--order-before "PREROUTING": PREROUTING is not a chain our jump can precede'],
    [['--order-before', 'A-CHAIN-NAME-FAR-TOO-LONG-FOR-XT'], '--order-before "A-CHAIN-NAME-FAR-TOO-LONG-FOR-XT": chain name "A-CHAIN-NAME-FAR-TOO-LONG-FOR-XT" is longer than 28 characters'],
    [['--max-connections', '-1'], '--max-connections "-1": must be a whole number'],
    [['--ignore-label-selector', 'a in ('], '--ignore-label-selector: label selector "a in (": missing ")"'],
    [['--service-proxy-name', 'edgemesh'], '--service-proxy-name "edgemesh": needs --service-proxy-filter-mode FilterIfLabelExists or FilterIfLabelDoesNotExists'],
    [['--service-proxy-filter-mode', 'Exists'], '--service-proxy-filter-mode "Exists": must be one of None, FilterIfLabelExists, FilterIfLabelDoesNotExists'],
    [['--metrics-addr', 'localhost:1'], '--metrics-addr "localhost:1": not an IPv4 address'],
    [['--kubeconfig', '/k'], '--services-dir and --kubeconfig are mutually exclusive (one source)'],
    [['--frobnicate'], 'unknown flag --frobnicate'],
    [['--once=maybe'], '--once "maybe": must be true or false'],
    [['--backend'], '--backend: missing value (auto|iptables-legacy|iptables-nft|nftables)'.replace(' (auto|iptables-legacy|iptables-nft|nftables)', ' (VALUE)')],
    [['--log-level', 'info', '--log-level', 'debug'], '--log-level given more than once'],
    [['stray'], 'unexpected argument "stray"'],
    [['--config', '/missing.yaml'], '--config "/missing.yaml": ENOENT'],
  ])('%j -> %s', (argv, message) => {
    expect(error([...DIR, ...argv])).toBe(message);
  });

  it('rejects unknown commands and flags of another command', () => {
    expect(() => parseArgs(['launch'])).toThrow('unknown command "launch" (expected run, status, cleanup, demo)');
    expect(() => parseArgs(['--once'])).toThrow('expected a command (run, status, cleanup, demo) before --once');
    expect(() => parseArgs(['status', '--once'])).toThrow('--once is not a flag of "status"');
    const st = parseArgs(['status', '--backend', 'iptables-legacy'], { env: {} });
    expect(st.command === 'status' && st.config.backend).toBe('iptables-legacy');
    expect(st.command === 'status' && st.config.source).toEqual({ kind: 'none' });
  });
});

describe('config: node name, direct CIDRs, tunnel', () => {
  const CERTS = ['--tunnel-ca', '/t/ca.pem', '--tunnel-cert', '/t/cert.pem', '--tunnel-key', '/t/key.pem'];

  it('the tunnel credentials turn the tunnel on, listening on 0.0.0.0:20006 by default; the files are not read here', () => {
    const c = run([...DIR, ...CERTS]);
    expect(c.tunnel).toEqual({ ca: '/t/ca.pem', cert: '/t/cert.pem', key: '/t/key.pem', listen: { family: 'ipv4', address: '0.0.0.0', port: 20006 }, relays: [] });
    expect(DEFAULT_TUNNEL_LISTEN).toBe('0.0.0.0:20006');
  });

  it('--tunnel-listen none keeps the tunnel for dialling without a listener; without credentials there is no tunnel', () => {
    expect(run([...DIR, ...CERTS, '--tunnel-listen', 'none']).tunnel).toEqual({ ca: '/t/ca.pem', cert: '/t/cert.pem', key: '/t/key.pem', listen: undefined, relays: [] });
    expect(run([...DIR, '--tunnel-listen', 'none']).tunnel).toBeUndefined();
  });

  it('the node name comes from --node-name, else NODE_NAME, else the lower-cased host name', () => {
    expect(run(DIR, { NODE_NAME: 'edge-env' }).nodeName).toBe('edge-env');
    expect(run([...DIR, '--node-name', 'edge-flag'], { NODE_NAME: 'edge-env' }).nodeName).toBe('edge-flag');
    expect(run(DIR).nodeName).toBe('edge-node-1.example');
  });

  it('an odd host name fails `run` only when it is the node name, and never the commands that do not use it', () => {
    expect(error(DIR, {}, () => 'my_host')).toBe('default of --node-name (the host name) "my_host": not a DNS-1123 subdomain (lower-case letters, digits, "-" and "."; at most 253 characters); set --node-name or NODE_NAME');
    expect(run(DIR, { NODE_NAME: 'edge-1' }, () => 'my_host').nodeName).toBe('edge-1');
    const st = parseArgs(['status'], { env: {}, hostname: () => 'my_host' });
    expect(st.command).toBe('status');
  });

  it.each<[string[], Record<string, string>, string]>([
    [['--node-name', 'Edge_1'], {}, '--node-name "Edge_1": not a DNS-1123 subdomain (lower-case letters, digits, "-" and "."; at most 253 characters)'],
    [[], { NODE_NAME: 'edge.' }, 'NODE_NAME "edge.": not a DNS-1123 subdomain'],
    [['--direct-cidr', '10.244.0.0/33'], {}, '--direct-cidr "10.244.0.0/33": prefix length must be 0-32'],
    [['--direct-cidr', '10.244.0.0/16', '--direct-cidr', '10.244.0.0/16'], {}, '--direct-cidr "10.244.0.0/16": given twice'],
    [['--direct-cidr', '10.244.0.0/16', '--direct-cidr', '10.244.1.0/24'], {}, '--direct-cidr "10.244.1.0/24": overlaps 10.244.0.0/16'],
    [['--tunnel-cert', '/t/cert.pem'], {}, '--tunnel-cert "/t/cert.pem": missing --tunnel-ca and --tunnel-key (the tunnel needs --tunnel-ca, --tunnel-cert and --tunnel-key)'],
    [['--tunnel-ca', '/t/ca.pem', '--tunnel-cert', '/t/cert.pem'], {}, '--tunnel-ca "/t/ca.pem": missing --tunnel-key (the tunnel needs --tunnel-ca, --tunnel-cert and --tunnel-key)'],
    [['--tunnel-ca', '', '--tunnel-cert', '/c', '--tunnel-key', '/k'], {}, '--tunnel-ca "": must not be empty'],
    [['--tunnel-listen', '0.0.0.0:20006'], {}, '--tunnel-listen "0.0.0.0:20006": needs --tunnel-ca, --tunnel-cert and --tunnel-key'],
    [['--tunnel-listen', '0.0.0.0', '--tunnel-ca', '/a', '--tunnel-cert', '/c', '--tunnel-key', '/k'], {}, '--tunnel-listen "0.0.0.0": missing ":PORT"'],
    [['--tunnel-listen', '0.0.0.0:0', '--tunnel-ca', '/a', '--tunnel-cert', '/c', '--tunnel-key', '/k'], {}, '--tunnel-listen "0.0.0.0:0": port 0 out of range 1-65535'],
  ])('%j %j -> %s', (argv, env, message) => {
    expect(error([...DIR, ...argv], env).startsWith(message)).toBe(true);
  });

  it('refuses a node name longer than 253 characters', () => {
    expect(run([...DIR, '--node-name', 'a'.repeat(253)]).nodeName).toHaveLength(253);
    expect(error([...DIR, '--node-name', 'a'.repeat(254)])).toMatch(/^--node-name "a+.*not a DNS-1123 subdomain/);
  });

  it('--tunnel-relay: IP:PORT, [IPv6]:PORT or HOST:PORT; a bad one, a duplicate, or one without credentials is a one-line error', () => {
    expect(() => run([...DIR, ...CERTS, '--tunnel-relay', 'relay:0'])).toThrow(/--tunnel-relay "relay:0": .*write IP:PORT/);
    expect(() => run([...DIR, ...CERTS, '--tunnel-relay', 'bad_name:20006'])).toThrow(/--tunnel-relay "bad_name:20006"/);
    expect(() => run([...DIR, ...CERTS, '--tunnel-relay', '10.0.0.1'])).toThrow(/--tunnel-relay "10.0.0.1"/);
    expect(() => run([...DIR, ...CERTS, '--tunnel-relay', '10.0.0.1:1', '--tunnel-relay', '10.0.0.1:1'])).toThrow(/given twice/);
    expect(() => run([...DIR, '--tunnel-relay', '10.0.0.1:1'])).toThrow(/--tunnel-relay "10.0.0.1:1": needs --tunnel-ca/);
  });

  it('the tunnel flags belong to `run` only', () => {
    expect(() => parseArgs(['status', '--node-name', 'x'])).toThrow('--node-name is not a flag of "status"');
    expect(() => parseArgs(['cleanup', '--tunnel-ca', '/a'])).toThrow('--tunnel-ca is not a flag of "cleanup"');
  });

  it('describeConfig shows them in the config file\'s terms', () => {
    expect(describeConfig(run([...DIR, '--node-name', 'edge-1', '--direct-cidr', '10.244.0.0/16', ...CERTS]))).toMatchObject({
      nodeName: 'edge-1',
      directCidr: ['10.244.0.0/16'],
      tunnelListen: '0.0.0.0:20006',
      tunnelCa: '/t/ca.pem',
      tunnelCert: '/t/cert.pem',
      tunnelKey: '/t/key.pem',
    });
    const off = describeConfig(run(DIR));
    expect(off).toMatchObject({ nodeName: 'edge-node-1.example', directCidr: [], tunnelListen: 'none' });
    expect(off).not.toHaveProperty('tunnelCa');
  });
});

describe('config: file, environment, precedence', () => {
  files['/etc/edgemesh/agent.yaml'] = `
backend: iptables-legacy
serviceCidr: [10.10.0.0/16]
proxyAddr: 169.254.96.16:40001
servicesDir: /from/file
minSyncPeriod: 2s
keepRulesOnExit: true
ignoreLabelSelector:
  - tier=cloud
serviceProxyFilterMode: FilterIfLabelExists
logLevel: warn
maxConnections: 500
`;
  files['/bad-key.yaml'] = 'service-cidr: 10.0.0.0/8\n';
  files['/bad-type.yaml'] = 'serviceCidr: 10.10.0.0/33\n';
  files['/bad-dur.yaml'] = 'servicesDir: /d\nminSyncPeriod: 5\n';
  files['/bad-list.yaml'] = 'proxyAddr: [1]\n';
  files['/bad-yaml.yaml'] = 'a: [\n';
  files['/two-sources.yaml'] = 'servicesDir: /a\napiServer: http://x\n';
  files['/bool.yaml'] = 'servicesDir: /d\nonce: "yes"\n';

  it('reads every key from the YAML file', () => {
    const c = run(['--config', '/etc/edgemesh/agent.yaml']);
    expect(c).toMatchObject({ backend: 'iptables-legacy', source: { kind: 'static', dir: '/from/file' }, minSyncPeriodMs: 2000, keepRulesOnExit: true, logLevel: 'warn', maxConnections: 500 });
    expect(c.serviceCidrs.map((x) => x.text)).toEqual(['10.10.0.0/16']);
    expect(c.selection.ignoreLabelSelectors.map((s) => s.text)).toEqual(['tier=cloud']);
    expect(c.selection.serviceProxyFilterMode).toBe('FilterIfLabelExists');
    expect(c.configFile).toBe('/etc/edgemesh/agent.yaml');
  });

  it('every flag has a config file key (a file setting all of them loads) and a --help line', () => {
    const sample: Record<string, unknown> = {
      backend: 'nftables', serviceCidr: ['10.10.0.0/16'], proxyAddr: ['169.254.96.16:1'], servicesDir: '/d', metricsAddr: '127.0.0.1:1',
      once: true, minSyncPeriod: '2s', syncPeriod: '2m', orderCheckPeriod: '3s', lockWait: '4s', keepRulesOnExit: true,
      ignoreLabelSelector: ['a=b'], serviceProxyName: 'n', serviceProxyFilterMode: 'FilterIfLabelExists', logLevel: 'debug',
      maxConnections: 7, connectTimeout: '6s', idleTimeout: '8s', drainGrace: '9s', relayMode: 'copy', proxyMode: 'splice',
      healthzAddr: '127.0.0.1:2', logFormat: 'pino', nodeName: 'edge-1', directCidr: ['10.244.0.0/16'], tunnelListen: '10.0.0.1:20006', tunnelCa: '/ca', tunnelCert: '/cert', tunnelKey: '/key',
      orderBefore: ['KUBE-SERVICES', 'CALI-X'], strictManifests: true,
      tunnelRelay: ['10.0.0.9:20006'], endpointsApi: 'endpoints',
    };
    // config and writeConfigTo are flags only; kubeconfig and apiServer exclude servicesDir (the --api-server TLS files are loaded below)
    const exclusive = ['config', 'writeConfigTo', 'kubeconfig', 'apiServer', 'apiServerCa', 'apiServerCert', 'apiServerKey'];
    for (const o of OPTIONS) if (!exclusive.includes(o.key)) expect(sample, o.key).toHaveProperty(o.key);
    files['/all.yaml'] = Object.entries(sample).map(([k, v]) => `${k}: ${JSON.stringify(v)}`).join('\n');
    const c = run(['--config', '/all.yaml']);
    expect(c).toMatchObject({ backend: 'nftables', once: true, minSyncPeriodMs: 2000, syncPeriodMs: 120_000, orderCheckPeriodMs: 3000, lockWaitMs: 4000, keepRulesOnExit: true, logLevel: 'debug', maxConnections: 7, connectTimeoutMs: 6000, idleTimeoutMs: 8000, drainGraceMs: 9000, relayMode: 'copy', logFormat: 'pino' });
    expect(c.healthzAddr).toEqual({ family: 'ipv4', address: '127.0.0.1', port: 2 });
    expect(c.metricsAddr).toEqual({ family: 'ipv4', address: '127.0.0.1', port: 1 });
    expect(c).toMatchObject({ orderBefore: ['KUBE-SERVICES', 'CALI-X'], strictManifests: true });
    expect(c.selection).toMatchObject({ serviceProxyName: 'n', serviceProxyFilterMode: 'FilterIfLabelExists' });
    expect(c).toMatchObject({ nodeName: 'edge-1', directCidrs: [{ text: '10.244.0.0/16' }], tunnel: { ca: '/ca', cert: '/cert', key: '/key', listen: { address: '10.0.0.1', port: 20006 } } });
    files['/kc.yaml'] = 'kubeconfig: /etc/kc\n';
    expect(run(['--config', '/kc.yaml']).source).toEqual({ kind: 'kubeconfig', file: '/etc/kc' });
    expect(c.endpointsApi).toBe('endpoints');
    files['/pki/c.pem'] = files['/pki/k.pem'] = files['/pki/ca.pem'] = 'PEM';
    files['/as.yaml'] = 'apiServer: https://10.0.0.1:6443\napiServerCa: /pki/ca.pem\napiServerCert: /pki/c.pem\napiServerKey: /pki/k.pem\n';
    expect(run(['--config', '/as.yaml']).source).toEqual({ kind: 'api-server', url: 'https://10.0.0.1:6443', ca: '/pki/ca.pem', cert: '/pki/c.pem', key: '/pki/k.pem' });
    const help = `${helpText('run')}${helpText('status')}`;
    for (const o of OPTIONS) expect(help).toContain(`--${o.flag}`);
    const keys = OPTIONS.map((o) => o.key);
    expect(new Set(keys).size).toBe(keys.length);
    expect(keys.every((k) => /^[a-z][A-Za-z]*$/.test(k))).toBe(true);
    expect(helpText('run')).toContain('--service-cidr CIDR (repeatable)');
    expect(helpText('run')).toContain('default 10.96.0.0/12; env EDGEMESH_SERVICE_CIDR');
    expect(helpText('run')).toContain('(default the host name; env NODE_NAME)');
    expect(helpText('run')).toContain('--tunnel-listen IP:PORT|none');
    expect(parseArgs(['run', '--help'])).toEqual({ command: 'help', help: helpText('run') });
    expect(parseArgs([])).toEqual({ command: 'help', help: helpText() });
  });

  it('precedence: flags over environment over file over defaults', () => {
    const env = { EDGEMESH_BACKEND: 'nftables', EDGEMESH_SERVICE_CIDR: '10.20.0.0/16, fd00:20::/108', EDGEMESH_PROXY_ADDR: '169.254.96.16:1,[fd00::16]:1', EDGEMESH_LOG_LEVEL: 'error' };
    const fromEnv = run(['--config', '/etc/edgemesh/agent.yaml'], env);
    expect(fromEnv.backend).toBe('nftables');
    expect(fromEnv.serviceCidrs.map((x) => x.text)).toEqual(['10.20.0.0/16', 'fd00:20::/108']);
    expect(fromEnv.proxyAddrs).toHaveLength(2);
    expect(fromEnv.logLevel).toBe('error');
    expect(fromEnv.minSyncPeriodMs).toBe(2000); // file, no env for it
    const fromFlags = run(['--config', '/etc/edgemesh/agent.yaml', '--backend', 'iptables-nft', '--service-cidr', '10.30.0.0/16', '--proxy-addr', '169.254.96.16:2', '--api-server', 'https://meta:10550'], env);
    expect(fromFlags.backend).toBe('iptables-nft');
    expect(fromFlags.serviceCidrs.map((x) => x.text)).toEqual(['10.30.0.0/16']);
    expect(fromFlags.source).toEqual({ kind: 'api-server', url: 'https://meta:10550' });
    // The env's API server beats the file's servicesDir (the whole source group goes by layer).
    expect(run(['--config', '/etc/edgemesh/agent.yaml'], { EDGEMESH_API_SERVER: 'http://127.0.0.1:10550' }).source).toEqual({ kind: 'api-server', url: 'http://127.0.0.1:10550' });
  });

  it.each<[string, Record<string, string>, string]>([
    ['/bad-key.yaml', {}, '/bad-key.yaml: unknown field "service-cidr" (write it serviceCidr)'],
    ['/bad-type.yaml', {}, '/bad-type.yaml: serviceCidr "10.10.0.0/33": prefix length must be 0-32'],
    ['/bad-dur.yaml', {}, '/bad-dur.yaml: minSyncPeriod 5: must be a duration with a unit, e.g. 1s or 250ms'],
    ['/bad-list.yaml', {}, '/bad-list.yaml: proxyAddr[0] 1: must be a string'],
    ['/bad-yaml.yaml', {}, '--config "/bad-yaml.yaml": invalid YAML:'],
    ['/two-sources.yaml', {}, '/two-sources.yaml: servicesDir and /two-sources.yaml: apiServer are mutually exclusive (one source)'],
    ['/bool.yaml', {}, '/bool.yaml: once "yes": must be true or false'],
    ['/etc/edgemesh/agent.yaml', { EDGEMESH_SERVICE_CIDR: '10.0.0.0/40' }, 'EDGEMESH_SERVICE_CIDR "10.0.0.0/40": prefix length must be 0-32'],
    ['/etc/edgemesh/agent.yaml', { EDGEMESH_BACKEND: 'pf' }, 'EDGEMESH_BACKEND "pf": must be one of'],
  ])('%s %j -> one-line error naming the field', (file, env, message) => {
    let msg = '';
    try {
      parseArgs(['run', '--config', file], { env, readFile });
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      msg = (e as Error).message;
    }
    expect(msg).not.toContain('\n');
    expect(msg.startsWith(message)).toBe(true);
  });

  it('parses durations as written in the docs', () => {
    expect(['250ms', '1s', '5m', '1h', '1h30m', '1.5s', '0'].map(parseDuration)).toEqual([250, 1000, 300_000, 3_600_000, 5_400_000, 1500, 0]);
    for (const bad of ['', '1', 's', '1d', '1s2', '-1s']) expect(() => parseDuration(bad)).toThrow();
  });

  it('loadConfig works for an embedding program (values keyed like the file)', () => {
    const c = loadConfig({ values: { servicesDir: '/d', serviceCidr: ['10.10.0.0/16'], minSyncPeriod: '100ms' }, env: {} });
    expect(c.minSyncPeriodMs).toBe(100);
    expect(() => loadConfig({ values: { nope: 1 } })).toThrow('unknown option "nope"');
  });
});

describe('config: versioned file, kube-proxy habits', () => {
  const V = 'apiVersion: edgemesh.io/v1alpha1\nkind: AgentConfiguration\n';
  const parse = (argv: string[], env: Record<string, string> = {}) => {
    const r = parseArgs(['run', ...argv], { env, readFile, hostname: HOST });
    if (!('config' in r)) throw new Error(`unexpected ${r.command}`);
    return r;
  };
  const errorLines = (argv: string[]): string[] => {
    try {
      parse(argv);
    } catch (e) {
      expect(e).toBeInstanceOf(ConfigError);
      return (e as Error).message.split('\n');
    }
    throw new Error('no error');
  };

  it('a versioned file loads without warnings; one without apiVersion and kind loads with one deprecation line', () => {
    files['/v.yaml'] = `${V}servicesDir: /d\nsyncPeriod: 2m\n`;
    const r = parse(['--config', '/v.yaml']);
    expect(r.config.syncPeriodMs).toBe(120_000);
    expect(r.warnings).toEqual([]);
    files['/old.yaml'] = 'servicesDir: /d\nsyncPeriod: 2m\n';
    const old = parse(['--config', '/old.yaml']);
    expect(old.config.syncPeriodMs).toBe(120_000);
    expect(old.warnings).toHaveLength(1);
    expect(old.warnings[0]).toMatch(/^\/old\.yaml: no apiVersion and kind: deprecated.*apiVersion: edgemesh\.io\/v1alpha1 and kind: AgentConfiguration/);
    expect(old.warnings[0]).not.toContain('\n');
  });

  it('a wrong or missing apiVersion or kind is an error naming the key', () => {
    files['/wrong-version.yaml'] = 'apiVersion: edgemesh.io/v1\nkind: AgentConfiguration\nservicesDir: /d\n';
    expect(errorLines(['--config', '/wrong-version.yaml'])).toEqual(['/wrong-version.yaml: apiVersion "edgemesh.io/v1": must be edgemesh.io/v1alpha1']);
    files['/wrong-kind.yaml'] = 'apiVersion: edgemesh.io/v1alpha1\nkind: ConfigMap\nservicesDir: /d\n';
    expect(errorLines(['--config', '/wrong-kind.yaml'])).toEqual(['/wrong-kind.yaml: kind "ConfigMap": must be AgentConfiguration']);
    files['/no-kind.yaml'] = 'apiVersion: edgemesh.io/v1alpha1\nservicesDir: /d\n';
    expect(errorLines(['--config', '/no-kind.yaml'])).toEqual(['/no-kind.yaml: kind: missing (write kind: AgentConfiguration)']);
  });

  it('reports every mistake of a file at once, one line each naming its key', () => {
    files['/many.yaml'] = 'apiVersion: edgemesh.io/v2\nkind: AgentConfiguration\nservicesDir: /d\nserviceCidr: [10.0.0.0/8, 10.1.0.0/40]\nsyncPeriod: 5\nbogus: 1\nhostnameOverride: n1\nrelayMode: zerocopy\nhealthzAddr: "0.0.0.0:99999"\n';
    const lines = errorLines(['--config', '/many.yaml']);
    expect(lines).toEqual([
      '/many.yaml: apiVersion "edgemesh.io/v2": must be edgemesh.io/v1alpha1',
      '/many.yaml: serviceCidr "10.1.0.0/40": prefix length must be 0-32',
      '/many.yaml: syncPeriod 5: must be a duration with a unit, e.g. 1s or 250ms',
      '/many.yaml: unknown field "bogus"',
      '/many.yaml: unknown field "hostnameOverride" (kube-proxy\'s or EdgeMesh\'s; here: nodeName)',
      '/many.yaml: relayMode "zerocopy": must be one of splice, copy',
      expect.stringMatching(/^\/many\.yaml: healthzAddr "0\.0\.0\.0:99999": /),
    ]);
  });

  it.each([
    ['KubeProxyConfiguration', 'kubeproxy.config.k8s.io/v1alpha1', ['iptables.syncPeriod -> syncPeriod', 'hostnameOverride -> nodeName', 'metricsBindAddress -> metricsAddr', 'healthzBindAddress -> healthzAddr', 'mode -> backend', 'clusterCIDR (pods) -> directCidr']],
    ['EdgeMeshAgent', 'agent.edgemesh.config.kubeedge.io/v1alpha1', ['kubeAPIConfig.master or the MetaServer -> apiServer', 'proxyAddr', 'serviceProxyFilterMode', 'tunnelRelay']],
  ])('a %s file is recognised by its kind: one line naming the equivalent keys here', (kind, apiVersion, names) => {
    files[`/${kind}.yaml`] = `apiVersion: ${apiVersion}\nkind: ${kind}\nmode: iptables\nclusterCIDR: 10.244.0.0/16\n`;
    const lines = errorLines(['--config', `/${kind}.yaml`]);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^/${kind}\\.yaml: kind ${kind} is `));
    for (const n of names) expect(lines[0]).toContain(n);
  });

  it('--write-config-to: the written file reads back to the same configuration (every option set, and the defaults)', () => {
    for (const f of ['/api-ca.pem', '/api-cert.pem', '/api-key.pem']) files[f] = 'PEM';
    const full = run([
      '--backend', 'nftables', '--service-cidr', '10.10.0.0/16,fd00:10::/108', '--proxy-addr', '169.254.96.16:40002,[fd00::96:16]:40001',
      '--api-server', 'https://meta:10550', '--api-server-ca', '/api-ca.pem', '--api-server-cert', '/api-cert.pem', '--api-server-key', '/api-key.pem', '--metrics-addr', '0.0.0.0:9100', '--healthz-addr', '127.0.0.1:9101', '--min-sync-period', '250ms',
      '--sync-period', '5m', '--order-check-period', '1.5s', '--order-before', 'KUBE-SERVICES,CALI-X', '--strict-manifests', '--lock-wait', '0',
      '--keep-rules-on-exit', '--ignore-label-selector', 'tier=cloud,app in (a,b)', '--ignore-label-selector', '!x',
      '--service-proxy-name', 'edgemesh', '--service-proxy-filter-mode', 'FilterIfLabelExists', '--log-level', 'debug', '--log-format', 'pino',
      '--max-connections', '0', '--connect-timeout', '2s', '--idle-timeout', '0', '--drain-grace', '3s', '--relay-mode', 'copy', '--node-name', 'edge-1',
      '--direct-cidr', '10.244.0.0/16', '--tunnel-listen', '[fd00::1]:20007', '--tunnel-ca', '/ca', '--tunnel-cert', '/cert', '--tunnel-key', '/key',
      '--tunnel-relay', '192.168.50.1:20006,relay.example:20006', '--write-config-to', '/out.yaml',
    ]);
    expect(full.writeConfigTo).toBe('/out.yaml');
    for (const c of [full, run(DIR), run(['--kubeconfig', '/kc', '--metrics-addr', 'off', '--healthz-addr', 'off'])]) {
      const text = configFileText(c);
      expect(text).toMatch(/^apiVersion: edgemesh\.io\/v1alpha1\nkind: AgentConfiguration\n/m);
      files['/written.yaml'] = text;
      const back = parse(['--config', '/written.yaml']);
      expect(back.warnings).toEqual([]);
      expect({ ...back.config, configFile: undefined }).toEqual({ ...c, configFile: undefined, writeConfigTo: undefined });
    }
    // Every option of the table but the flag-only ones, the deprecated name and the other sources is written.
    const text = configFileText(full);
    for (const o of OPTIONS) {
      if (['config', 'writeConfigTo', 'proxyMode', 'servicesDir', 'kubeconfig'].includes(o.key)) continue;
      expect(text, o.key).toMatch(new RegExp(`^${o.key}:`, 'm'));
    }
  });

  it('lists in flags take commas as the environment does; a label selector keeps its commas (they join requirements)', () => {
    const c = run([...DIR, '--service-cidr', '10.96.0.0/12,fd00::/108', '--proxy-addr', '169.254.96.16:40001, [fd00::16]:40001', '--direct-cidr', '10.244.0.0/16,10.245.0.0/16', '--ignore-label-selector', 'a=b,c in (x,y)']);
    expect(c.serviceCidrs.map((x) => x.text)).toEqual(['10.96.0.0/12', 'fd00::/108']);
    expect(c.proxyAddrs.map((x) => x.family)).toEqual(['ipv4', 'ipv6']);
    expect(c.directCidrs.map((x) => x.text)).toEqual(['10.244.0.0/16', '10.245.0.0/16']);
    expect(c.selection.ignoreLabelSelectors.map((s) => s.text)).toEqual(['a=b,c in (x,y)']);
    const relays = run([...DIR, '--tunnel-ca', '/a', '--tunnel-cert', '/b', '--tunnel-key', '/c', '--tunnel-relay', '10.0.0.1:20006,10.0.0.2:20006']).tunnel?.relays;
    expect(relays?.map((r) => r.text)).toEqual(['10.0.0.1:20006', '10.0.0.2:20006']);
    expect(error([...DIR, '--service-cidr', '10.96.0.0/12,10.96.0.0/33'])).toBe('--service-cidr "10.96.0.0/33": prefix length must be 0-32');
  });

  it.each([
    [['--master', 'https://10.0.0.1:6443'], 'did you mean --api-server?'],
    [['--iptables-sync-period', '30s'], 'did you mean --sync-period?'],
    [['--iptables-min-sync-period=1s'], 'did you mean --min-sync-period?'],
    [['--hostname-override', 'n1'], 'did you mean --node-name?'],
    [['--metrics-bind-address', '0.0.0.0:10249'], 'did you mean --metrics-addr?'],
    [['--healthz-bind-address', '0.0.0.0:10256'], 'did you mean --healthz-addr?'],
    [['--cleanup'], 'did you mean the "cleanup" command'],
    [['--proxy-mode', 'iptables'], 'did you mean --backend'],
    [['--proxy-mode=ipvs'], 'did you mean --backend'],
    [['--proxy-mode', 'nftables'], 'did you mean --backend'],
  ])('kube-proxy flag %j: one line with its equivalent', (argv, hint) => {
    const msg = error([...DIR, ...argv]);
    expect(msg).toContain(hint);
    expect(msg).toContain(`--${argv[0]!.slice(2).split('=')[0]}`);
  });

  it('--cleanup as kube-proxy takes it (no command) names the cleanup command', () => {
    expect(() => parseArgs(['--cleanup'])).toThrow(/^unknown flag --cleanup \(kube-proxy's\): did you mean the "cleanup" command/);
  });

  it('--proxy-mode splice|copy (flag or file key) still sets the relay mode, with a deprecation line; relayMode wins over it', () => {
    const r = parse([...DIR, '--proxy-mode', 'copy']);
    expect(r.config.relayMode).toBe('copy');
    expect(r.warnings).toEqual(["--proxy-mode: deprecated, use --relay-mode (kube-proxy's --proxy-mode means the backend)"]);
    files['/pm.yaml'] = `${V}servicesDir: /d\nproxyMode: copy\n`;
    const f = parse(['--config', '/pm.yaml']);
    expect(f.config.relayMode).toBe('copy');
    expect(f.warnings).toEqual(["/pm.yaml: proxyMode: deprecated, use relayMode (kube-proxy's --proxy-mode means the backend)"]);
    expect(parse(['--config', '/pm.yaml', '--relay-mode', 'splice']).config.relayMode).toBe('splice');
    files['/pm-kp.yaml'] = `${V}servicesDir: /d\nproxyMode: ipvs\n`;
    expect(errorLines(['--config', '/pm-kp.yaml'])[0]).toMatch(/^\/pm-kp\.yaml: proxyMode "ipvs": "ipvs" is a kube-proxy mode: did you mean --backend/);
  });

  it('--version anywhere asks for the version', () => {
    expect(parseArgs(['--version'])).toEqual({ command: 'version' });
    expect(parseArgs(['run', '--version'])).toEqual({ command: 'version' });
  });

  it('--healthz-addr: its own listener by default; the metrics address shares one; the same port on an overlapping address is refused', () => {
    expect(DEFAULT_HEALTHZ_ADDR).toBe('0.0.0.0:10252');
    const same = run([...DIR, '--healthz-addr', '127.0.0.1:10251']);
    expect(same.healthzAddr).toEqual(same.metricsAddr);
    expect(error([...DIR, '--healthz-addr', '0.0.0.0:10251'])).toMatch(/^--healthz-addr "0\.0\.0\.0:10251": port 10251 is also --metrics-addr's/);
    expect(run([...DIR, '--healthz-addr', 'off']).healthzAddr).toBeUndefined();
  });
});

describe('config: a file of many mistakes', () => {
  it(`reports at most ${MAX_FILE_ERRORS} lines, the last one counting the rest`, () => {
    files['/huge.yaml'] = Array.from({ length: 50 }, (_, i) => `bogus${i}: 1`).join('\n');
    let lines: readonly string[] = [];
    try {
      parseArgs(['run', '--config', '/huge.yaml'], { env: {}, readFile, hostname: HOST });
    } catch (e) {
      lines = (e as ConfigError).lines;
    }
    expect(lines).toHaveLength(MAX_FILE_ERRORS);
    expect(lines.at(-2)).toBe('/huge.yaml: unknown field "bogus18"');
    expect(lines.at(-1)).toBe('/huge.yaml: ... and 31 more problems');
  });
});
