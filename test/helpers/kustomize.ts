// The subset of kustomize that deploy/ uses, so the overlays can be rendered and checked on a
// machine without kubectl: resources (files and directories with a kustomization.yaml),
// nameSuffix (with the name references among our kinds), images (newTag), and patches given by
// path, merged the strategic way for the fields our DaemonSet patches touch. Anything else in a
// kustomization is an error here, not silently ignored; test/unit/deploy.test.ts compares the
// result with `kubectl kustomize` wherever a kubectl is installed.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';

export type Obj = Record<string, unknown>;
export const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Every mapping document of a YAML file (null documents dropped); a parse error throws. */
export function readYamlDocs(file: string): Obj[] {
  const out: Obj[] = [];
  for (const d of parseAllDocuments(readFileSync(file, 'utf8'), { prettyErrors: false })) {
    if (d.errors.length > 0) throw new Error(`${file}: ${d.errors[0]!.message}`);
    if (d.warnings.length > 0) throw new Error(`${file}: ${d.warnings[0]!.message}`);
    const v = d.toJS() as unknown;
    if (v === null) continue;
    if (!isObj(v)) throw new Error(`${file}: a document is not a mapping`);
    out.push(v);
  }
  return out;
}

const KNOWN = new Set(['apiVersion', 'kind', 'resources', 'nameSuffix', 'images', 'patches']);

/** Strategic-merge keys of the lists our patches touch (as in the Kubernetes API types). */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  volumes: 'name',
  env: 'name',
  volumeMounts: 'mountPath',
  ports: 'containerPort',
};

function merge(base: unknown, patch: unknown, field = ''): unknown {
  if (isObj(base) && isObj(patch)) {
    const out: Obj = { ...base };
    for (const [k, v] of Object.entries(patch)) {
      if (v === null) delete out[k];
      else out[k] = k in base ? merge(base[k], v, k) : v;
    }
    return out;
  }
  const key = MERGE_KEYS[field];
  if (Array.isArray(base) && Array.isArray(patch) && key) {
    // As kustomize does: patch items first (merged with their base item), then the base's others.
    const out: unknown[] = [];
    const used = new Set<unknown>();
    for (const p of patch) {
      const b = base.find((x) => isObj(x) && isObj(p) && x[key] === p[key]);
      if (b !== undefined) used.add(b);
      out.push(b === undefined ? p : merge(b, p));
    }
    for (const b of base) if (!used.has(b)) out.push(b);
    return out;
  }
  return patch; // scalars and other lists (args, tolerations, nodeSelectorTerms) are replaced
}

/** Renames and name references within the rendered set, for the kinds deploy/ holds. */
function applySuffix(objs: Obj[], suffix: string): void {
  const renamed = new Map<string, string>(); // kind/name -> new name
  for (const o of objs) {
    const meta = o.metadata as Obj;
    const n = `${String(meta.name)}${suffix}`;
    renamed.set(`${String(o.kind)}/${String(meta.name)}`, n);
    meta.name = n;
  }
  const ref = (kind: string, name: unknown): unknown => renamed.get(`${kind}/${String(name)}`) ?? name;
  for (const o of objs) {
    const pod = isObj(o.spec) && isObj(o.spec.template) ? (o.spec.template.spec as Obj | undefined) : undefined;
    if (pod) {
      if (pod.serviceAccountName !== undefined) pod.serviceAccountName = ref('ServiceAccount', pod.serviceAccountName);
      for (const v of (pod.volumes as Obj[] | undefined) ?? []) {
        if (isObj(v.configMap)) v.configMap.name = ref('ConfigMap', v.configMap.name);
        if (isObj(v.secret)) v.secret.secretName = ref('Secret', v.secret.secretName);
      }
    }
    if (o.kind === 'ClusterRoleBinding' || o.kind === 'RoleBinding') {
      const rr = o.roleRef as Obj;
      rr.name = ref(String(rr.kind), rr.name);
      for (const s of (o.subjects as Obj[] | undefined) ?? []) if (s.kind === 'ServiceAccount') s.name = ref('ServiceAccount', s.name);
    }
  }
}

/** Renders the kustomization in `dir` like `kubectl kustomize dir`, for the subset above. */
export function kustomize(dir: string): Obj[] {
  const kfile = join(dir, 'kustomization.yaml');
  if (!existsSync(kfile)) throw new Error(`${dir}: no kustomization.yaml`);
  const k = readYamlDocs(kfile)[0] ?? {};
  for (const key of Object.keys(k)) if (!KNOWN.has(key)) throw new Error(`${kfile}: ${key} is outside the kustomize subset test/helpers/kustomize.ts renders`);
  const objs: Obj[] = [];
  for (const r of (k.resources as string[] | undefined) ?? []) {
    const p = resolve(dir, r);
    const got = statSync(p).isDirectory() ? kustomize(p) : readYamlDocs(p);
    for (const o of got) {
      const id = `${String(o.kind)}/${String((o.metadata as Obj).name)}`;
      if (objs.some((x) => `${String(x.kind)}/${String((x.metadata as Obj).name)}` === id)) throw new Error(`${kfile}: ${id} appears twice`);
      objs.push(structuredClone(o));
    }
  }
  for (const p of (k.patches as Obj[] | undefined) ?? []) {
    if (Object.keys(p).join() !== 'path') throw new Error(`${kfile}: only patches given by path are rendered here`);
    for (const patch of readYamlDocs(resolve(dir, String(p.path)))) {
      const meta = patch.metadata as Obj;
      const i = objs.findIndex((o) => o.kind === patch.kind && (o.metadata as Obj).name === meta.name);
      if (i < 0) throw new Error(`${kfile}: patch ${String(p.path)} targets ${String(patch.kind)}/${String(meta.name)}, which is not among the resources`);
      objs[i] = merge(objs[i], patch) as Obj;
    }
  }
  for (const img of (k.images as Obj[] | undefined) ?? []) {
    for (const o of objs) {
      const pod = isObj(o.spec) && isObj(o.spec.template) ? (o.spec.template.spec as Obj | undefined) : undefined;
      for (const c of [...((pod?.containers as Obj[] | undefined) ?? []), ...((pod?.initContainers as Obj[] | undefined) ?? [])]) {
        const [name] = String(c.image).split(':');
        // eslint-disable-next-line @typescript-eslint/no-base-to-string -- a kustomization's newTag is a scalar (a tag like 1.2 may parse as a number)
        if (name === img.name && img.newTag !== undefined) c.image = `${name}:${String(img.newTag)}`;
      }
    }
  }
  if (typeof k.nameSuffix === 'string') applySuffix(objs, k.nameSuffix);
  return objs;
}
