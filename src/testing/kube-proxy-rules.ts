// kube-proxy's iptables-mode rules for a set of services, in kube-proxy's own shape
// (pkg/proxy/iptables/proxier.go): KUBE-SERVICES -> KUBE-SVC-<hash> -> KUBE-SEP-<hash> with a
// DNAT per endpoint, random probability per endpoint, KUBE-MARK-MASQ for off-cluster sources.
// The demo and the bench use it to play kube-proxy with services of their own; the real dumps
// in test/fixtures/kube-proxy are loaded beside it.
import { createHash } from 'node:crypto';
import type { Family } from '../netfilter/rules.js';

export interface KubeProxyService {
  namespace: string;
  name: string;
  portName?: string;
  clusterIP: string;
  port: number;
  protocol?: 'tcp' | 'udp';
  endpoints: { ip: string; port: number }[];
}

/** kube-proxy's servicePortChainName: prefix + base32(sha256(key))[:16]. */
export function chainName(prefix: 'KUBE-SVC-' | 'KUBE-SEP-', key: string): string {
  const sum = createHash('sha256').update(key).digest();
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of sum) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return prefix + out.slice(0, 16);
}

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * iptables-restore input (for `--noflush`) that adds the services to an existing kube-proxy
 * nat table: declares their KUBE-SVC/KUBE-SEP chains, inserts their KUBE-SERVICES rules at the
 * top, and declares KUBE-SERVICES/KUBE-MARK-MASQ only when `standalone` (a table without the
 * fixture).
 */
export function kubeProxyRestore(services: readonly KubeProxyService[], opts: { family?: Family; standalone?: boolean; clusterCidr?: string } = {}): string {
  const family = opts.family ?? 'ipv4';
  const host = family === 'ipv4' ? '/32' : '/128';
  const clusterCidr = opts.clusterCidr ?? (family === 'ipv4' ? '10.0.0.0/8' : 'fd00:10::/64');
  const decl: string[] = [];
  const rules: string[] = [];
  const top: string[] = [];
  if (opts.standalone) {
    decl.push(':KUBE-SERVICES - [0:0]', ':KUBE-MARK-MASQ - [0:0]');
    rules.push('-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000');
  }
  for (const s of services) {
    const proto = s.protocol ?? 'tcp';
    const spn = `${s.namespace}/${s.name}${s.portName ? `:${s.portName}` : ''}`;
    const svcChain = chainName('KUBE-SVC-', `${spn}/${proto}`);
    decl.push(`:${svcChain} - [0:0]`);
    top.push(`-I KUBE-SERVICES 1 -d ${s.clusterIP}${host} -p ${proto} -m comment --comment "${spn} cluster IP" -m ${proto} --dport ${s.port} -j ${svcChain}`);
    rules.push(`-A ${svcChain} ! -s ${clusterCidr} -d ${s.clusterIP}${host} -p ${proto} -m comment --comment "${spn} cluster IP" -m ${proto} --dport ${s.port} -j KUBE-MARK-MASQ`);
    s.endpoints.forEach((ep, i) => {
      const sepChain = chainName('KUBE-SEP-', `${spn}/${proto}/${hostPort(ep.ip, ep.port)}`);
      decl.push(`:${sepChain} - [0:0]`);
      const n = s.endpoints.length - i;
      const prob = n > 1 ? ` -m statistic --mode random --probability ${(1 / n).toFixed(10)}` : '';
      rules.push(`-A ${svcChain} -m comment --comment "${spn} -> ${hostPort(ep.ip, ep.port)}"${prob} -j ${sepChain}`);
      rules.push(`-A ${sepChain} -s ${ep.ip}${host} -m comment --comment "${spn}" -j KUBE-MARK-MASQ`);
      rules.push(`-A ${sepChain} -p ${proto} -m comment --comment "${spn}" -m ${proto} -j DNAT --to-destination ${hostPort(ep.ip, ep.port)}`);
    });
  }
  return ['*nat', ...decl, ...top, ...rules, 'COMMIT', ''].join('\n');
}

/**
 * kube-proxy's nftables-mode rules for the services (pkg/proxy/nftables/proxier.go), to add to a
 * loaded `ip kube-proxy` table: a service chain per port with the masquerade check and a numgen
 * vmap over endpoint chains, each endpoint chain DNATing, and the service-ips map element.
 */
export function kubeProxyNft(services: readonly KubeProxyService[], opts: { clusterCidr?: string } = {}): string {
  const clusterCidr = opts.clusterCidr ?? '10.0.0.0/8';
  const lines: string[] = [];
  for (const s of services) {
    const proto = s.protocol ?? 'tcp';
    const spn = `${s.namespace}/${s.name}/${proto}/${s.portName ?? ''}`;
    const hash = (k: string) => chainName('KUBE-SVC-', k).slice('KUBE-SVC-'.length, 'KUBE-SVC-'.length + 8);
    const svcChain = `service-${hash(spn)}-${spn}`;
    lines.push(`add chain ip kube-proxy ${svcChain}`);
    lines.push(`add rule ip kube-proxy ${svcChain} ip daddr ${s.clusterIP} ip saddr != ${clusterCidr} jump mark-for-masquerade`);
    const eps = s.endpoints.map((ep) => {
      const c = `endpoint-${hash(`${spn}__${ep.ip}/${ep.port}`)}-${spn}__${ep.ip}/${ep.port}`;
      lines.push(`add chain ip kube-proxy ${c}`);
      lines.push(`add rule ip kube-proxy ${c} ip saddr ${ep.ip} jump mark-for-masquerade`);
      lines.push(`add rule ip kube-proxy ${c} meta l4proto ${proto} dnat to ${ep.ip}:${ep.port}`);
      return c;
    });
    lines.push(`add rule ip kube-proxy ${svcChain} numgen random mod ${eps.length} vmap { ${eps.map((c, i) => `${i} : goto ${c}`).join(' , ')} }`);
    lines.push(`add element ip kube-proxy service-ips { ${s.clusterIP} . ${proto} . ${s.port} : goto ${svcChain} }`);
  }
  return lines.join('\n') + '\n';
}
