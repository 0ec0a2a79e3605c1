// Real OpenSSL (the `openssl` command) for the tunnel tests: certificates the agent's own `certs`
// command would never make (another CA, expired), and TLS clients (`openssl s_client`) against an
// agent's tunnel port.
import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Netns } from './netns.js';

const execFileP = promisify(execFile);

export async function openssl(args: string[], input?: string): Promise<string> {
  try {
    const p = execFileP('openssl', args, { timeout: 20_000, maxBuffer: 1 << 24 });
    if (input !== undefined) {
      p.child.stdin!.on('error', () => undefined);
      p.child.stdin!.end(input);
    }
    return (await p).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new Error(`openssl ${args.join(' ')}: ${(err.stderr ?? '').trim() || err.message}`);
  }
}

/** A self-signed CA (EC P-256) in `dir`: ca.pem, ca.key. */
export async function makeCa(dir: string, cn: string): Promise<{ cert: string; key: string }> {
  mkdirSync(dir, { recursive: true });
  const cert = join(dir, 'ca.pem');
  const key = join(dir, 'ca.key');
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-subj', `/CN=${cn}`, '-days', '30',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
  return { cert, key };
}

/**
 * A leaf certificate for `name` (CN and DNS SAN, plus IP SANs `ips`; client and server use) signed by the given CA
 * with `openssl ca`, whose validity can be set to any dates (YYYYMMDDHHMMSSZ): an expired one,
 * one not yet valid. Returns the paths of the certificate and its key.
 */
export async function issueWithOpenssl(o: { dir: string; caCert: string; caKey: string; name: string; file: string; startdate?: string; enddate?: string; ips?: string[] }): Promise<{ cert: string; key: string }> {
  const work = join(o.dir, `ca-work-${o.file}`);
  mkdirSync(work, { recursive: true });
  writeFileSync(join(work, 'index.txt'), '');
  writeFileSync(join(work, 'serial'), `${BigInt(Date.now()).toString(16).padStart(16, '0')}\n`);
  const cnf = join(work, 'ca.cnf');
  writeFileSync(cnf, `[ ca ]
default_ca = CA_default
[ CA_default ]
database = ${work}/index.txt
new_certs_dir = ${work}
serial = ${work}/serial
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
[ policy_any ]
commonName = supplied
[ leaf ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:${o.name}${(o.ips ?? []).map((ip) => `,IP:${ip}`).join('')}
`);
  const key = join(o.dir, `${o.file}.key`);
  const csr = join(work, 'leaf.csr');
  const cert = join(o.dir, `${o.file}.pem`);
  await openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${o.name}`]);
  await openssl(['ca', '-batch', '-notext', '-config', cnf, '-extensions', 'leaf', '-cert', o.caCert, '-keyfile', o.caKey, '-in', csr, '-out', cert,
    ...(o.startdate ? ['-startdate', o.startdate] : []), ...(o.enddate ? ['-enddate', o.enddate] : ['-days', '30'])]);
  return { cert, key };
}

/** `openssl x509 -serial` of a PEM certificate (file or text): uppercase hex, as OpenSSL prints it. */
export async function serialOf(pem: { file?: string; text?: string }): Promise<string> {
  const out = pem.file ? await openssl(['x509', '-noout', '-serial', '-in', pem.file]) : await openssl(['x509', '-noout', '-serial'], pem.text);
  return out.trim().replace(/^serial=/, '').toUpperCase();
}

export interface SClientResult {
  code: number;
  stdout: string;
  stderr: string;
  /** The first certificate the server presented (PEM), if any. */
  serverCert?: string;
}

/**
 * `openssl s_client` TLS 1.3 from namespace `ns` to `connect` (host:port), verifying the server
 * against `ca` and name `servername`, with an optional client certificate. `-ign_eof` keeps it
 * reading until the server closes, bounded by `timeoutS`: a refusal that only comes after the
 * client's Finished (TLS 1.3 client authentication) is still seen.
 */
export async function sClient(ns: Netns, o: { connect: string; ca: string; servername: string; cert?: string; key?: string; input?: string; timeoutS?: number; waitForClose?: boolean }): Promise<SClientResult> {
  const args = ['-k', '1', String(o.timeoutS ?? 4), 'openssl', 's_client', '-connect', o.connect, '-tls1_3', '-CAfile', o.ca, '-servername', o.servername, '-verify_hostname', o.servername, '-verify_return_error', '-showcerts',
    ...(o.cert ? ['-cert', o.cert, '-key', o.key ?? o.cert] : []), ...(o.waitForClose ?? true ? ['-ign_eof'] : [])];
  const r = await ns.run('timeout', args, { allowFail: true, input: o.input ?? '', timeoutMs: ((o.timeoutS ?? 4) + 3) * 1000 });
  const m = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/.exec(r.stdout);
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, ...(m ? { serverCert: m[0] } : {}) };
}

export function readPem(file: string): string {
  return readFileSync(file, 'utf8');
}
