// The tunnel's certificates (no privileges): the native core checked against the real `openssl`
// CLI (verify, x509 -text, -serial, key match, expiry, a foreign CA), its refusals and TypeErrors,
// the TypeScript API (files, modes, overwrite), and `edgemesh-agent certs` run as a process
// (dist/src/cli.js: build with tsc first).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { native } from '../../src/native/load.js';
import { initCa, issueNodeCert, readCertInfo, validateNodeName } from '../../src/tunnel/certs.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CLI = join(root, 'dist', 'src', 'cli.js');
const DAY = 86_400;

const tmp = mkdtempSync(join(tmpdir(), 'em-certs-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
let seq = 0;
function freshDir(): string {
  return join(tmp, `d${++seq}`);
}

function openssl(...args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** `openssl verify -CAfile ca cert`: exit status and everything it printed. */
function verify(caPem: string, certPem: string): { ok: boolean; output: string } {
  const dir = freshDir();
  execFileSync('mkdir', ['-p', dir]);
  writeFileSync(join(dir, 'ca.pem'), caPem);
  writeFileSync(join(dir, 'cert.pem'), certPem);
  const r = spawnSync('openssl', ['verify', '-CAfile', join(dir, 'ca.pem'), join(dir, 'cert.pem')], { encoding: 'utf8' });
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

function writeTemp(name: string, text: string): string {
  const p = join(tmp, `${++seq}-${name}`);
  writeFileSync(p, text);
  return p;
}

function mode(path: string): number {
  return statSync(path).mode & 0o777;
}

describe('native certificates checked by openssl', () => {
  const n = native();
  const ca = n.generateCa();
  const node = n.issueCert({ caCertPem: ca.certPem, caKeyPem: ca.keyPem, name: 'edge-node-1' });

  it('makes a CA and a node certificate that openssl verifies', () => {
    expect(n.modules).toContain('certs');
    expect(ca.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(node.keyPem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    const r = verify(ca.certPem, node.certPem);
    expect(r.output).toContain(': OK');
    expect(r.ok).toBe(true);
  });

  it('puts the CA extensions in the CA certificate', () => {
    const text = openssl('x509', '-noout', '-text', '-in', writeTemp('ca.pem', ca.certPem));
    expect(text).toContain('Subject: CN = edgemesh cluster CA');
    expect(text).toContain('Issuer: CN = edgemesh cluster CA');
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Certificate Sign, CRL Sign/);
    expect(text).toContain('X509v3 Subject Key Identifier');
    expect(text).toContain('ecdsa-with-SHA256');
    expect(text).toContain('NIST CURVE: P-256');
  });

  it('puts CN, DNS SAN, both EKUs and CA:FALSE in the node certificate', () => {
    const text = openssl('x509', '-noout', '-text', '-in', writeTemp('node.pem', node.certPem));
    expect(text).toContain('Subject: CN = edge-node-1');
    expect(text).toMatch(/X509v3 Subject Alternative Name:\s+DNS:edge-node-1\n/);
    expect(text).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Server Authentication, TLS Web Client Authentication/);
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/X509v3 Basic Constraints:\s+CA:FALSE/);
    expect(text).toContain('X509v3 Authority Key Identifier');
    expect(text).toContain('ecdsa-with-SHA256');
  });

  it('gives each certificate the key it returned with it', () => {
    const certPub = openssl('x509', '-noout', '-pubkey', '-in', writeTemp('node.pem', node.certPem));
    const keyPub = openssl('pkey', '-pubout', '-in', writeTemp('node.key', node.keyPem));
    expect(keyPub).toBe(certPub);
    const caPub = openssl('x509', '-noout', '-pubkey', '-in', writeTemp('ca.pem', ca.certPem));
    expect(openssl('pkey', '-pubout', '-in', writeTemp('ca.key', ca.keyPem))).toBe(caPub);
    expect(keyPub).not.toBe(caPub);
  });

  it('reports what openssl reads: serial, names, dates, CA flag', () => {
    for (const pem of [ca.certPem, node.certPem]) {
      const file = writeTemp('c.pem', pem);
      const info = n.certInfo(pem);
      expect(`serial=${info.serialHex}\n`).toBe(openssl('x509', '-noout', '-serial', '-in', file));
      expect(info.serialHex).toMatch(/^[0-9A-F]+$/);
      const end = openssl('x509', '-noout', '-enddate', '-in', file).replace(/^notAfter=/, '').trim();
      expect(new Date(info.notAfter).getTime()).toBe(new Date(end).getTime());
      expect(info.notAfter).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      const start = openssl('x509', '-noout', '-startdate', '-in', file).replace(/^notBefore=/, '').trim();
      expect(new Date(info.notBefore).getTime()).toBe(new Date(start).getTime());
    }
    const c = n.certInfo(ca.certPem);
    expect(c).toMatchObject({ subjectCN: 'edgemesh cluster CA', issuerCN: 'edgemesh cluster CA', dnsNames: [], isCa: true });
    const i = n.certInfo(node.certPem);
    expect(i).toMatchObject({ subjectCN: 'edge-node-1', issuerCN: 'edgemesh cluster CA', dnsNames: ['edge-node-1'], isCa: false });
    // defaults: back-dated one hour; 10 years for the CA, 1 year for a node
    const now = Date.now();
    expect(Math.abs(new Date(i.notBefore).getTime() - (now - 3600_000))).toBeLessThan(120_000);
    expect(Math.abs(new Date(i.notAfter).getTime() - (now + 365 * DAY * 1000))).toBeLessThan(120_000);
    expect(Math.abs(new Date(c.notAfter).getTime() - (now + 3650 * DAY * 1000))).toBeLessThan(120_000);
    // the first certificate of a bundle
    expect(n.certInfo(`${node.certPem}${ca.certPem}`).subjectCN).toBe('edge-node-1');
    expect(n.certInfo(`${ca.keyPem}${node.certPem}`).subjectCN).toBe('edge-node-1');
    expect(n.certInfo(n.generateCa().certPem).serialHex).not.toBe(c.serialHex);
  });

  it('makes an expired certificate that openssl refuses as expired', () => {
    const old = n.issueCert({ caCertPem: ca.certPem, caKeyPem: ca.keyPem, name: 'old-node', notBeforeOffsetSeconds: -2 * DAY, notAfterOffsetSeconds: -DAY });
    const info = n.certInfo(old.certPem);
    expect(new Date(info.notAfter).getTime()).toBeLessThan(Date.now() - DAY * 1000 + 60_000);
    const r = verify(ca.certPem, old.certPem);
    expect(r.ok).toBe(false);
    expect(r.output).toContain('certificate has expired');
  });

  it('a certificate from another CA does not verify', () => {
    const other = n.generateCa({ commonName: 'another cluster' });
    const stranger = n.issueCert({ caCertPem: other.certPem, caKeyPem: other.keyPem, name: 'edge-node-1' });
    expect(verify(other.certPem, stranger.certPem).ok).toBe(true);
    const r = verify(ca.certPem, stranger.certPem);
    expect(r.ok).toBe(false);
    expect(r.output).toContain('unable to get local issuer certificate');
  });

  it('gives a node name longer than a CN may be no CN and a critical DNS SAN', () => {
    const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.example`;
    const c = n.issueCert({ caCertPem: ca.certPem, caKeyPem: ca.keyPem, name: long });
    expect(verify(ca.certPem, c.certPem).ok).toBe(true);
    expect(n.certInfo(c.certPem)).toMatchObject({ subjectCN: '', dnsNames: [long] });
    expect(readCertInfo(c.certPem).identity).toBe(long);
    expect(openssl('x509', '-noout', '-ext', 'subjectAltName', '-in', writeTemp('long.pem', c.certPem))).toContain('X509v3 Subject Alternative Name: critical');
  });

  it('refuses a mismatched key, a CA that is no CA, garbage and an encrypted key, with stable codes', () => {
    const other = n.generateCa();
    expect(() => n.issueCert({ caCertPem: ca.certPem, caKeyPem: other.keyPem, name: 'x' })).toThrow(expect.objectContaining({ code: 'EKEYMISMATCH' }));
    expect(() => n.issueCert({ caCertPem: node.certPem, caKeyPem: node.keyPem, name: 'x' })).toThrow(expect.objectContaining({ code: 'ENOTCA' }));
    expect(() => n.issueCert({ caCertPem: 'junk', caKeyPem: ca.keyPem, name: 'x' })).toThrow(expect.objectContaining({ code: 'EBADCERT', message: expect.stringContaining('no start line') }));
    expect(() => n.issueCert({ caCertPem: ca.certPem, caKeyPem: ca.certPem, name: 'x' })).toThrow(expect.objectContaining({ code: 'EBADKEY' }));
    expect(() => n.certInfo('')).toThrow(expect.objectContaining({ code: 'EBADCERT' }));
    expect(() => n.issueCert({ caCertPem: ca.certPem, caKeyPem: ca.keyPem, name: 'a,DNS:evil.example' })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.generateCa({ notBeforeOffsetSeconds: 10, notAfterOffsetSeconds: 10 })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    expect(() => n.generateCa({ commonName: 'x'.repeat(65) })).toThrow(expect.objectContaining({ code: 'EINVAL' }));
    // An encrypted key is refused, never a passphrase prompt.
    const enc = join(tmp, 'enc.key');
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-aes256', '-pass', 'pass:secret', '-out', enc);
    expect(() => n.issueCert({ caCertPem: ca.certPem, caKeyPem: readFileSync(enc, 'utf8'), name: 'x' })).toThrow(expect.objectContaining({ code: 'EBADKEY' }));
    // Every message is one line; the error queue is left empty, so a later success stays clean.
    try {
      n.certInfo('junk');
    } catch (e) {
      expect((e as Error).message).not.toContain('\n');
    }
    expect(n.certInfo(ca.certPem).isCa).toBe(true);
  });

  it('turns wrong JS types into TypeErrors naming the field, never a crash', () => {
    const good = { caCertPem: ca.certPem, caKeyPem: ca.keyPem, name: 'x' };
    const cases: [() => unknown, RegExp][] = [
      [() => n.generateCa({ commonName: 1 } as never), /spec\.commonName must be a string/],
      [() => n.generateCa({ notAfterOffsetSeconds: 'x' } as never), /spec\.notAfterOffsetSeconds must be a number/],
      [() => n.generateCa({ notBeforeOffsetSeconds: 1.5 }), /spec\.notBeforeOffsetSeconds must be an integer/],
      [() => n.generateCa('x' as never), /spec must be an object/],
      [() => n.issueCert(undefined as never), /spec must be an object/],
      [() => n.issueCert(null as never), /spec must be an object/],
      [() => n.issueCert({ ...good, caCertPem: 1 } as never), /spec\.caCertPem must be a string/],
      [() => n.issueCert({ ...good, caKeyPem: Buffer.from(ca.keyPem) } as never), /spec\.caKeyPem must be a string/],
      [() => n.issueCert({ ...good, name: undefined } as never), /spec\.name must be a string/],
      [() => n.issueCert({ ...good, notAfterOffsetSeconds: Infinity }), /spec\.notAfterOffsetSeconds must be an integer/],
      [() => n.certInfo(3 as never), /pem must be a string/],
      [() => (n.certInfo as () => unknown)(), /pem must be a string/],
    ];
    for (const [f, re] of cases) {
      expect(f).toThrow(TypeError);
      expect(f).toThrow(re);
    }
  });
});

describe('certs API (files and modes)', () => {
  it('writes the CA and a node pair with their modes, creating the directory 0700', async () => {
    const dir = join(freshDir(), 'nested');
    const ca = await initCa(dir);
    expect(mode(dir)).toBe(0o700);
    expect(ca.certPath).toBe(join(dir, 'ca.pem'));
    expect(mode(ca.certPath)).toBe(0o644);
    expect(mode(ca.keyPath)).toBe(0o600);
    expect(ca.info).toMatchObject({ subjectCN: 'edgemesh cluster CA', isCa: true, identity: 'edgemesh cluster CA' });
    const w = await issueNodeCert(dir, 'node-a.example', { days: 30 });
    expect(w.certPath).toBe(join(dir, 'node-a.example.pem'));
    expect(mode(w.certPath)).toBe(0o644);
    expect(mode(w.keyPath)).toBe(0o600);
    expect(w.info).toMatchObject({ subjectCN: 'node-a.example', dnsNames: ['node-a.example'], identity: 'node-a.example', isCa: false });
    expect(Math.abs(new Date(w.info.notAfter).getTime() - (Date.now() + 30 * DAY * 1000))).toBeLessThan(120_000);
    expect(openssl('verify', '-CAfile', ca.certPath, w.certPath)).toContain(': OK');
    // no temporary files left behind
    expect(readdirSync(dir).sort()).toEqual(['ca.key', 'ca.pem', 'node-a.example.key', 'node-a.example.pem']);
  });

  it('refuses to replace a CA without force, and replaces it with force', async () => {
    const dir = freshDir();
    const first = await initCa(dir);
    await expect(initCa(dir)).rejects.toThrow(ConfigError);
    await expect(initCa(dir)).rejects.toThrow(/ca\.pem already exists/);
    expect(readCertInfo(readFileSync(first.certPath, 'utf8')).serialHex).toBe(first.info.serialHex);
    const second = await initCa(dir, { force: true, commonName: 'cluster two' });
    expect(second.info.serialHex).not.toBe(first.info.serialHex);
    expect(readCertInfo(readFileSync(second.certPath, 'utf8')).subjectCN).toBe('cluster two');
  });

  it('validates node names as Kubernetes does (DNS-1123 subdomain)', () => {
    for (const ok of ['node-1', 'a', 'ip-10-0-0-1.ec2.internal', 'x'.repeat(253)]) expect(() => validateNodeName(ok)).not.toThrow();
    for (const bad of ['', 'Node-1', '-a', 'a-', 'a..b', 'a_b', 'a/b', '../x', 'a b', 'x'.repeat(254), 'ca']) {
      expect(() => validateNodeName(bad), bad).toThrow(ConfigError);
    }
  });

  it('names the file when the CA is missing, unreadable or does not match', async () => {
    const dir = freshDir();
    await expect(issueNodeCert(dir, 'n1')).rejects.toThrow(/ca\.pem: not found/);
    await initCa(dir);
    const other = native().generateCa();
    writeFileSync(join(dir, 'ca.key'), other.keyPem);
    await expect(issueNodeCert(dir, 'n1')).rejects.toThrow(new RegExp(`${join(dir, 'ca.key')} is not the key of ${join(dir, 'ca.pem')}`));
    writeFileSync(join(dir, 'ca.pem'), 'not a certificate');
    await expect(issueNodeCert(dir, 'n1')).rejects.toThrow(ConfigError);
    await expect(issueNodeCert(dir, 'n1')).rejects.toThrow(/ca\.pem: not a PEM certificate/);
    expect(existsSync(join(dir, 'n1.pem'))).toBe(false);
    expect(() => readCertInfo('junk')).toThrow(ConfigError);
  });

  it('checks days and validity offsets before touching anything', async () => {
    const dir = freshDir();
    await expect(initCa(dir, { days: 0 })).rejects.toThrow(/--days 0/);
    await expect(initCa(dir, { days: 1.5 })).rejects.toThrow(ConfigError);
    await expect(initCa(dir, { notBeforeOffsetSeconds: 5, notAfterOffsetSeconds: 5 })).rejects.toThrow(ConfigError);
    expect(existsSync(dir)).toBe(false);
  });
});

describe('edgemesh-agent certs (the CLI process)', () => {
  function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
    if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run "npx tsc -p tsconfig.json" first`);
    const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 30_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }
  function refused(r: { status: number | null; stdout: string; stderr: string }, what: RegExp): void {
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^edgemesh-agent: [^\n]+\n$/);
    expect(r.stderr).toMatch(what);
    expect(r.stdout).toBe('');
  }

  it('init and issue write the files with their modes and print what they wrote', () => {
    const dir = join(freshDir(), 'pki');
    const init = cli('certs', 'init', '--dir', dir);
    expect(init.status, init.stderr).toBe(0);
    expect(init.stdout).toContain(`wrote ${join(dir, 'ca.pem')} (0644) and ${join(dir, 'ca.key')} (0600)`);
    expect(mode(dir)).toBe(0o700);
    expect(mode(join(dir, 'ca.pem'))).toBe(0o644);
    expect(mode(join(dir, 'ca.key'))).toBe(0o600);
    const caSerial = openssl('x509', '-noout', '-serial', '-in', join(dir, 'ca.pem')).replace('serial=', '').trim();
    expect(init.stdout).toContain(`serial:    ${caSerial}`);
    expect(init.stdout).toContain('CN=edgemesh cluster CA');

    const issue = cli('certs', 'issue', '--dir', dir, '--node', 'worker-7', '--days', '10');
    expect(issue.status, issue.stderr).toBe(0);
    const pem = join(dir, 'worker-7.pem');
    expect(issue.stdout).toContain(`wrote ${pem} (0644) and ${join(dir, 'worker-7.key')} (0600)`);
    expect(issue.stdout).toContain('CN=worker-7, DNS:worker-7');
    expect(issue.stdout).toContain(`serial:    ${openssl('x509', '-noout', '-serial', '-in', pem).replace('serial=', '').trim()}`);
    expect(issue.stdout).toMatch(/not after: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ/);
    expect(mode(pem)).toBe(0o644);
    expect(mode(join(dir, 'worker-7.key'))).toBe(0o600);
    expect(openssl('verify', '-CAfile', join(dir, 'ca.pem'), pem)).toContain(': OK');
    const end = new Date(readCertInfo(readFileSync(pem, 'utf8')).notAfter).getTime();
    expect(Math.abs(end - (Date.now() + 10 * DAY * 1000))).toBeLessThan(120_000);

    // an existing CA is kept without --force, replaced with it
    const again = cli('certs', 'init', '--dir', dir);
    refused(again, /ca\.pem already exists.*--force/);
    expect(openssl('x509', '-noout', '-serial', '-in', join(dir, 'ca.pem')).trim()).toBe(`serial=${caSerial}`);
    const forced = cli('certs', 'init', '--dir', dir, '--force');
    expect(forced.status, forced.stderr).toBe(0);
    expect(openssl('x509', '-noout', '-serial', '-in', join(dir, 'ca.pem')).trim()).not.toBe(`serial=${caSerial}`);
    // the node certificate of the old CA no longer verifies
    expect(spawnSync('openssl', ['verify', '-CAfile', join(dir, 'ca.pem'), pem]).status).not.toBe(0);
  });

  it('refuses bad input with exit 2 and one line naming the problem', () => {
    const dir = freshDir();
    refused(cli('certs'), /missing subcommand/);
    refused(cli('certs', 'renew', '--dir', dir), /unknown subcommand "renew"/);
    refused(cli('certs', 'init'), /missing --dir/);
    refused(cli('certs', 'init', '--dir'), /--dir needs a value/);
    refused(cli('certs', 'init', '--dir', dir, '--node', 'x'), /unknown flag --node/);
    refused(cli('certs', 'init', '--dir', dir, '--days', 'ten'), /--days "ten"/);
    refused(cli('certs', 'issue', '--dir', dir), /missing --node/);
    refused(cli('certs', 'issue', '--node', 'n1'), /missing --dir/);
    refused(cli('certs', 'issue', '--dir', dir, '--node', 'Bad_Name'), /--node Bad_Name: not a DNS-1123 subdomain/);
    refused(cli('certs', 'issue', '--dir', dir, '--node', 'n1'), new RegExp(`${join(dir, 'ca.pem')}: not found`));
    expect(existsSync(dir)).toBe(false);

    expect(cli('certs', 'init', '--dir', dir).status).toBe(0);
    writeFileSync(join(dir, 'ca.key'), native().generateCa().keyPem);
    refused(cli('certs', 'issue', '--dir', dir, '--node', 'n1'), /ca\.key is not the key of .*ca\.pem/);
    writeFileSync(join(dir, 'ca.pem'), 'garbage\n');
    refused(cli('certs', 'issue', '--dir', dir, '--node', 'n1'), /ca\.pem: not a PEM certificate/);
    expect(readdirSync(dir).sort()).toEqual(['ca.key', 'ca.pem']);
  });

  it('has help of its own and a line in the command overview', () => {
    const h = cli('certs', '--help');
    expect(h.status).toBe(0);
    expect(h.stdout).toContain('edgemesh-agent certs init  --dir DIR');
    expect(h.stdout).toContain('edgemesh-agent certs issue --dir DIR --node NAME');
    expect(cli('--help').stdout).toMatch(/^ {2}certs +/m);
  });
});
