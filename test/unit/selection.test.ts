import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import type { ServiceInfo } from '../../src/cluster/model.js';
import { DEFAULT_SELECTION, matchesSelector, parseLabelSelector, selectService, type SelectionConfig } from '../../src/intent/selection.js';

const svc = (ns: string, name: string, labels: Record<string, string> = {}, over: Partial<ServiceInfo> = {}): ServiceInfo => ({
  namespace: ns,
  name,
  labels,
  type: 'ClusterIP',
  clusterIPs: ['10.10.1.1'],
  headless: false,
  ports: [{ name: '', protocol: 'TCP', port: 80, targetPort: 80 }],
  sessionAffinity: 'None',
  affinityTimeoutSeconds: 10800,
  internalTrafficPolicy: 'Cluster',
  ...over,
});

describe('label selector parsing', () => {
  const m = (sel: string, labels: Record<string, string>): boolean => matchesSelector(parseLabelSelector(sel), labels);

  it('parses every operator into requirements', () => {
    expect(parseLabelSelector('a=1, b==2,c!=3, d, !e, f in (x, y), g notin (z)').requirements).toEqual([
      { key: 'a', op: 'in', values: ['1'] },
      { key: 'b', op: 'in', values: ['2'] },
      { key: 'c', op: 'notIn', values: ['3'] },
      { key: 'd', op: 'exists' },
      { key: 'e', op: 'notExists' },
      { key: 'f', op: 'in', values: ['x', 'y'] },
      { key: 'g', op: 'notIn', values: ['z'] },
    ]);
  });

  it('matches as Kubernetes does (AND, != and notin match a missing key)', () => {
    expect(m('tier=cloud', { tier: 'cloud' })).toBe(true);
    expect(m('tier=cloud', { tier: 'edge' })).toBe(false);
    expect(m('tier!=cloud', {})).toBe(true);
    expect(m('tier!=cloud', { tier: 'cloud' })).toBe(false);
    expect(m('tier', { tier: '' })).toBe(true);
    expect(m('!tier', { tier: '' })).toBe(false);
    expect(m('!tier', {})).toBe(true);
    expect(m('env in (prod,staging)', { env: 'staging' })).toBe(true);
    expect(m('env in (prod,staging)', {})).toBe(false);
    expect(m('env notin (prod)', {})).toBe(true);
    expect(m('env notin (prod)', { env: 'prod' })).toBe(false);
    expect(m('a=1,b=2', { a: '1' })).toBe(false);
    expect(m('example.com/team=x', { 'example.com/team': 'x' })).toBe(true);
  });

  it.each([
    ['', 'empty'],
    ['a=1,', 'trailing ","'],
    ['a in (', 'missing ")"'],
    ['a in ()', 'empty value list'],
    ['a in x', 'expected "(" after in'],
    ['a b', 'unexpected "b" after key "a"'],
    ['-bad=1', 'bad key "-bad"'],
    ['a=bad value!', 'expected "," before "value"'],
    ['a=b@c', 'bad value "b@c"'],
    ['a=' + 'x'.repeat(64), 'bad value'],
    ['Bad_Prefix/k=1', 'bad key prefix "Bad_Prefix"'],
  ])('rejects %j with a message naming the selector (%s)', (text, why) => {
    expect(() => parseLabelSelector(text)).toThrow(ConfigError);
    expect(() => parseLabelSelector(text)).toThrow(`label selector "${text}"`);
    expect(() => parseLabelSelector(text)).toThrow(why);
  });
});

describe('service selection', () => {
  const sel = (s: ServiceInfo, c: SelectionConfig = DEFAULT_SELECTION): string => selectService(s, c).kind;

  it('ignores default/kubernetes, kube-dns in kube-system and noproxy=edgemesh by default', () => {
    expect(sel(svc('default', 'kubernetes'))).toBe('ignored');
    expect(sel(svc('kube-system', 'coredns', { 'k8s-app': 'kube-dns' }))).toBe('ignored');
    expect(sel(svc('monitoring', 'grafana', { noproxy: 'edgemesh' }))).toBe('ignored');
  });

  it('proxies look-alikes that are not the defaults', () => {
    expect(sel(svc('other', 'kubernetes'))).toBe('proxied');
    expect(sel(svc('default', 'dns', { 'k8s-app': 'kube-dns' }))).toBe('proxied'); // kube-dns label counts only in kube-system
    expect(sel(svc('kube-system', 'metrics-server'))).toBe('proxied');
    expect(sel(svc('x', 'y', { noproxy: 'other' }))).toBe('proxied');
  });

  it('gives the reason', () => {
    expect(selectService(svc('m', 'g', { noproxy: 'edgemesh' }), DEFAULT_SELECTION).reason).toContain('noproxy=edgemesh');
  });

  it('applies extra ignore label selectors', () => {
    const c: SelectionConfig = { ...DEFAULT_SELECTION, ignoreLabelSelectors: [parseLabelSelector('tier in (cloud)'), parseLabelSelector('!edge')] };
    expect(sel(svc('a', 'b', { tier: 'cloud', edge: 'y' }), c)).toBe('ignored');
    expect(sel(svc('a', 'b', { edge: 'y' }), c)).toBe('proxied');
    expect(sel(svc('a', 'b', {}), c)).toBe('ignored');
    expect(selectService(svc('a', 'b', {}), c).reason).toContain('"!edge"');
  });

  it('service-proxy-name filter: off by default, FilterIfLabelExists, FilterIfLabelDoesNotExists, with and without a name', () => {
    const L = 'service.edgemesh.kubeedge.io/service-proxy-name';
    const withLabel = svc('a', 'with', { [L]: 'edgemesh' });
    const otherName = svc('a', 'other', { [L]: 'someone-else' });
    const without = svc('a', 'without');
    expect([withLabel, otherName, without].map((s) => sel(s))).toEqual(['proxied', 'proxied', 'proxied']);
    const exists: SelectionConfig = { ...DEFAULT_SELECTION, serviceProxyFilterMode: 'FilterIfLabelExists' };
    expect([withLabel, otherName, without].map((s) => sel(s, exists))).toEqual(['ignored', 'ignored', 'proxied']);
    const notExists: SelectionConfig = { ...DEFAULT_SELECTION, serviceProxyFilterMode: 'FilterIfLabelDoesNotExists' };
    expect([withLabel, otherName, without].map((s) => sel(s, notExists))).toEqual(['proxied', 'proxied', 'ignored']);
    const named: SelectionConfig = { ...notExists, serviceProxyName: 'edgemesh' };
    expect([withLabel, otherName, without].map((s) => sel(s, named))).toEqual(['proxied', 'ignored', 'ignored']);
    const namedExists: SelectionConfig = { ...exists, serviceProxyName: 'edgemesh' };
    expect([withLabel, otherName, without].map((s) => sel(s, namedExists))).toEqual(['ignored', 'proxied', 'proxied']);
  });

  it('ExternalName and services without a cluster IP get nothing; headless only when ignored', () => {
    expect(sel(svc('a', 'ext', { noproxy: 'edgemesh' }, { type: 'ExternalName', clusterIPs: [] }))).toBe('none');
    expect(sel(svc('a', 'noip', {}, { clusterIPs: [] }))).toBe('none');
    expect(sel(svc('a', 'noip', { noproxy: 'edgemesh' }, { clusterIPs: [] }))).toBe('none');
    expect(sel(svc('a', 'hl', {}, { clusterIPs: [], headless: true }))).toBe('none');
    expect(sel(svc('a', 'hl', { noproxy: 'edgemesh' }, { clusterIPs: [], headless: true }))).toBe('ignored');
  });
});
