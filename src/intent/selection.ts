// Which services EDGE-MESH leaves to kube-proxy (RETURN) and which it proxies, with the reason.
//
// Ignored (kube-proxy keeps them):
//   - default/kubernetes;
//   - kube-system services labelled k8s-app=kube-dns;
//   - every service labelled noproxy=edgemesh;
//   - services matching any extra ignore label selector (config, none by default);
//   - the EdgeMesh service-proxy-name filter (off by default): label
//     service.edgemesh.kubeedge.io/service-proxy-name; mode FilterIfLabelExists ignores services
//     that have it, FilterIfLabelDoesNotExists ignores services that do not. With a configured
//     name, "has it" means the label's value equals that name.
// Nothing (neither ignored nor proxied): ExternalName services, services without a cluster IP,
// and headless services that no rule above ignores. An ignored headless service is ignored per
// endpoint address (desired.ts).
import { ConfigError } from '../errors.js';
import type { ServiceInfo } from '../cluster/model.js';

export const NOPROXY_LABEL = 'noproxy';
export const NOPROXY_VALUE = 'edgemesh';
export const SERVICE_PROXY_NAME_LABEL = 'service.edgemesh.kubeedge.io/service-proxy-name';
export const SERVICE_PROXY_FILTER_MODES = ['None', 'FilterIfLabelExists', 'FilterIfLabelDoesNotExists'] as const;
export type ServiceProxyFilterMode = (typeof SERVICE_PROXY_FILTER_MODES)[number];

// ---- label selectors (the Kubernetes string syntax) ----

export type Requirement =
  | { key: string; op: 'exists' | 'notExists' }
  | { key: string; op: 'in' | 'notIn'; values: string[] };

export interface LabelSelector {
  /** The text it was parsed from. */
  text: string;
  /** All must match (AND). Empty matches everything. */
  requirements: Requirement[];
}

const KEY_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$/;

function checkKey(key: string, text: string): void {
  const slash = key.indexOf('/');
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  if (prefix !== undefined && (prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix))) {
    throw new ConfigError(`label selector "${text}": bad key prefix "${prefix}"`);
  }
  if (!KEY_NAME.test(name)) throw new ConfigError(`label selector "${text}": bad key "${key}"`);
}

function checkValue(value: string, text: string): void {
  if (value.length > 63 || !LABEL_VALUE.test(value)) throw new ConfigError(`label selector "${text}": bad value "${value}"`);
}

type Token = { t: 'id'; v: string } | { t: 'op'; v: '=' | '==' | '!=' | '!' | '(' | ')' | ',' };

function tokenize(text: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i] as string;
    if (c === ' ' || c === '\t') {
      i++;
    } else if (c === '=' && text[i + 1] === '=') {
      out.push({ t: 'op', v: '==' });
      i += 2;
    } else if (c === '!' && text[i + 1] === '=') {
      out.push({ t: 'op', v: '!=' });
      i += 2;
    } else if (c === '=' || c === '!' || c === '(' || c === ')' || c === ',') {
      out.push({ t: 'op', v: c });
      i++;
    } else {
      let j = i;
      while (j < text.length && !' \t=!(),'.includes(text[j] as string)) j++;
      out.push({ t: 'id', v: text.slice(i, j) });
      i = j;
    }
  }
  return out;
}

/**
 * Parses a label selector string: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`,
 * `k notin (a,b)`, comma-separated (AND). Throws ConfigError naming the selector.
 */
export function parseLabelSelector(text: string): LabelSelector {
  const toks = tokenize(text);
  const reqs: Requirement[] = [];
  let i = 0;
  const bad = (why: string): never => {
    throw new ConfigError(`label selector "${text}": ${why}`);
  };
  const peek = (): Token | undefined => toks[i];
  const id = (what: string): string => {
    const t = toks[i++];
    if (!t || t.t !== 'id') bad(`expected ${what}`);
    return (t as { v: string }).v;
  };
  if (toks.length === 0) bad('empty');
  while (i < toks.length) {
    const first = peek();
    if (first?.t === 'op' && first.v === '!') {
      i++;
      const key = id('a key after "!"');
      checkKey(key, text);
      reqs.push({ key, op: 'notExists' });
    } else {
      const key = id('a key');
      checkKey(key, text);
      const op = peek();
      if (!op || (op.t === 'op' && op.v === ',')) {
        reqs.push({ key, op: 'exists' });
      } else if (op.t === 'op' && (op.v === '=' || op.v === '==' || op.v === '!=')) {
        i++;
        const next = peek();
        let value = '';
        if (next?.t === 'id') {
          value = next.v;
          i++;
        }
        checkValue(value, text);
        reqs.push({ key, op: op.v === '!=' ? 'notIn' : 'in', values: [value] });
      } else if (op.t === 'id' && (op.v === 'in' || op.v === 'notin')) {
        i++;
        const open = toks[i++];
        if (!open || open.t !== 'op' || open.v !== '(') bad(`expected "(" after ${op.v}`);
        const values: string[] = [];
        for (;;) {
          const t = toks[i++];
          if (!t) bad('missing ")"');
          if (t?.t === 'id') {
            checkValue(t.v, text);
            values.push(t.v);
            const sep = toks[i++];
            if (sep?.t === 'op' && sep.v === ')') break;
            if (!(sep?.t === 'op' && sep.v === ',')) bad('expected "," or ")" in value list');
          } else if (t?.t === 'op' && t.v === ')' && values.length === 0) {
            bad('empty value list');
          } else bad('expected a value');
        }
        reqs.push({ key, op: op.v === 'in' ? 'in' : 'notIn', values });
      } else {
        bad(`unexpected "${op.v}" after key "${key}"`);
      }
    }
    const sep = toks[i];
    if (sep === undefined) break;
    if (sep.t !== 'op' || sep.v !== ',') bad(`expected "," before "${sep.v}"`);
    i++;
    if (i >= toks.length) bad('trailing ","');
  }
  return { text, requirements: reqs };
}

export function matchesSelector(sel: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  return sel.requirements.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    switch (r.op) {
      case 'exists':
        return has;
      case 'notExists':
        return !has;
      case 'in':
        return has && r.values.includes(labels[r.key] as string);
      case 'notIn':
        return !has || !r.values.includes(labels[r.key] as string);
    }
  });
}

// ---- selection ----

export interface SelectionConfig {
  /** Extra selectors: a service matching any of them is ignored. */
  ignoreLabelSelectors: readonly LabelSelector[];
  serviceProxyFilterMode: ServiceProxyFilterMode;
  /** With a filter mode: the label value that counts as "has the label"; empty: any value. */
  serviceProxyName: string;
}

export const DEFAULT_SELECTION: SelectionConfig = { ignoreLabelSelectors: [], serviceProxyFilterMode: 'None', serviceProxyName: '' };

export type Selection =
  | { kind: 'ignored'; reason: string }
  | { kind: 'proxied'; reason: string }
  | { kind: 'none'; reason: string };

/** Why a service is ignored, or undefined when no ignore rule matches it. */
export function ignoreReason(svc: ServiceInfo, config: SelectionConfig): string | undefined {
  if (svc.namespace === 'default' && svc.name === 'kubernetes') return 'default/kubernetes (API server)';
  if (svc.namespace === 'kube-system' && svc.labels['k8s-app'] === 'kube-dns') return 'kube-system service labelled k8s-app=kube-dns';
  if (svc.labels[NOPROXY_LABEL] === NOPROXY_VALUE) return `labelled ${NOPROXY_LABEL}=${NOPROXY_VALUE}`;
  for (const sel of config.ignoreLabelSelectors) if (matchesSelector(sel, svc.labels)) return `matches ignore label selector "${sel.text}"`;
  if (config.serviceProxyFilterMode !== 'None') {
    const value = svc.labels[SERVICE_PROXY_NAME_LABEL];
    const has = value !== undefined && (config.serviceProxyName === '' || value === config.serviceProxyName);
    const label = config.serviceProxyName ? `${SERVICE_PROXY_NAME_LABEL}=${config.serviceProxyName}` : SERVICE_PROXY_NAME_LABEL;
    if (config.serviceProxyFilterMode === 'FilterIfLabelExists' && has) return `has label ${label} (FilterIfLabelExists)`;
    if (config.serviceProxyFilterMode === 'FilterIfLabelDoesNotExists' && !has) return `lacks label ${label} (FilterIfLabelDoesNotExists)`;
  }
  return undefined;
}

export function selectService(svc: ServiceInfo, config: SelectionConfig): Selection {
  if (svc.type === 'ExternalName') return { kind: 'none', reason: 'ExternalName service (no cluster IP)' };
  const ignored = ignoreReason(svc, config);
  if (svc.headless) {
    return ignored ? { kind: 'ignored', reason: `${ignored}; headless: one RETURN per endpoint address` } : { kind: 'none', reason: 'headless service (no cluster IP to proxy)' };
  }
  if (svc.clusterIPs.length === 0) return { kind: 'none', reason: 'no cluster IP' };
  if (ignored) return { kind: 'ignored', reason: ignored };
  return { kind: 'proxied', reason: 'cluster IP in the service CIDR goes to EDGE-MESH-TCP' };
}
