// Certificates for the agents' mutual-TLS tunnel: the cluster CA and one certificate per node,
// written as PEM files into one directory. A node's identity is its certificate's CN (the first
// DNS subjectAltName when there is no CN), signed by the cluster CA.
//
//   DIR/ca.pem    0644  the cluster CA certificate (every agent needs it to verify its peers)
//   DIR/ca.key    0600  the CA key (only where certificates are issued)
//   DIR/NAME.pem  0644  a node's certificate: CN and DNS SAN = NAME, serverAuth + clientAuth
//   DIR/NAME.key  0600  its key (PKCS#8, unencrypted: the agent reads it unattended)
//
// The cryptography is native (native/certs/certs_core.cc over OpenSSL); names, paths and modes are
// checked and chosen here. Each file is written to a temporary name in DIR and renamed into
// place, so a reader never sees half a key and a failed run leaves the old files as they were.
import { randomBytes } from 'node:crypto';
import { chmod, lstat, mkdir, open, readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ConfigError, EdgeMeshError } from '../errors.js';
import { native } from '../native/load.js';
import type { NativeCertInfo } from '../native/binding.js';

export const CA_CERT_FILE = 'ca.pem';
export const CA_KEY_FILE = 'ca.key';
export const CERT_MODE = 0o644;
export const KEY_MODE = 0o600;
export const DIR_MODE = 0o700;

const DAY = 86_400;
export const DEFAULT_CA_DAYS = 3650;
export const DEFAULT_NODE_DAYS = 365;
export const MAX_DAYS = 36_500;
/** notBefore is back-dated by an hour: a peer whose clock lags a little still accepts a fresh certificate. */
const DEFAULT_NOT_BEFORE = -3600;

export interface CertInfo extends NativeCertInfo {
  /** Who the certificate names: its CN, or its first DNS subjectAltName when it has no CN. */
  identity: string;
}

export interface ValidityOptions {
  /** Validity from now, in days (1 to 36500). */
  days?: number;
  /** Seconds relative to now; overrides the defaults (tests use them for expired certificates). */
  notBeforeOffsetSeconds?: number;
  /** Seconds relative to now; overrides `days`. */
  notAfterOffsetSeconds?: number;
}

export interface InitCaOptions extends ValidityOptions {
  /** Default "edgemesh cluster CA". */
  commonName?: string;
  /** Replace an existing CA (every certificate it signed stops verifying). */
  force?: boolean;
}

export type IssueOptions = ValidityOptions;

export interface WrittenCert {
  certPath: string;
  keyPath: string;
  info: CertInfo;
}

// Kubernetes node names are DNS-1123 subdomains (IsDNS1123Subdomain: no per-label limit).
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Throws a ConfigError naming --node when `name` is not a Kubernetes node name we can issue for. */
export function validateNodeName(name: string): void {
  if (typeof name !== 'string' || name.length === 0) throw new ConfigError('--node: the node name is empty', 'node');
  if (name.length > 253) throw new ConfigError(`--node ${name}: longer than 253 characters (${name.length})`, 'node');
  if (!DNS1123_SUBDOMAIN.test(name)) {
    throw new ConfigError(`--node ${name}: not a DNS-1123 subdomain (lowercase a-z, 0-9, '-' and '.', starting and ending with a letter or digit)`, 'node');
  }
  // NAME.pem / NAME.key would be the CA's own files.
  if (name === 'ca') throw new ConfigError('--node ca: the files would be the CA\'s own ca.pem and ca.key', 'node');
}

function offsets(opts: ValidityOptions, defaultDays: number): { notBeforeOffsetSeconds: number; notAfterOffsetSeconds: number } {
  const days = opts.days ?? defaultDays;
  if (!Number.isSafeInteger(days) || days < 1 || days > MAX_DAYS) throw new ConfigError(`--days ${days}: expected a whole number of days from 1 to ${MAX_DAYS}`, 'days');
  const notBefore = opts.notBeforeOffsetSeconds ?? DEFAULT_NOT_BEFORE;
  const notAfter = opts.notAfterOffsetSeconds ?? days * DAY;
  for (const [field, v] of [['notBeforeOffsetSeconds', notBefore], ['notAfterOffsetSeconds', notAfter]] as const) {
    if (!Number.isSafeInteger(v) || Math.abs(v) > MAX_DAYS * DAY) throw new ConfigError(`${field} ${v}: expected whole seconds within ${MAX_DAYS} days of now`, field);
  }
  if (notAfter <= notBefore) throw new ConfigError(`notAfterOffsetSeconds ${notAfter} is not after notBeforeOffsetSeconds ${notBefore}`, 'notAfterOffsetSeconds');
  return { notBeforeOffsetSeconds: notBefore, notAfterOffsetSeconds: notAfter };
}

function withIdentity(info: NativeCertInfo): CertInfo {
  return { ...info, identity: info.subjectCN || info.dnsNames[0] || '' };
}

/** A failure of the native core, with its stable code (EBADCERT, EKEYMISMATCH, ...), as an EdgeMeshError. */
function certError(e: unknown): unknown {
  const err = e as { code?: unknown; message?: unknown };
  if (e instanceof Error && !(e instanceof TypeError) && typeof err.code === 'string') return new EdgeMeshError(err.code, String(err.message), { cause: e });
  return e;
}

/** certInfo of the first certificate in `pemText`; ConfigError when there is none. */
export function readCertInfo(pemText: string): CertInfo {
  if (typeof pemText !== 'string') throw new TypeError('pemText must be a string');
  try {
    return withIdentity(native().certInfo(pemText));
  } catch (e) {
    if ((e as { code?: unknown }).code === 'EBADCERT') throw new ConfigError(`not a PEM certificate: ${(e as Error).message}`, 'pem', { cause: e });
    throw certError(e);
  }
}

async function ensureDir(dir: string): Promise<void> {
  if (typeof dir !== 'string' || dir.length === 0) throw new ConfigError('--dir: no directory given', 'dir');
  try {
    // An existing directory keeps its mode: it may be shared, and its owner chose it.
    await mkdir(dir, { recursive: true, mode: DIR_MODE });
    const st = await lstat(dir);
    if (!st.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
  } catch (e) {
    throw new ConfigError(`--dir ${dir}: cannot use it as a directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, 'dir', { cause: e });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
}

/** Writes `data` to a temporary file beside `path` with `mode` (not left to the umask); returns its name. */
async function writeTemp(path: string, data: string, mode: number): Promise<string> {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.chmod(mode);
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => {});
    throw e;
  }
  await fh.close();
  return tmp;
}

/** Puts a certificate and its key in place. Both are written in full before either is renamed, so a failed write leaves the old pair as it was. */
async function writePair(certPath: string, certPem: string, keyPath: string, keyPem: string): Promise<void> {
  const temps: string[] = [];
  try {
    const keyTmp = await writeTemp(keyPath, keyPem, KEY_MODE);
    temps.push(keyTmp);
    const certTmp = await writeTemp(certPath, certPem, CERT_MODE);
    temps.push(certTmp);
    await rename(keyTmp, keyPath);
    temps.shift();
    await rename(certTmp, certPath);
    temps.shift();
  } catch (e) {
    for (const t of temps) await unlink(t).catch(() => {});
    const err = e as NodeJS.ErrnoException;
    throw new EdgeMeshError(err.code ?? 'EWRITE', `cannot write ${err.path ?? dirname(certPath)}: ${err.code ?? err.message}`, { cause: e });
  }
  // rename keeps the temporary file's mode; chmod again in case a file system ignored it.
  await chmod(keyPath, KEY_MODE);
  await chmod(certPath, CERT_MODE);
}

/**
 * Creates the cluster CA in `dir` (DIR/ca.pem 0644, DIR/ca.key 0600; DIR created 0700 if missing).
 * Refuses to replace an existing ca.pem or ca.key unless `force`.
 */
export async function initCa(dir: string, opts: InitCaOptions = {}): Promise<WrittenCert> {
  const validity = offsets(opts, DEFAULT_CA_DAYS);
  const cn = opts.commonName;
  if (cn !== undefined && (typeof cn !== 'string' || cn.length === 0 || cn.length > 64)) {
    throw new ConfigError(`commonName "${cn}": expected 1 to 64 characters`, 'commonName');
  }
  await ensureDir(dir);
  const certPath = join(dir, CA_CERT_FILE);
  const keyPath = join(dir, CA_KEY_FILE);
  if (!opts.force) {
    for (const p of [certPath, keyPath]) {
      if (await exists(p)) throw new ConfigError(`${p} already exists: refusing to replace the cluster CA without --force (every certificate it signed would stop verifying)`, 'force');
    }
  }
  let pair;
  try {
    pair = native().generateCa({ ...(cn !== undefined ? { commonName: cn } : {}), ...validity });
  } catch (e) {
    throw certError(e);
  }
  await writePair(certPath, pair.certPem, keyPath, pair.keyPem);
  return { certPath, keyPath, info: readCertInfo(pair.certPem) };
}

async function readCaFile(path: string, dir: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ConfigError(`${path}: not found (create the CA first: edgemesh-agent certs init --dir ${dir})`, 'dir', { cause: e });
    throw new ConfigError(`${path}: cannot read it (${code ?? (e as Error).message})`, 'dir', { cause: e });
  }
}

/**
 * Issues DIR/NAME.pem (0644) and DIR/NAME.key (0600) for node `node`, signed by DIR's CA: CN and
 * DNS subjectAltName = node, serverAuth and clientAuth. An existing certificate for the node is
 * replaced (renewal).
 */
export async function issueNodeCert(dir: string, node: string, opts: IssueOptions = {}): Promise<WrittenCert> {
  validateNodeName(node);
  const validity = offsets(opts, DEFAULT_NODE_DAYS);
  if (typeof dir !== 'string' || dir.length === 0) throw new ConfigError('--dir: no directory given', 'dir');
  const caCertPath = join(dir, CA_CERT_FILE);
  const caKeyPath = join(dir, CA_KEY_FILE);
  const caCertPem = await readCaFile(caCertPath, dir);
  const caKeyPem = await readCaFile(caKeyPath, dir);
  let pair;
  try {
    pair = native().issueCert({ caCertPem, caKeyPem, name: node, ...validity });
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    const msg = (e as Error).message;
    if (code === 'EBADCERT') throw new ConfigError(`${caCertPath}: not a PEM certificate (${msg})`, 'dir', { cause: e });
    if (code === 'EBADKEY') throw new ConfigError(`${caKeyPath}: not an unencrypted PEM private key (${msg})`, 'dir', { cause: e });
    if (code === 'ENOTCA') throw new ConfigError(`${caCertPath}: ${msg}`, 'dir', { cause: e });
    if (code === 'EKEYMISMATCH') throw new ConfigError(`${caKeyPath} is not the key of ${caCertPath} (the files of two different CAs?)`, 'dir', { cause: e });
    if (code === 'EINVAL') throw new ConfigError(msg, 'node', { cause: e });
    throw certError(e);
  }
  const certPath = join(dir, `${node}.pem`);
  const keyPath = join(dir, `${node}.key`);
  await writePair(certPath, pair.certPem, keyPath, pair.keyPem);
  return { certPath, keyPath, info: readCertInfo(pair.certPem) };
}
