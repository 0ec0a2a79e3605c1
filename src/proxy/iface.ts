// The proxy's own address: a dummy interface (edgemesh0 by default) holding the proxy IP(s),
// created by the agent at start and removed at exit/cleanup. Runs `ip` in the process's current
// network namespace (the agent's node namespace).
//
// Kernels built without CONFIG_DUMMY (this project's CI kernel is one) answer "Unknown device
// type": we then create a bridge with no ports instead, which does the same job here (an
// always-local, never-forwarding holder of addresses; kube-proxy's IPVS mode uses kube-ipvs0 the
// same way). The kind used is reported, and removal deletes only these two kinds.
import { execFile } from 'node:child_process';
import { isIP } from 'node:net';
import { promisify } from 'node:util';
import { ConfigError, InterfaceError } from '../errors.js';

const execFileP = promisify(execFile);

export const DEFAULT_PROXY_INTERFACE = 'edgemesh0';
export const DEFAULT_PROXY_ADDRESS = '169.254.96.16';
export const DEFAULT_PROXY_PORT = 40001;

export type ProxyInterfaceKind = 'dummy' | 'bridge';

export interface ProxyInterfaceOptions {
  /** Interface name (default edgemesh0). */
  name?: string;
  /** Proxy addresses to hold, one per family (default [169.254.96.16]). */
  addresses?: string[];
  /** The `ip` binary (default "ip" from PATH). */
  ipCommand?: string;
}

async function ip(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { timeout: 10_000 });
    return stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string };
    throw new InterfaceError(`${cmd} ${args.join(' ')}: ${(err.stderr ?? '').trim() || err.message}`, { cause: e });
  }
}

function checkName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new ConfigError(`invalid interface name "${name}"`, 'name');
}

interface LinkJson {
  ifname: string;
  flags?: string[];
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

async function showLink(cmd: string, name: string): Promise<LinkJson | undefined> {
  try {
    const { stdout } = await execFileP(cmd, ['-d', '-j', 'addr', 'show', 'dev', name], { timeout: 10_000 });
    const links = JSON.parse(stdout) as LinkJson[];
    return links[0];
  } catch (e) {
    const stderr = String((e as { stderr?: string }).stderr ?? '');
    if (/does not exist|Cannot find device/i.test(stderr)) return undefined;
    throw new InterfaceError(`${cmd} addr show dev ${name}: ${stderr.trim() || (e as Error).message}`, { cause: e });
  }
}

const OURS: readonly string[] = ['dummy', 'bridge'];

/** A port-less bridge: ours to adopt or delete (a bridge with ports is someone's real bridge). */
async function isOurs(cmd: string, link: LinkJson): Promise<boolean> {
  const kind = link.linkinfo?.info_kind ?? '';
  if (!OURS.includes(kind)) return false;
  if (kind === 'dummy') return true;
  const ports = JSON.parse(await ip(cmd, ['-j', 'link', 'show', 'master', link.ifname])) as unknown[];
  return ports.length === 0;
}

/**
 * Makes sure the interface exists (dummy, or a port-less bridge where the kernel has no dummy
 * driver), is up and holds each proxy address (/32 or /128). Idempotent. Refuses to adopt an
 * existing interface of another kind. Returns the kind in use.
 */
export async function ensureProxyInterface(opts: ProxyInterfaceOptions = {}): Promise<ProxyInterfaceKind> {
  const name = opts.name ?? DEFAULT_PROXY_INTERFACE;
  const cmd = opts.ipCommand ?? 'ip';
  const addresses = opts.addresses ?? [DEFAULT_PROXY_ADDRESS];
  checkName(name);
  for (const a of addresses) if (isIP(a) === 0) throw new ConfigError(`proxy address "${a}" is not an IP address`, 'addresses');
  let link = await showLink(cmd, name);
  if (!link) {
    try {
      await ip(cmd, ['link', 'add', name, 'type', 'dummy']);
    } catch (e) {
      if (!/Unknown device type|not supported/i.test((e as Error).message)) throw e;
      await ip(cmd, ['link', 'add', name, 'type', 'bridge']);
    }
    link = await showLink(cmd, name);
    if (!link) throw new InterfaceError(`interface ${name} vanished right after it was created`);
  } else if (!(await isOurs(cmd, link))) {
    throw new InterfaceError(`interface ${name} exists and is not a dummy or port-less bridge (${link.linkinfo?.info_kind ?? 'unknown kind'}); not touching it`);
  }
  const have = new Set((link.addr_info ?? []).map((a) => a.local));
  for (const a of addresses) {
    if (have.has(a)) continue;
    if (isIP(a) === 6) await ip(cmd, ['-6', 'addr', 'add', `${a}/128`, 'dev', name, 'nodad']);
    else await ip(cmd, ['addr', 'add', `${a}/32`, 'dev', name]);
  }
  if (!(link.flags ?? []).includes('UP')) await ip(cmd, ['link', 'set', name, 'up']);
  return link.linkinfo?.info_kind === 'bridge' ? 'bridge' : 'dummy';
}

/** Deletes the interface (and so its addresses). Returns false when it did not exist. Only deletes ours (see ensure). */
export async function removeProxyInterface(opts: Pick<ProxyInterfaceOptions, 'name' | 'ipCommand'> = {}): Promise<boolean> {
  const name = opts.name ?? DEFAULT_PROXY_INTERFACE;
  const cmd = opts.ipCommand ?? 'ip';
  checkName(name);
  const link = await showLink(cmd, name);
  if (!link) return false;
  if (!(await isOurs(cmd, link))) throw new InterfaceError(`interface ${name} is not a dummy or port-less bridge; not deleting it`);
  await ip(cmd, ['link', 'del', name]);
  return true;
}
