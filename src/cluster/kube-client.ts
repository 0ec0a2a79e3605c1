// A lean list/watch client for the Kubernetes API over node:http / node:https: what the
// Kubernetes source needs and nothing more (lists with paging, watches as JSON lines), and the
// connection settings of in-cluster config, a kubeconfig file or a plain --api-server URL.
//
// @kubernetes/client-node is some 26 MiB of live heap once loaded; it is imported (lazily) only
// for a kubeconfig user with `exec` or `auth-provider` credentials, and then only to produce the
// Authorization header (it runs and caches the credential plugin). Transport is ours either way.
import { readFileSync, statSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest, type RequestOptions } from 'node:https';
import { dirname, isAbsolute, join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../errors.js';

export type KubeSourceConfig =
  | { kind: 'in-cluster' }
  | { kind: 'kubeconfig'; file: string }
  | { kind: 'api-server'; url: string; ca?: string; cert?: string; key?: string };

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

type Auth =
  | { kind: 'none' }
  | { kind: 'token'; token: string }
  /** A token file re-read when it changes (bound service account tokens rotate). */
  | { kind: 'token-file'; file: string }
  | { kind: 'basic'; username: string; password: string }
  /** exec / auth-provider credentials: the client library's KubeConfig makes the header. */
  | { kind: 'library'; file: string; why: string };

/** Where and how to reach the API (what makeKubeConfig returns). */
export interface KubeClientConfig {
  /** The server URL; a path in it prefixes every request. */
  server: URL;
  /** How the config was given, for messages: `--kubeconfig "FILE"`, `in-cluster config`, `--api-server "URL"`. */
  origin: string;
  tls: { ca?: Buffer; cert?: Buffer; key?: Buffer; insecure?: boolean; servername?: string };
  auth: Auth;
}

export interface LoadOptions {
  /** Default: process.env (KUBERNETES_SERVICE_HOST / _PORT for in-cluster). */
  env?: Readonly<Record<string, string | undefined>>;
  /** In-cluster: the directory holding ca.crt and token. Default SERVICE_ACCOUNT_DIR. */
  serviceAccountDir?: string;
}

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

function readFileNamed(origin: string, what: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new ConfigError(`${origin}: ${what} "${file}": ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, what, { cause: e });
  }
}

/** `what` names the key holding the URL ("" when `origin` already shows it). */
function parseServer(origin: string, what: string, text: string): URL {
  const at = what ? `${origin}: ${what} "${text}"` : origin;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${at}: not a URL`, what || 'server');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${at}: scheme must be http or https`, what || 'server');
  return url;
}

/** In-cluster config, a kubeconfig file, or a URL (KubeEdge MetaServer; optional CA and client certificate). Throws ConfigError. */
export function loadClientConfig(source: KubeSourceConfig, options: LoadOptions = {}): KubeClientConfig {
  if (source.kind === 'in-cluster') return inCluster(options);
  if (source.kind === 'kubeconfig') return fromKubeconfig(source.file);
  const origin = `--api-server "${source.url}"`;
  const server = parseServer(origin, '', source.url);
  const tls: KubeClientConfig['tls'] = {};
  if (source.ca) tls.ca = readFileNamed(origin, '--api-server-ca', source.ca);
  if (source.cert) tls.cert = readFileNamed(origin, '--api-server-cert', source.cert);
  if (source.key) tls.key = readFileNamed(origin, '--api-server-key', source.key);
  if ((tls.cert === undefined) !== (tls.key === undefined)) throw new ConfigError(`${origin}: --api-server-cert and --api-server-key go together`, 'api-server-cert');
  return { server, origin, tls, auth: { kind: 'none' } };
}

function inCluster(options: LoadOptions): KubeClientConfig {
  const env = options.env ?? process.env;
  const origin = 'in-cluster config';
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) throw new ConfigError(`${origin}: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must both be set`, 'in-cluster');
  const dir = options.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const server = parseServer(origin, 'KUBERNETES_SERVICE_HOST', `https://${host.includes(':') ? `[${host}]` : host}:${port}`);
  const ca = readFileNamed(origin, 'CA', join(dir, 'ca.crt'));
  const tokenFile = join(dir, 'token');
  readFileNamed(origin, 'token', tokenFile);
  return { server, origin, tls: { ca }, auth: { kind: 'token-file', file: tokenFile } };
}

/** The named entry of a kubeconfig list (clusters, users, contexts), or a ConfigError naming the key. */
function entry(origin: string, doc: Json, list: string, name: string, field: string): Json {
  const items = doc[list];
  if (items !== undefined && items !== null && !Array.isArray(items)) throw new ConfigError(`${origin}: ${list}: must be a list`, list);
  const found = ((items as unknown[] | null | undefined) ?? []).find((e) => isObject(e) && e.name === name);
  if (!isObject(found)) throw new ConfigError(`${origin}: ${list}: no entry named "${name}"`, list);
  const body = found[field];
  if (body !== undefined && body !== null && !isObject(body)) throw new ConfigError(`${origin}: ${list}["${name}"].${field}: must be a mapping`, list);
  return (body as Json | undefined) ?? {};
}

function fromKubeconfig(file: string): KubeClientConfig {
  const origin = `--kubeconfig "${file}"`;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`${origin}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'kubeconfig', { cause: e });
  }
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: false, logLevel: 'error' });
  } catch (e) {
    throw new ConfigError(`${origin}: invalid YAML: ${(e as Error).message.split('\n')[0]}`, 'kubeconfig', { cause: e });
  }
  if (!isObject(doc)) throw new ConfigError(`${origin}: not a kubeconfig (expected a mapping)`, 'kubeconfig');
  const base = dirname(file);
  const current = doc['current-context'];
  if (typeof current !== 'string' || current === '') throw new ConfigError(`${origin}: current-context: not set`, 'current-context');
  const context = entry(origin, doc, 'contexts', current, 'context');
  const str = (o: Json, key: string, where: string): string | undefined => {
    const v = o[key];
    if (v === undefined || v === null || v === '') return undefined;
    if (typeof v !== 'string') throw new ConfigError(`${origin}: ${where}.${key}: must be a string`, key);
    return v;
  };
  const clusterName = str(context, 'cluster', `contexts["${current}"].context`);
  if (!clusterName) throw new ConfigError(`${origin}: contexts["${current}"].context.cluster: required`, 'cluster');
  const cw = `clusters["${clusterName}"].cluster`;
  const cluster = entry(origin, doc, 'clusters', clusterName, 'cluster');
  const serverText = str(cluster, 'server', cw);
  if (!serverText) throw new ConfigError(`${origin}: ${cw}.server: required`, 'server');
  const server = parseServer(origin, `${cw}.server`, serverText);
  // Relative paths are relative to the kubeconfig's own directory, as kubectl resolves them.
  const path = (p: string): string => (isAbsolute(p) ? p : join(base, p));
  /** `<key>-data` (base64) or `<key>` (a file). */
  const material = (o: Json, key: string, where: string): Buffer | undefined => {
    const data = str(o, `${key}-data`, where);
    if (data !== undefined) return Buffer.from(data, 'base64');
    const f = str(o, key, where);
    return f === undefined ? undefined : readFileNamed(origin, `${where}.${key}`, path(f));
  };
  const tls: KubeClientConfig['tls'] = {};
  const ca = material(cluster, 'certificate-authority', cw);
  if (ca) tls.ca = ca;
  const insecure = cluster['insecure-skip-tls-verify'];
  if (insecure !== undefined && typeof insecure !== 'boolean') throw new ConfigError(`${origin}: ${cw}.insecure-skip-tls-verify: must be true or false`, 'insecure-skip-tls-verify');
  if (insecure) tls.insecure = true;
  const servername = str(cluster, 'tls-server-name', cw);
  if (servername) tls.servername = servername;

  const userName = str(context, 'user', `contexts["${current}"].context`);
  let auth: Auth = { kind: 'none' };
  if (userName) {
    const uw = `users["${userName}"].user`;
    const user = entry(origin, doc, 'users', userName, 'user');
    const cert = material(user, 'client-certificate', uw);
    const key = material(user, 'client-key', uw);
    if ((cert === undefined) !== (key === undefined)) throw new ConfigError(`${origin}: ${uw}: client-certificate and client-key go together`, cert ? 'client-key' : 'client-certificate');
    if (cert && key) Object.assign(tls, { cert, key });
    const token = str(user, 'token', uw);
    const tokenFile = str(user, 'tokenFile', uw);
    const username = str(user, 'username', uw);
    if (user.exec !== undefined && user.exec !== null) auth = { kind: 'library', file, why: `${uw}.exec (a credential plugin)` };
    else if (user['auth-provider'] !== undefined && user['auth-provider'] !== null) auth = { kind: 'library', file, why: `${uw}.auth-provider` };
    else if (token) auth = { kind: 'token', token };
    else if (tokenFile) {
      readFileNamed(origin, `${uw}.tokenFile`, path(tokenFile));
      auth = { kind: 'token-file', file: path(tokenFile) };
    } else if (username) auth = { kind: 'basic', username, password: str(user, 'password', uw) ?? '' };
  }
  return { server, origin, tls, auth };
}

/** An HTTP answer other than 2xx: status, reason and message of the API's Status object. */
export class KubeHttpError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'KubeHttpError';
  }
}

export interface ListResult {
  items: unknown[];
  resourceVersion: string;
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK';
/** How a watch ended without an error: the server closed it (re-watch), or 410 Gone (relist). */
export type WatchEnd = 'closed' | 'gone';

export interface WatchHandle {
  /** Resolves when the watch ends cleanly or with 410 Gone; rejects on any other failure. */
  done: Promise<WatchEnd>;
  /** A closure (no `this`): callers keep it on its own. */
  abort: () => void;
}

export interface KubeClientOptions {
  /** Bound on each list request (every page). Default 60 s. */
  listTimeoutMs?: number;
  /** Items per list page (the server returns a `continue` token for the rest). Default 500. */
  pageSize?: number;
  /** Debug notes (which auth path is used). */
  onDebug?: (message: string) => void;
}

/** Longest watch line (one event) kept while it arrives; beyond it the watch fails. */
const MAX_EVENT_BYTES = 32 << 20;
/** Bound on the body of an error answer we read for its Status. */
const MAX_ERROR_BODY = 64 << 10;

const oneLine = (s: string): string => s.replace(/\s+/g, ' ').trim();

export class KubeClient {
  private readonly agent: HttpAgent;
  private readonly https: boolean;
  private readonly listTimeoutMs: number;
  private readonly pageSize: number;
  private token: { file: string; mtimeMs: number; size: number; ino: number; value: string } | undefined;
  private library: Promise<{ applyToHTTPSOptions(o: RequestOptions): Promise<void> }> | undefined;

  constructor(
    readonly config: KubeClientConfig,
    options: KubeClientOptions = {},
  ) {
    this.https = config.server.protocol === 'https:';
    this.listTimeoutMs = options.listTimeoutMs ?? 60_000;
    this.pageSize = options.pageSize ?? 500;
    // Keep-alive: a relist reuses the connection; each open watch holds one of its own.
    const tls = config.tls;
    this.agent = this.https
      ? new HttpsAgent({ keepAlive: true, ca: tls.ca, cert: tls.cert, key: tls.key, rejectUnauthorized: !tls.insecure, ...(tls.servername ? { servername: tls.servername } : {}) })
      : new HttpAgent({ keepAlive: true });
  }

  /** Why the client library is used, when it is (exec / auth-provider credentials). */
  get libraryReason(): string | undefined {
    return this.config.auth.kind === 'library' ? this.config.auth.why : undefined;
  }

  /** The whole list of `path`, following `continue` when the server pages it. */
  async list(path: string): Promise<ListResult> {
    const items: unknown[] = [];
    let cont: string | undefined;
    for (;;) {
      const query: Record<string, string> = { limit: String(this.pageSize) };
      if (cont) query.continue = cont;
      const res = await this.request(path, query, this.listTimeoutMs);
      const body = await readAll(res, this.listTimeoutMs, `list ${path}`);
      let doc: unknown;
      try {
        doc = JSON.parse(body);
      } catch (e) {
        throw new Error(`list ${path}: answer is not JSON: ${(e as Error).message}`);
      }
      if (!isObject(doc)) throw new Error(`list ${path}: answer is not a list object`);
      const page = doc.items;
      if (page !== undefined && page !== null && !Array.isArray(page)) throw new Error(`list ${path}: items is not a list`);
      for (const it of (page as unknown[] | null | undefined) ?? []) items.push(it);
      const meta = isObject(doc.metadata) ? doc.metadata : {};
      cont = typeof meta.continue === 'string' && meta.continue !== '' ? meta.continue : undefined;
      if (!cont) return { items, resourceVersion: typeof meta.resourceVersion === 'string' ? meta.resourceVersion : '' };
    }
  }

  /**
   * Watches `path` from `resourceVersion` with bookmarks; `onEvent` gets each event (a BOOKMARK's
   * object carries only the new resourceVersion). The server ends the watch after
   * `timeoutSeconds`; silence longer than that plus a minute means a dead connection (an error).
   */
  watch(path: string, resourceVersion: string, timeoutSeconds: number, onEvent: (type: WatchEventType, object: Json) => void): WatchHandle {
    let req: { destroy(e?: Error): void } | undefined;
    let aborted = false;
    const done = (async (): Promise<WatchEnd> => {
      const query = { watch: 'true', allowWatchBookmarks: 'true', resourceVersion, timeoutSeconds: String(timeoutSeconds) };
      let res: IncomingMessage;
      try {
        res = await this.request(path, query, 30_000, (r) => (req = r), (timeoutSeconds + 60) * 1000);
      } catch (e) {
        if (e instanceof KubeHttpError && e.status === 410) return 'gone';
        throw e;
      }
      if (aborted) {
        res.destroy();
        return 'closed';
      }
      return await readLines(res, path, onEvent);
    })();
    return {
      done,
      abort: () => {
        aborted = true;
        req?.destroy();
      },
    };
  }

  /** Stops reusing idle connections. */
  close(): void {
    this.agent.destroy();
  }

  private async headers(): Promise<{ headers: OutgoingHttpHeaders; cert?: Buffer | string; key?: Buffer | string }> {
    const headers: OutgoingHttpHeaders = { accept: 'application/json', 'user-agent': 'edgemesh-agent' };
    const auth = this.config.auth;
    if (auth.kind === 'token') headers.authorization = `Bearer ${auth.token}`;
    else if (auth.kind === 'token-file') headers.authorization = `Bearer ${this.readToken(auth.file)}`;
    else if (auth.kind === 'basic') headers.authorization = `Basic ${Buffer.from(`${auth.username}:${auth.password}`).toString('base64')}`;
    else if (auth.kind === 'library') {
      const kc = await this.loadLibrary(auth.file);
      const o: RequestOptions = {};
      await kc.applyToHTTPSOptions(o);
      const h = (o.headers ?? {}) as OutgoingHttpHeaders;
      const value = h.Authorization ?? h.authorization;
      if (value !== undefined) headers.authorization = String(value);
      // A credential plugin may answer with a client certificate instead of a token.
      if (o.cert && o.key) return { headers, cert: o.cert as Buffer | string, key: o.key as Buffer | string };
    }
    return { headers };
  }

  /** The token file's content, re-read when the file changes (the kubelet rotates bound tokens). */
  private readToken(file: string): string {
    let st;
    try {
      st = statSync(file);
    } catch (e) {
      if (this.token?.file === file) return this.token.value; // replaced right now: the last one still works for a while
      throw new Error(`token "${file}": ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const t = this.token;
    if (t && t.file === file && t.mtimeMs === st.mtimeMs && t.size === st.size && t.ino === st.ino) return t.value;
    const value = readFileSync(file, 'utf8').trim();
    this.token = { file, mtimeMs: st.mtimeMs, size: st.size, ino: st.ino, value };
    return value;
  }

  private loadLibrary(file: string): Promise<{ applyToHTTPSOptions(o: RequestOptions): Promise<void> }> {
    this.library ??= import('@kubernetes/client-node').then((m) => {
      const kc = new m.KubeConfig();
      kc.loadFromFile(file);
      return kc;
    });
    return this.library;
  }

  /**
   * GET `path?query`; resolves with a 2xx response (its body unread), rejects with a
   * KubeHttpError (status, reason, message of the Status) or a one-line connection error.
   * `timeoutMs` bounds the time to the response headers; `idleMs` (watches) the silence after.
   */
  private async request(path: string, query: Record<string, string>, timeoutMs: number, onReq?: (r: { destroy(e?: Error): void }) => void, idleMs?: number): Promise<IncomingMessage> {
    const base = this.config.server;
    const qs = new URLSearchParams(query).toString();
    const fullPath = `${base.pathname.replace(/\/+$/, '')}${path}${qs ? `?${qs}` : ''}`;
    const what = `${query.watch ? 'watch' : 'list'} ${path}`;
    const { headers, cert, key } = await this.headers();
    const opts: RequestOptions = {
      host: base.hostname.replace(/^\[(.*)\]$/, '$1'),
      port: base.port || (this.https ? 443 : 80),
      path: fullPath,
      method: 'GET',
      headers,
      agent: cert ? undefined : this.agent,
    };
    if (cert && key) Object.assign(opts, { cert, key, ca: this.config.tls.ca, rejectUnauthorized: !this.config.tls.insecure, servername: this.config.tls.servername });
    return await new Promise<IncomingMessage>((resolve, reject) => {
      const req = (this.https ? httpsRequest : httpRequest)(opts);
      onReq?.(req);
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      req.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new Error(`${what}: ${connError(e, cert !== undefined || this.config.tls.cert !== undefined)}`, { cause: e }));
      });
      req.on('response', (res) => {
        clearTimeout(timer);
        if (idleMs !== undefined) {
          // On the socket for this response only: a kept-alive socket goes back to the pool after.
          const sock = res.socket;
          const idle = (): void => void req.destroy(new Error(`no data for ${Math.round(idleMs / 1000)} s`));
          sock.setTimeout(idleMs);
          sock.on('timeout', idle);
          res.on('close', () => {
            sock.setTimeout(0);
            sock.off('timeout', idle);
          });
        }
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) return resolve(res);
        readAll(res, timeoutMs, what, MAX_ERROR_BODY).then(
          (body) => reject(statusError(what, status, res.statusMessage ?? '', body)),
          () => reject(statusError(what, status, res.statusMessage ?? '', '')),
        );
      });
      req.end();
    });
  }
}

/** A connection or TLS failure as one short line, with what it usually means. */
function connError(e: NodeJS.ErrnoException, clientCert: boolean): string {
  const code = e.code ?? '';
  // OpenSSL's text is "<hex>:error:<hex>:SSL routines:<function>:<reason>:<file>:<line>:...": keep the reason.
  const ssl = /SSL routines:[^:]*:([^:]+):/.exec(e.message)?.[1];
  if (ssl) {
    const hint = /certificate required/.test(ssl) ? ' (the server requires a client certificate)' : /unknown ca|bad certificate/.test(ssl) ? ' (the server refused our client certificate)' : '';
    return `TLS: ${ssl}${hint}`;
  }
  if (/SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY_LEAF|CERT_UNTRUSTED/.test(code)) return `TLS: server certificate not trusted: ${oneLine(e.message)} (check the CA: --api-server-ca, certificate-authority)`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `TLS: ${oneLine(e.message)} (tls-server-name names the expected one)`;
  if ((code === 'ECONNRESET' || /socket hang up/.test(e.message)) && clientCert) return `${code || 'connection reset'}: ${oneLine(e.message)} (during TLS with a client certificate: the server may have refused it)`;
  return `${code && !e.message.includes(code) ? `${code}: ` : ''}${oneLine(e.message)}`;
}

/** A non-2xx answer as one line: the Status's reason and message when the body is one. */
function statusError(what: string, status: number, statusText: string, body: string): KubeHttpError {
  let reason = statusText;
  let message = '';
  try {
    const s = JSON.parse(body) as unknown;
    if (isObject(s) && s.kind === 'Status') {
      if (typeof s.reason === 'string' && s.reason) reason = s.reason;
      if (typeof s.message === 'string') message = oneLine(s.message);
    }
  } catch {
    // not a Status: the status line says it all
  }
  return new KubeHttpError(status, reason, `${what}: HTTP ${status}${reason ? ` ${reason}` : ''}${message ? `: ${message}` : ''}`);
}

/** The body as text, bounded in time and (for error bodies) in size. */
function readAll(res: IncomingMessage, timeoutMs: number, what: string, maxBytes = Infinity): Promise<string> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => res.destroy(new Error(`body not complete within ${timeoutMs} ms`)), timeoutMs);
    res.on('data', (d: Buffer) => {
      if (size >= maxBytes) return;
      parts.push(d);
      size += d.length;
    });
    res.on('end', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(parts).toString('utf8'));
    });
    res.on('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`${what}: ${oneLine(e.message)}`));
    });
    res.on('close', () => {
      clearTimeout(timer);
      if (!res.complete) reject(new Error(`${what}: connection closed before the answer was complete`));
    });
  });
}

/**
 * A watch body: one JSON event per line. Only the line being received is kept (as its chunks),
 * never the stream. Ends 'closed' when the server ends the body, 'gone' on an ERROR event with
 * code 410; another ERROR event or a cut connection rejects.
 */
function readLines(res: IncomingMessage, path: string, onEvent: (type: WatchEventType, object: Json) => void): Promise<WatchEnd> {
  res.setEncoding('utf8');
  return new Promise((resolve, reject) => {
    let pending: string[] = [];
    let pendingLen = 0;
    let settled = false;
    const finish = (f: () => void): void => {
      if (settled) return;
      settled = true;
      f();
    };
    const line = (text: string): void => {
      if (text.trim() === '') return;
      let ev: unknown;
      try {
        ev = JSON.parse(text);
      } catch (e) {
        throw new Error(`watch ${path}: event is not JSON: ${(e as Error).message}`);
      }
      if (!isObject(ev) || typeof ev.type !== 'string' || !isObject(ev.object)) throw new Error(`watch ${path}: event without type or object`);
      if (ev.type === 'ERROR') {
        const s = ev.object;
        if (s.code === 410) {
          finish(() => resolve('gone'));
          res.destroy();
          return;
        }
        const reason = typeof s.reason === 'string' ? ` ${s.reason}` : '';
        // eslint-disable-next-line @typescript-eslint/no-base-to-string -- a Status's code is a number; String() only guards a malformed one
        throw new Error(`watch ${path}: ERROR event ${String(s.code ?? '?')}${reason}${typeof s.message === 'string' ? `: ${oneLine(s.message)}` : ''}`);
      }
      if (ev.type !== 'ADDED' && ev.type !== 'MODIFIED' && ev.type !== 'DELETED' && ev.type !== 'BOOKMARK') return;
      onEvent(ev.type, ev.object);
    };
    res.on('data', (chunk: string) => {
      if (settled) return;
      try {
        let start = 0;
        for (let nl = chunk.indexOf('\n'); nl >= 0; nl = chunk.indexOf('\n', start)) {
          const piece = chunk.slice(start, nl);
          start = nl + 1;
          const text = pending.length ? pending.join('') + piece : piece;
          pending = [];
          pendingLen = 0;
          line(text);
          if (settled) return;
        }
        if (start < chunk.length) {
          pending.push(chunk.slice(start));
          pendingLen += chunk.length - start;
          if (pendingLen > MAX_EVENT_BYTES) throw new Error(`watch ${path}: an event longer than ${MAX_EVENT_BYTES >> 20} MiB`);
        }
      } catch (e) {
        finish(() => reject(e));
        res.destroy();
      }
    });
    res.on('end', () => {
      finish(() => {
        try {
          if (pending.length) line(pending.join(''));
          resolve('closed');
        } catch (e) {
          reject(e);
        }
      });
    });
    res.on('error', (e) => finish(() => reject(new Error(`watch ${path}: ${oneLine(e.message)}`))));
    res.on('close', () => finish(() => reject(new Error(`watch ${path}: connection closed mid-stream`))));
  });
}
