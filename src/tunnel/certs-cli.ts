// `edgemesh-agent certs init|issue`: the tunnel's certificates from the command line. Parsed here
// rather than by config.ts's option table: these flags have nothing to do with the agent's
// configuration (no env, no --config file, no defaults to merge), and cli.ts hands `certs` over
// before it parses anything.
// Exit codes as for the other commands: 0 done; 1 a runtime failure; 2 bad input (one line
// "edgemesh-agent: ..." naming the flag or file; nothing was written).
import { ConfigError } from '../errors.js';
import { DEFAULT_CA_DAYS, DEFAULT_NODE_DAYS, MAX_DAYS, initCa, issueNodeCert, validateNodeName, type WrittenCert } from './certs.js';

export const CERTS_HELP = `Usage: edgemesh-agent certs init  --dir DIR [--days N] [--force]
       edgemesh-agent certs issue --dir DIR --node NAME [--days N]

Certificates for the agents' mutual-TLS tunnel (EC P-256, SHA-256).
  init    create the cluster CA: DIR/ca.pem (0644) and DIR/ca.key (0600)
  issue   a node certificate signed by DIR's CA: DIR/NAME.pem (0644) and DIR/NAME.key (0600),
          CN and DNS subjectAltName = NAME, usable as TLS server and client

Flags:
  --dir DIR     the directory of the files (created 0700 if missing)
  --node NAME   the Kubernetes node name (a DNS-1123 subdomain)
  --days N      validity in days (default ${DEFAULT_CA_DAYS} for init, ${DEFAULT_NODE_DAYS} for issue)
  --force       init: replace an existing CA (the certificates it signed stop verifying)
`;

const FLAGS: Record<'init' | 'issue', readonly string[]> = {
  init: ['dir', 'days', 'force'],
  issue: ['dir', 'node', 'days'],
};
const BOOLEAN = new Set(['force']);

interface Parsed {
  sub: 'init' | 'issue';
  values: Map<string, string>;
}

function parse(argv: string[]): Parsed | 'help' {
  if (argv.includes('--help') || argv.includes('-h')) return 'help';
  const sub = argv[0];
  if (sub === undefined) throw new ConfigError('certs: missing subcommand (expected init or issue)', 'command');
  if (sub !== 'init' && sub !== 'issue') throw new ConfigError(`certs: unknown subcommand "${sub}" (expected init or issue)`, 'command');
  const values = new Map<string, string>();
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i] as string;
    if (!a.startsWith('--')) throw new ConfigError(`certs ${sub}: unexpected argument "${a}"`, 'args');
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (!FLAGS[sub].includes(name)) throw new ConfigError(`certs ${sub}: unknown flag --${name}`, name);
    if (values.has(name)) throw new ConfigError(`certs ${sub}: --${name} given twice`, name);
    if (BOOLEAN.has(name)) {
      if (eq >= 0) throw new ConfigError(`certs ${sub}: --${name} takes no value`, name);
      values.set(name, 'true');
      continue;
    }
    let v: string | undefined;
    if (eq >= 0) v = a.slice(eq + 1);
    else {
      v = argv[i + 1];
      if (v === undefined || v.startsWith('--')) throw new ConfigError(`certs ${sub}: --${name} needs a value`, name);
      i++;
    }
    if (v === '') throw new ConfigError(`certs ${sub}: --${name} is empty`, name);
    values.set(name, v);
  }
  return { sub, values };
}

function days(p: Parsed): number | undefined {
  const v = p.values.get('days');
  if (v === undefined) return undefined;
  const n = /^[0-9]+$/.test(v) ? Number(v) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > MAX_DAYS) throw new ConfigError(`--days "${v}": expected a whole number of days from 1 to ${MAX_DAYS}`, 'days');
  return n;
}

function report(w: WrittenCert): string {
  const i = w.info;
  return [
    `wrote ${w.certPath} (0644) and ${w.keyPath} (0600)`,
    `  subject:   ${i.subjectCN ? `CN=${i.subjectCN}` : '(no CN)'}${i.dnsNames.length ? `, DNS:${i.dnsNames.join(', DNS:')}` : ''}`,
    `  issuer:    CN=${i.issuerCN}`,
    `  serial:    ${i.serialHex}`,
    `  not after: ${i.notAfter}`,
    '',
  ].join('\n');
}

/** Runs `edgemesh-agent certs ARGV...` (argv: the words after "certs"); resolves with the exit code. */
export async function runCertsCommand(argv: string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  try {
    const p = parse(argv);
    if (p === 'help') {
      out(CERTS_HELP);
      return 0;
    }
    const dir = p.values.get('dir');
    if (dir === undefined) throw new ConfigError(`certs ${p.sub}: missing --dir DIR`, 'dir');
    const d = days(p);
    if (p.sub === 'init') {
      out(report(await initCa(dir, { ...(d !== undefined ? { days: d } : {}), force: p.values.has('force') })));
      return 0;
    }
    const node = p.values.get('node');
    if (node === undefined) throw new ConfigError('certs issue: missing --node NAME', 'node');
    validateNodeName(node);
    out(report(await issueNodeCert(dir, node, d !== undefined ? { days: d } : {})));
    return 0;
  } catch (e) {
    const message = String((e as Error)?.message ?? e).split('\n')[0];
    err(`edgemesh-agent: ${message}\n`);
    return e instanceof ConfigError ? 2 : 1;
  }
}
