// The tunnel's credentials on disk: read and checked once at start (a problem there is a
// one-line ConfigError, exit 2, before anything on the node changes), then watched: a changed
// file is read again and, when the three files form a usable set, installed for new
// connections (live ones keep the session they have). A set that does not work is logged and
// the last good one stays in use.
//
// Why polling and not fs.watch: a Kubernetes Secret volume is updated by swapping a symlink
// (`..data`) in the directory, which inotify on the file itself does not see; reading three
// small files every couple of seconds is cheap and sees every way a file can change.
import { readFileSync } from 'node:fs';
import { ConfigError, EdgeMeshError } from '../errors.js';
import { native } from '../native/load.js';
import type { Logger } from '../log.js';

export interface TunnelFiles {
  ca: string;
  cert: string;
  key: string;
}

export interface TunnelPem {
  ca: string;
  cert: string;
  key: string;
}

export interface CredentialInfo {
  /** The node name our certificate carries (CN, or its first DNS name). */
  node: string;
  /** Its serial, hex. */
  serial: string;
  /** Its expiry, ISO 8601 UTC. */
  notAfter: string;
}

const FLAGS: Record<keyof TunnelFiles, string> = { ca: '--tunnel-ca', cert: '--tunnel-cert', key: '--tunnel-key' };

/** Reads the three files; a missing or unreadable one is a ConfigError naming its flag and path. */
export function readTunnelPem(files: TunnelFiles, read: (p: string) => string = (p) => readFileSync(p, 'utf8')): TunnelPem {
  const out = {} as TunnelPem;
  for (const k of ['ca', 'cert', 'key'] as const) {
    try {
      out[k] = read(files[k]);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      throw new ConfigError(`${FLAGS[k]} "${files[k]}": cannot read it (${err.code ?? err.message})`, FLAGS[k].slice(2));
    }
  }
  return out;
}

/** Builds the credentials once (as the tunnel will) without starting anything; throws ConfigError naming what is wrong. */
export function checkTunnelPem(pem: TunnelPem, files: TunnelFiles): CredentialInfo {
  try {
    return native().checkTunnelCredentials(pem);
  } catch (e) {
    const msg = (e as Error).message.split('\n')[0];
    throw new ConfigError(`tunnel credentials (${files.cert}, ${files.key}, CA ${files.ca}): ${msg}`, 'tunnel-cert', { cause: e });
  }
}

export interface CredentialWatcherOptions {
  files: TunnelFiles;
  /** Installs a set (on every proxy); throws when it is not usable. */
  apply: (pem: TunnelPem) => CredentialInfo;
  log: Logger;
  /** How often the files are read (default 2000 ms). */
  periodMs?: number;
  /** The set already installed at start. */
  initial: { pem: TunnelPem; info: CredentialInfo };
}

/** Re-reads the files every period and installs a changed, usable set. */
export class CredentialWatcher {
  private readonly opts: CredentialWatcherOptions;
  private timer: NodeJS.Timeout | undefined;
  private applied: TunnelPem;
  private lastBad = '';
  /** The certificate in use. */
  info: CredentialInfo;
  /** Rotations installed, and changed sets refused, since start. */
  rotations = 0;
  failures = 0;

  constructor(opts: CredentialWatcherOptions) {
    this.opts = opts;
    this.applied = opts.initial.pem;
    this.info = opts.initial.info;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.check(), this.opts.periodMs ?? 2000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** One look at the files (the timer calls this; tests may too). Returns true when a new set was installed. */
  check(): boolean {
    let pem: TunnelPem;
    try {
      pem = readTunnelPem(this.opts.files);
    } catch (e) {
      this.refuse(`unreadable:${(e as Error).message}`, (e as Error).message);
      return false;
    }
    if (pem.ca === this.applied.ca && pem.cert === this.applied.cert && pem.key === this.applied.key) {
      this.lastBad = '';
      return false;
    }
    // A Secret update swaps all three files at once, but a hand copy may be caught half done:
    // an unusable set is refused and tried again next period (when the copy has finished).
    try {
      const info = this.opts.apply(pem);
      this.applied = pem;
      this.lastBad = '';
      const before = this.info;
      this.info = info;
      this.rotations++;
      this.opts.log.info({ serial: info.serial, previousSerial: before.serial, notAfter: info.notAfter, node: info.node }, `tunnel: new certificate in use (serial ${info.serial}, not after ${info.notAfter}); live connections keep theirs`);
      return true;
    } catch (e) {
      const msg = (e instanceof EdgeMeshError || e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '';
      this.refuse(pem.ca + pem.cert + pem.key, msg);
      return false;
    }
  }

  private refuse(key: string, message: string): void {
    if (key === this.lastBad) return; // said once per distinct content
    this.lastBad = key;
    this.failures++;
    this.opts.log.error({ files: this.opts.files, serial: this.info.serial }, `tunnel: changed credentials not used, keeping serial ${this.info.serial}: ${message}`);
  }
}
