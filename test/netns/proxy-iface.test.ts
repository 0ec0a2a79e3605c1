// The proxy interface helpers, run inside a namespace: create, idempotent re-ensure, refusal
// to adopt a foreign interface, removal.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { describeNetns, Netns } from '../helpers/netns.js';

const driver = join(dirname(fileURLToPath(import.meta.url)), 'drivers', 'iface.mjs');

describeNetns('proxy interface (edgemesh0)', () => {
  let ns: Netns;
  /** The driver prints {ok: kind} or the error's {error, code}. */
  const call = async (op: string, o: object) => JSON.parse((await ns.run('node', [driver, op, JSON.stringify(o)], { allowFail: true })).stdout.trim()) as { ok?: string; error?: string; code?: string };
  beforeAll(async () => {
    ns = await Netns.create('iface');
  });
  afterAll(async () => {
    await ns?.destroy();
  });

  it('creates the interface up with the IPv4 and IPv6 proxy addresses, and a second ensure changes nothing', async () => {
    const addrs = ['169.254.96.16', 'fd00:e::16'];
    const first = await call('ensure', { addresses: addrs });
    expect(['dummy', 'bridge']).toContain(first.ok);
    const before = (await ns.run('ip', ['-br', 'addr', 'show', 'dev', 'edgemesh0'])).stdout;
    expect(before).toMatch(/169\.254\.96\.16\/32/);
    expect(before).toMatch(/fd00:e::16\/128/);
    expect((await ns.run('ip', ['-j', 'link', 'show', 'edgemesh0'])).stdout).toMatch(/"UP"/);
    expect(await call('ensure', { addresses: addrs })).toEqual({ ok: first.ok });
    expect((await ns.run('ip', ['-br', 'addr', 'show', 'dev', 'edgemesh0'])).stdout).toBe(before);
    // The address is local: something can listen on it.
    expect((await ns.run('ip', ['route', 'get', '169.254.96.16'])).stdout).toMatch(/^local /);
  });

  it('refuses to adopt or delete an interface of another kind under that name', async () => {
    await ns.run('ip', ['link', 'add', 'emfake0', 'type', 'veth', 'peer', 'name', 'emfake1']);
    expect((await call('ensure', { name: 'emfake0' })).code).toBe('EIFACE');
    expect((await call('remove', { name: 'emfake0' })).code).toBe('EIFACE');
    expect((await ns.run('ip', ['link', 'show', 'emfake0'], { allowFail: true })).code).toBe(0);
  });

  it('removes the interface, and says so only once', async () => {
    expect(await call('remove', {})).toEqual({ ok: true });
    expect((await ns.run('ip', ['link', 'show', 'edgemesh0'], { allowFail: true })).code).not.toBe(0);
    expect(await call('remove', {})).toEqual({ ok: false });
  });
});
