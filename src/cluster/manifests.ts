// Parsing a manifest file (multi-document YAML, `kind: List`, JSON) into converted objects.
// Pure: text in, objects or a one-line reason out.
import type { V1EndpointSlice } from '@kubernetes/client-node';
import { CORE_SCHEMA, loadAll, YAMLException } from 'js-yaml';
import { ConfigError } from '../errors.js';
import type { EndpointSliceInfo, NodeInfo, ServiceInfo } from './model.js';
import { convertEndpointSlice, convertEndpoints, convertNode, convertService } from './convert.js';

export interface ManifestObjects {
  services: ServiceInfo[];
  endpointSlices: EndpointSliceInfo[];
  /** Converted v1 Endpoints, grouped per object. */
  endpoints: { namespace: string; name: string; slices: EndpointSliceInfo[] }[];
  nodes: NodeInfo[];
  /** Problems that do not make the file bad (a Node's unusable tunnel address), one line each. */
  warnings: string[];
  /** Objects of other kinds, skipped ("apps/v1 Deployment default/web"). */
  skipped: string[];
}

/** Deepest flow nesting ([ and {) accepted in YAML. Kubernetes objects need a handful of levels. */
export const MAX_YAML_FLOW_DEPTH = 64;

/**
 * The deepest [ / { nesting in YAML text, outside quoted scalars and comments. The yaml parser
 * takes time quadratic in the depth of an unclosed flow collection (80 KB of "[" took 26 s,
 * blocking the agent's event loop) and recurses per level; such text is refused before parsing.
 */
export function flowDepth(text: string, stopAt = Infinity): number {
  let depth = 0;
  let max = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x5b || c === 0x7b) {
      if (++depth > max) max = depth;
      if (max > stopAt) return max;
    } else if (c === 0x5d || c === 0x7d) {
      if (depth > 0) depth--;
    } else if (c === 0x22 || c === 0x27) {
      // a quoted scalar: skip to its end ("" escapes with \, '' doubles the quote)
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (c === 0x22 && d === 0x5c) i++;
        else if (d === c) {
          if (c === 0x27 && text.charCodeAt(i + 1) === 0x27) i++;
          else break;
        }
      }
    } else if (c === 0x23 && (i === 0 || /\s/.test(text[i - 1]!))) {
      const nl = text.indexOf('\n', i);
      i = nl < 0 ? text.length : nl;
    }
  }
  return max;
}

/**
 * Nodes that aliases may add to a file's documents when expanded. js-yaml shares an aliased node
 * (no copy), but anything that walks the objects (the copy out of the file's text, a message
 * quoting a value) expands it: nine aliases of nine aliases of ... is exponential.
 */
export const MAX_ALIAS_EXPANSION = 10_000;

/** The nodes an expansion of `docs` would add over the nodes they hold (0 without aliases). */
export function aliasExpansion(docs: unknown[]): number {
  const size = new Map<object, number>();
  let distinct = 0;
  const expanded = (v: unknown): number => {
    if (v === null || typeof v !== 'object') return 1;
    const known = size.get(v);
    if (known !== undefined) return known;
    let n = 1;
    distinct++;
    for (const c of Array.isArray(v) ? v : Object.values(v)) {
      if (c === null || typeof c !== 'object') distinct++;
      n += expanded(c);
    }
    size.set(v, n);
    return n;
  };
  let total = 0;
  for (const d of docs) {
    if (d === null || typeof d !== 'object') distinct++;
    total += expanded(d);
  }
  return total - distinct;
}

/** The 1-based number of the document of `text` that holds offset `pos` (--- and ... separate documents). */
export function documentAt(text: string, pos: number): number {
  let doc = 1;
  let started = false;
  let ended = false;
  for (let at = 0; at <= pos && at < text.length; ) {
    const nl = text.indexOf('\n', at);
    const end = nl < 0 ? text.length : nl;
    const line = text.slice(at, end);
    const marker = /^(---|\.\.\.)(?=[ \t\r]|$)/.exec(line)?.[1];
    if (marker === '---') {
      if (started || ended) doc++;
      started = true;
      ended = false;
    } else if (marker === '...') {
      if (started) ended = true;
      started = false;
    } else if (!/^\s*(#.*)?$/.test(line) && !(line.startsWith('%') && !started)) {
      if (ended) doc++;
      ended = false;
      started = true;
    }
    at = end + 1;
  }
  return doc;
}

/** Throws ConfigError with a one-line reason; `name` is used in JSON/YAML syntax errors. */
export function parseManifests(text: string, name: string): ManifestObjects {
  const docs: unknown[] = [];
  if (name.endsWith('.json')) {
    try {
      docs.push(JSON.parse(text));
    } catch (e) {
      throw new ConfigError(`invalid JSON: ${e instanceof RangeError ? 'nested too deeply' : (e as Error).message}`);
    }
  } else {
    // A bad file is a ConfigError naming the document, line and column; js-yaml throws
    // YAMLException for syntax, RangeError when nesting exhausts the stack.
    const why = (e: unknown): string => (e instanceof RangeError ? 'nested too deeply' : String((e as Error)?.message ?? e).split('\n')[0]!);
    if (flowDepth(text, MAX_YAML_FLOW_DEPTH) > MAX_YAML_FLOW_DEPTH) throw new ConfigError(`invalid YAML: [ ] / { } nested deeper than ${MAX_YAML_FLOW_DEPTH} levels`);
    // js-yaml with the YAML 1.2 core schema (null, booleans, numbers, strings: no timestamps, merge
    // keys or binary), as the `yaml` package resolves plain scalars by default; it parses the
    // manifests of 1 000 services in about a quarter of the time the `yaml` package took.
    try {
      docs.push(...loadAll(text, null, { schema: CORE_SCHEMA }));
    } catch (e) {
      if (e instanceof YAMLException && e.mark) {
        const reason = (e.reason || 'syntax error').split('\n')[0]!;
        throw new ConfigError(`invalid YAML in document ${documentAt(text, e.mark.position)}: ${reason} at line ${e.mark.line + 1}, column ${e.mark.column + 1}`);
      }
      throw new ConfigError(`invalid YAML: ${why(e)}`);
    }
    const expansion = aliasExpansion(docs);
    if (expansion > MAX_ALIAS_EXPANSION) throw new ConfigError(`invalid YAML: aliases expand to more than ${MAX_ALIAS_EXPANSION} nodes ("billion laughs")`);
  }
  const out: ManifestObjects = { services: [], endpointSlices: [], endpoints: [], nodes: [], warnings: [], skipped: [] };
  const visit = (obj: unknown, where: string): void => {
    if (obj === null || obj === undefined) return; // an empty document
    if (typeof obj !== 'object' || Array.isArray(obj)) throw new ConfigError(`${where}: not an object`);
    const o = obj as Record<string, unknown>;
    const apiVersion = o.apiVersion;
    const kind = o.kind;
    if (typeof kind !== 'string' || kind === '') throw new ConfigError(`${where}: missing "kind"`);
    if (typeof apiVersion !== 'string' || apiVersion === '') throw new ConfigError(`${where}: missing "apiVersion"`);
    if (kind === 'List' || (kind.endsWith('List') && Array.isArray(o.items))) {
      if (!Array.isArray(o.items)) throw new ConfigError(`${where}: ${kind} without "items"`);
      o.items.forEach((item, j) => visit(item, `${where} items[${j}]`));
      return;
    }
    if (apiVersion === 'v1' && kind === 'Service') out.services.push(convertService(o));
    else if (apiVersion === 'discovery.k8s.io/v1' && kind === 'EndpointSlice') out.endpointSlices.push(convertEndpointSlice(o as unknown as V1EndpointSlice));
    else if (apiVersion === 'v1' && kind === 'Endpoints') {
      const slices = convertEndpoints(o);
      const meta = (o.metadata ?? {}) as { name?: string; namespace?: string };
      out.endpoints.push({ namespace: meta.namespace || 'default', name: String(meta.name), slices });
    } else if (apiVersion === 'v1' && kind === 'Node') out.nodes.push(convertNode(o, (w) => out.warnings.push(w)));
    else {
      const meta = (o.metadata ?? {}) as { name?: unknown; namespace?: unknown };
      // eslint-disable-next-line @typescript-eslint/no-base-to-string -- echoes what the file says, whatever it is, in the skip notice
      out.skipped.push(`${apiVersion} ${kind} ${typeof meta.namespace === 'string' ? `${meta.namespace}/` : ''}${String(meta.name ?? '')}`);
    }
  };
  docs.forEach((d, i) => visit(d, docs.length > 1 ? `document ${i + 1}` : 'document'));
  return detach(out);
}

/**
 * A deep copy whose strings are new: the parser's scalars are slices of the file's text, and one
 * kept name would keep the whole text alive (V8 sliced strings) for as long as the object is in
 * the store. The structured clone writes every string out and reads it back as a string of its
 * own, and keeps the parsed addresses' bigint values (plain data otherwise).
 */
function detach<T>(objs: T): T {
  return structuredClone(objs);
}
