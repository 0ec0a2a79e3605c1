// originalDst(fd) against the real kernel: a connection DNAT'd inside a namespace reports its
// pre-DNAT destination (IPv4 and IPv6); a plain one reports what the kernel says (its own
// address); bad fds give errno-named errors and a wrong type a TypeError.
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeNetns, Netns } from '../helpers/netns.js';

const drivers = join(dirname(fileURLToPath(import.meta.url)), 'drivers');

async function probe(ns: Netns, listen: { host: string; port: number }, dial: { host: string; port: number }) {
  const r = await ns.run('node', [join(drivers, 'origdst.mjs'), JSON.stringify({ listen, dial })], { timeoutMs: 20_000 });
  // The driver's last line: what originalDst() returned (ok) or threw (errs), and the socket's own address.
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok?: unknown; local?: unknown; errs: Record<string, unknown> };
}

describeNetns('originalDst (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST)', () => {
  let ns: Netns;
  beforeAll(async () => {
    expect(existsSync(join(drivers, '../../../dist/src/proxy/sockopt.js')), 'run tsc first (dist/)').toBe(true);
    ns = await Netns.create('origdst');
    await ns.sh(
      [
        'iptables-legacy -w -t nat -A OUTPUT -d 10.10.0.10/32 -p tcp --dport 80 -j DNAT --to-destination 127.0.0.1:18080',
        'ip6tables-legacy -w -t nat -A OUTPUT -d fd00:10::10/128 -p tcp --dport 80 -j DNAT --to-destination [::1]:18080',
        'ip route add 10.10.0.0/16 dev lo',
        'ip -6 route add fd00:10::/64 dev lo',
      ].join(' && '),
    );
  });
  afterAll(async () => {
    await ns?.destroy();
  });

  it('returns the pre-DNAT IPv4 address and port of a DNAT-ed connection', async () => {
    const r = await probe(ns, { host: '127.0.0.1', port: 18080 }, { host: '10.10.0.10', port: 80 });
    expect(r.ok).toEqual({ address: '10.10.0.10', port: 80, family: 4 });
    expect(r.local).toEqual({ address: '127.0.0.1', port: 18080 });
  });

  it('returns the pre-DNAT IPv6 address and port of a DNAT-ed connection', async () => {
    const r = await probe(ns, { host: '::1', port: 18080 }, { host: 'fd00:10::10', port: 80 });
    expect(r.ok).toEqual({ address: 'fd00:10::10', port: 80, family: 6 });
  });

  it('returns the socket’s own address for a connection that was not NATed', async () => {
    const r = await probe(ns, { host: '127.0.0.1', port: 18081 }, { host: '127.0.0.1', port: 18081 });
    expect(r.ok).toEqual({ address: '127.0.0.1', port: 18081, family: 4 });
  });

  it('throws errno-named errors for a closed fd, a non-socket and a unix socket, and a TypeError for a non-number', async () => {
    const r = await probe(ns, { host: '127.0.0.1', port: 18082 }, { host: '127.0.0.1', port: 18082 });
    expect(r.errs.badfd).toMatchObject({ name: 'SyscallError', code: 'EBADF', syscall: 'getsockname' });
    expect(r.errs.notsock).toMatchObject({ name: 'SyscallError', code: 'ENOTSOCK', syscall: 'getsockname' });
    expect(r.errs.unix).toMatchObject({ name: 'SyscallError', code: 'EAFNOSUPPORT', syscall: 'getsockopt' });
    expect(r.errs.typeerror).toMatchObject({ name: 'TypeError' });
  });
});
