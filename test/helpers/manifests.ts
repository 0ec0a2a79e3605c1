// Kubernetes manifests for the tests, as an operator would write them into --services-dir.
import { mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SvcSpec {
  namespace: string;
  name: string;
  /** An address, or 'None' (headless). */
  clusterIP: string;
  clusterIPs?: string[];
  labels?: Record<string, string>;
  ports?: { name?: string; port: number; targetPort?: number | string; protocol?: string }[];
}

export function serviceYaml(s: SvcSpec): string {
  const labels = Object.entries(s.labels ?? {})
    .map(([k, v]) => `    ${k}: "${v}"`)
    .join('\n');
  const ports = (s.ports ?? [{ port: 80 }])
    .map((p) => `  - port: ${p.port}\n    protocol: ${p.protocol ?? 'TCP'}${p.name ? `\n    name: ${p.name}` : ''}${p.targetPort !== undefined ? `\n    targetPort: ${p.targetPort}` : ''}`)
    .join('\n');
  return `apiVersion: v1
kind: Service
metadata:
  name: ${s.name}
  namespace: ${s.namespace}
${labels ? `  labels:\n${labels}\n` : ''}spec:
  clusterIP: ${s.clusterIP}
${s.clusterIPs ? `  clusterIPs: [${s.clusterIPs.join(', ')}]\n` : ''}  ports:
${ports}
`;
}

export function sliceYaml(namespace: string, service: string, addresses: string[], port = 80, opts: { name?: string; addressType?: string; portName?: string } = {}): string {
  const eps = addresses.map((a) => `- addresses: ["${a}"]\n  conditions:\n    ready: true`).join('\n');
  return `apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: ${opts.name ?? `${service}-abc12`}
  namespace: ${namespace}
  labels:
    kubernetes.io/service-name: ${service}
addressType: ${opts.addressType ?? 'IPv4'}
ports:
- port: ${port}
  protocol: TCP${opts.portName ? `\n  name: ${opts.portName}` : ''}
endpoints:${addresses.length ? `\n${eps}` : ' []'}
`;
}

/** A temporary --services-dir; files are replaced atomically (write + rename) as tools do. */
export class ServicesDir {
  readonly path = mkdtempSync(join(tmpdir(), 'edgemesh-svc-'));
  private n = 0;
  write(file: string, content: string): void {
    const tmp = join(this.path, `.${file}.${this.n++}.tmp`);
    writeFileSync(tmp, content);
    renameSync(tmp, join(this.path, file));
  }
  remove(file: string): void {
    rmSync(join(this.path, file), { force: true });
  }
  destroy(): void {
    rmSync(this.path, { recursive: true, force: true });
  }
}

/** The basic example: kubernetes and coredns ignored by default, plus proxied services. */
export function seedBasics(dir: ServicesDir): void {
  dir.write('kubernetes.yaml', serviceYaml({ namespace: 'default', name: 'kubernetes', clusterIP: '10.10.0.1', labels: { component: 'apiserver', provider: 'kubernetes' }, ports: [{ name: 'https', port: 443, targetPort: 6443 }] }));
  dir.write(
    'coredns.yaml',
    serviceYaml({ namespace: 'kube-system', name: 'coredns', clusterIP: '10.10.0.3', labels: { 'k8s-app': 'kube-dns' }, ports: [{ name: 'dns', port: 53, protocol: 'UDP' }, { name: 'dns-tcp', port: 53 }, { name: 'metrics', port: 9153 }] }),
  );
  dir.write('web.yaml', serviceYaml({ namespace: 'default', name: 'web', clusterIP: '10.10.0.20' }) + '---\n' + sliceYaml('default', 'web', ['10.244.1.10']));
}
