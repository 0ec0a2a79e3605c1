// The `--services-dir DIR` source: every *.yaml / *.yml / *.json file in DIR (not recursive,
// hidden files skipped), watched for changes, loaded into a ClusterStore.
//
// - fs.watch on the directory with a short debounce, plus a periodic rescan as a fallback
//   (fs.watch can miss events: network filesystems, a directory replaced, ConfigMap symlink
//   swaps). Editors' and kubectl-like atomic replaces (write temp file, rename over) are seen
//   because a rescan compares every file's (inode, size, mtime, ctime) signature.
// - A bad file (syntax, an invalid object, a duplicate of an object defined in another file)
//   is reported once per distinct problem through onFileError(path, message) and skipped. Like
//   kube-proxy with a bad update, the objects it held keep their LAST GOOD state until the file
//   is fixed or removed; a removed file removes its objects.
// - A missing or unreadable directory at start is a ConfigError. Later, a vanished directory is
//   reported and the last state kept until it comes back.
// - After the first scan the store is synced (a directory is a complete list of everything).
import { watch as fsWatch, type FSWatcher } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';
import type { EndpointSliceInfo, NodeInfo, ServiceInfo } from './model.js';
import { serviceKey } from './model.js';
import { parseManifests, type ManifestObjects } from './manifests.js';
import type { ClusterStore } from './store.js';

export interface StaticSourceOptions {
  dir: string;
  store: ClusterStore;
  /** Quiet time after a watch event before rescanning. Default 100 ms. */
  debounceMs?: number;
  /**
   * Longest delay of a rescan while events keep coming (a trailing-only debounce never fires for
   * a directory written more often than debounceMs). Default 500 ms.
   */
  maxDelayMs?: number;
  /** Periodic rescan. Default 5000 ms; 0 disables. */
  rescanIntervalMs?: number;
  /** A file (or the directory) could not be used; reported once per distinct problem. */
  onFileError?: (path: string, message: string) => void;
  /**
   * A file loads but holds a problem worth a warning (a Node whose tunnel address annotation does
   * not parse: the node is kept without one). Reported when the file is (re)loaded. Default:
   * onFileError.
   */
  onWarning?: (path: string, message: string) => void;
  /** Notes worth a debug log: skipped kinds, reloads. */
  onDebug?: (message: string) => void;
  /** The directory was read (every scan that could list it): the source answered. */
  onAnswer?: () => void;
  /**
   * Make a bad file at start fatal: start() throws a ConfigError `<path>: <reason>` (the agent's
   * `--strict-manifests`, for CI). Without it (the default) a bad file is named and skipped at
   * start as later, and the good ones are applied.
   */
  strictStart?: boolean;
}

export interface ScanResult {
  files: number;
  badFiles: string[];
  services: number;
  endpointSlices: number;
  endpoints: number;
  nodes: number;
}

const MANIFEST = /\.(ya?ml|json)$/;

interface FileState {
  signature: string;
  /** The last good content; undefined when the file has never been good. */
  good?: ManifestObjects;
  /** The problem currently reported for this file. */
  error?: string;
}

export class StaticSource {
  private readonly opts: Required<Omit<StaticSourceOptions, 'onFileError' | 'onWarning' | 'onDebug' | 'strictStart' | 'onAnswer'>> &
    Pick<StaticSourceOptions, 'onFileError' | 'onWarning' | 'onDebug' | 'strictStart' | 'onAnswer'>;
  private readonly files = new Map<string, FileState>();
  private watcher: FSWatcher | undefined;
  private debounce: NodeJS.Timeout | undefined;
  /** When the first event of the pending debounce arrived. */
  private debounceSince = 0;
  private interval: NodeJS.Timeout | undefined;
  private scanning: Promise<ScanResult> | undefined;
  private rescanQueued = false;
  private stopped = false;
  private published = false;
  private dirError: string | undefined;
  private readonly duplicateErrors = new Map<string, string>();

  constructor(options: StaticSourceOptions) {
    this.opts = { debounceMs: 100, maxDelayMs: 500, rescanIntervalMs: 5000, ...options };
  }

  /** First scan (ConfigError when the directory is missing or unreadable), then watching. */
  async start(): Promise<ScanResult> {
    try {
      const st = await stat(this.opts.dir);
      if (!st.isDirectory()) throw new ConfigError(`--services-dir "${this.opts.dir}": not a directory`, 'services-dir');
      await readdir(this.opts.dir);
    } catch (e) {
      if (e instanceof ConfigError) throw e;
      throw new ConfigError(`--services-dir "${this.opts.dir}": ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'services-dir', { cause: e });
    }
    const result = await this.rescan();
    if (this.opts.strictStart && result.badFiles.length > 0) {
      const path = result.badFiles[0] as string;
      this.stop();
      throw new ConfigError(`${path}: ${this.files.get(path)?.error ?? 'bad file'}`, 'services-dir');
    }
    this.watchDir();
    if (this.opts.rescanIntervalMs > 0) {
      this.interval = setInterval(() => {
        if (!this.watcher) this.watchDir();
        void this.rescan();
      }, this.opts.rescanIntervalMs);
      this.interval.unref();
    }
    return result;
  }

  stop(): void {
    this.stopped = true;
    this.watcher?.close();
    this.watcher = undefined;
    if (this.debounce) clearTimeout(this.debounce);
    if (this.interval) clearInterval(this.interval);
  }

  /** Rescans now (coalesced with a scan in progress) and loads the result into the store. */
  rescan(): Promise<ScanResult> {
    if (this.scanning) {
      this.rescanQueued = true;
      return this.scanning;
    }
    const run = async (): Promise<ScanResult> => {
      try {
        let r = await this.scanOnce();
        while (this.rescanQueued && !this.stopped) {
          this.rescanQueued = false;
          r = await this.scanOnce();
        }
        return r;
      } finally {
        this.scanning = undefined;
      }
    };
    this.scanning = run();
    return this.scanning;
  }

  private watchDir(): void {
    if (this.stopped) return;
    try {
      this.watcher = fsWatch(this.opts.dir, { persistent: false }, () => this.schedule());
      this.watcher.on('error', () => {
        this.watcher?.close();
        this.watcher = undefined; // re-established by the periodic rescan
        this.schedule();
      });
    } catch {
      this.watcher = undefined;
    }
  }

  private schedule(): void {
    if (this.stopped) return;
    const now = Date.now();
    if (this.debounce) {
      // Events keep coming: push the rescan back, but never past maxDelayMs after the first one.
      if (now - this.debounceSince >= this.opts.maxDelayMs) return;
      clearTimeout(this.debounce);
    } else this.debounceSince = now;
    const wait = Math.min(this.opts.debounceMs, Math.max(0, this.debounceSince + this.opts.maxDelayMs - now));
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.rescan();
    }, wait);
  }

  private report(path: string, message: string): void {
    this.opts.onFileError?.(path, message);
  }

  private async scanOnce(): Promise<ScanResult> {
    let names: string[];
    try {
      names = (await readdir(this.opts.dir)).filter((n) => MANIFEST.test(n) && !n.startsWith('.')).sort();
      this.dirError = undefined;
      this.opts.onAnswer?.();
    } catch (e) {
      const msg = `cannot read directory: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; keeping the last state`;
      if (this.dirError !== msg) this.report(this.opts.dir, msg);
      this.dirError = msg;
      return this.summary();
    }
    const present = new Set(names.map((n) => join(this.opts.dir, n)));
    // Publish only what changed: a rescan of an untouched directory (every rescanIntervalMs)
    // costs its stat calls and nothing more (no rebuilt maps of every service, no garbage).
    let changed = !this.published;
    for (const p of [...this.files.keys()]) {
      if (!present.has(p)) {
        this.files.delete(p);
        changed = true;
      }
    }
    for (const path of present) if (await this.loadFile(path)) changed = true;
    if (this.stopped || !changed) return this.summary();
    this.publish();
    this.published = true;
    return this.summary();
  }

  /** Loads `path` if it changed since the last scan; returns whether its state changed. */
  private async loadFile(path: string): Promise<boolean> {
    const prev = this.files.get(path);
    let signature: string;
    let text: string;
    try {
      const st = await stat(path);
      if (!st.isFile()) return this.files.delete(path);
      signature = `${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
      if (prev && prev.signature === signature) return false;
      text = await readFile(path, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return this.files.delete(path); // removed between readdir and read: the next scan settles it
      this.fail(path, prev, prev?.signature ?? '', `cannot read: ${code ?? (e as Error).message}`);
      return true;
    }
    try {
      const objs = parseManifests(text, path);
      for (const s of objs.skipped) this.opts.onDebug?.(`${path}: ignoring ${s} (not a Service, EndpointSlice, Endpoints or Node)`);
      for (const w of objs.warnings) (this.opts.onWarning ?? this.opts.onFileError)?.(path, w);
      this.files.set(path, { signature, good: objs });
      if (prev?.error) this.opts.onDebug?.(`${path}: loads again`);
    } catch (e) {
      this.fail(path, prev, signature, e instanceof ConfigError ? e.message : String(e));
    }
    return true;
  }

  private fail(path: string, prev: FileState | undefined, signature: string, message: string): void {
    const kept = prev?.good ? '; keeping its last good state' : '';
    const full = `${message}${kept}`;
    if (prev?.error !== full) this.report(path, full);
    const next: FileState = { signature, error: full };
    if (prev?.good) next.good = prev.good;
    this.files.set(path, next);
  }

  /** Merges the files (in name order; a duplicate object in a later file is reported and skipped) into the store. */
  private publish(): void {
    const services = new Map<string, { info: ServiceInfo; path: string }>();
    const slices = new Map<string, { info: EndpointSliceInfo; path: string }>();
    const endpoints = new Map<string, { infos: EndpointSliceInfo[]; path: string }>();
    const nodes = new Map<string, { info: NodeInfo; path: string }>();
    const dups = new Map<string, string>();
    const dup = (path: string, what: string, other: string): void => {
      const msg = `${what} is also defined in ${other}; this definition is ignored`;
      dups.set(`${path}\n${what}`, msg);
    };
    for (const [path, st] of [...this.files.entries()].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      const g = st.good;
      if (!g) continue;
      for (const s of g.services) {
        const k = serviceKey(s.namespace, s.name);
        const seen = services.get(k);
        if (seen && seen.path !== path) dup(path, `Service ${k}`, seen.path);
        else services.set(k, { info: s, path });
      }
      for (const s of g.endpointSlices) {
        const k = `${s.namespace}/${s.name}`;
        const seen = slices.get(k);
        if (seen && seen.path !== path) dup(path, `EndpointSlice ${k}`, seen.path);
        else slices.set(k, { info: s, path });
      }
      for (const e of g.endpoints) {
        const k = serviceKey(e.namespace, e.name);
        const seen = endpoints.get(k);
        if (seen && seen.path !== path) dup(path, `Endpoints ${k}`, seen.path);
        else endpoints.set(k, { infos: e.slices, path });
      }
      for (const n of g.nodes) {
        const seen = nodes.get(n.name);
        if (seen && seen.path !== path) dup(path, `Node ${n.name}`, seen.path);
        else nodes.set(n.name, { info: n, path });
      }
    }
    for (const [k, msg] of dups) if (this.duplicateErrors.get(k) !== msg) this.report(k.split('\n')[0] as string, msg);
    this.duplicateErrors.clear();
    for (const [k, v] of dups) this.duplicateErrors.set(k, v);
    this.opts.store.replaceAll({
      services: [...services.values()].map((v) => v.info),
      endpointSlices: [...slices.values()].map((v) => v.info),
      endpoints: [...endpoints.values()].flatMap((v) => v.infos),
      nodes: [...nodes.values()].map((v) => v.info),
    });
  }

  private summary(): ScanResult {
    const r: ScanResult = { files: this.files.size, badFiles: [], services: 0, endpointSlices: 0, endpoints: 0, nodes: 0 };
    for (const [path, st] of this.files) {
      if (st.error) r.badFiles.push(path);
      r.services += st.good?.services.length ?? 0;
      r.endpointSlices += st.good?.endpointSlices.length ?? 0;
      r.endpoints += st.good?.endpoints.length ?? 0;
      r.nodes += st.good?.nodes.length ?? 0;
    }
    r.badFiles.sort();
    return r;
  }
}
