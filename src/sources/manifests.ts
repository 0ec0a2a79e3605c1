// Parsing a manifest file (multi-document YAML, `kind: List`, JSON) into converted objects.
// Pure: text in, objects or a one-line reason out.
import type { V1EndpointSlice, V1Endpoints, V1Service } from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { ConfigError } from '../errors.js';
import type { EndpointSliceInfo, ServiceInfo } from '../model.js';
import { convertEndpointSlice, convertEndpoints, convertService } from './convert.js';

export interface ManifestObjects {
  services: ServiceInfo[];
  endpointSlices: EndpointSliceInfo[];
  /** Converted v1 Endpoints, grouped per object. */
  endpoints: { namespace: string; name: string; slices: EndpointSliceInfo[] }[];
  /** Objects of other kinds, skipped ("apps/v1 Deployment default/web"). */
  skipped: string[];
}

/** Throws ConfigError with a one-line reason; `name` is used in JSON/YAML syntax errors. */
export function parseManifests(text: string, name: string): ManifestObjects {
  const docs: unknown[] = [];
  if (name.endsWith('.json')) {
    try {
      docs.push(JSON.parse(text));
    } catch (e) {
      throw new ConfigError(`invalid JSON: ${(e as Error).message}`);
    }
  } else {
    for (const [i, doc] of parseAllDocuments(text).entries()) {
      const err = doc.errors[0];
      if (err) throw new ConfigError(`invalid YAML in document ${i + 1}: ${err.message.split('\n')[0]}`);
      docs.push(doc.toJS());
    }
  }
  const out: ManifestObjects = { services: [], endpointSlices: [], endpoints: [], skipped: [] };
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
    if (apiVersion === 'v1' && kind === 'Service') out.services.push(convertService(o as unknown as V1Service));
    else if (apiVersion === 'discovery.k8s.io/v1' && kind === 'EndpointSlice') out.endpointSlices.push(convertEndpointSlice(o as unknown as V1EndpointSlice));
    else if (apiVersion === 'v1' && kind === 'Endpoints') {
      const slices = convertEndpoints(o as unknown as V1Endpoints);
      const meta = (o.metadata ?? {}) as { name?: string; namespace?: string };
      out.endpoints.push({ namespace: meta.namespace || 'default', name: String(meta.name), slices });
    } else {
      const meta = (o.metadata ?? {}) as { name?: unknown; namespace?: unknown };
      out.skipped.push(`${apiVersion} ${kind} ${typeof meta.namespace === 'string' ? `${meta.namespace}/` : ''}${String(meta.name ?? '')}`);
    }
  };
  docs.forEach((d, i) => visit(d, docs.length > 1 ? `document ${i + 1}` : 'document'));
  return out;
}
