// The proxy's JS surface without privileges: validation errors, TypeErrors from the addon
// instead of crashes, and the lifecycle of a proxy on loopback (no namespace, no rules: a direct
// connection to it is refused and reported).
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { native } from '../../src/native/load.js';
import { TcpProxy, type ConnectionEvent } from '../../src/proxy/proxy.js';
import { originalDst } from '../../src/proxy/sockopt.js';

describe('TcpProxy API', () => {
  it('rejects bad options with a ConfigError naming the field', () => {
    expect(() => new TcpProxy({ address: 'nope' })).toThrow(ConfigError);
    expect(() => new TcpProxy({ port: 70000 })).toThrow(/port/);
    expect(() => new TcpProxy({ mode: 'zero-copy' as 'splice' })).toThrow(/mode/);
    expect(() => new TcpProxy({ connectTimeoutMs: 0 })).toThrow(/connectTimeoutMs/);
  });

  it('turns wrong types passed to the addon into TypeErrors, never a crash', () => {
    const n = native();
    expect(() => new n.Proxy({ address: 1 } as never, () => {})).toThrow(TypeError);
    expect(() => new n.Proxy({ address: '127.0.0.1', port: 0, mode: 'x' } as never, () => {})).toThrow(TypeError);
    expect(() => new n.Proxy({ address: '127.0.0.1', port: -1 }, () => {})).toThrow(TypeError);
    expect(() => n.originalDst('3' as never)).toThrow(TypeError);
    expect(() => originalDst(-1)).toThrow(TypeError);
    const p = new n.Proxy({ address: '127.0.0.1', port: 0, threads: 1 }, () => {});
    try {
      expect(() => p.setRoutes({} as never)).toThrow(TypeError);
      expect(() => p.setRoutes([{ ip: 'not-an-ip', port: 80, service: 's', endpoints: [], clientIPAffinity: false, affinityTimeoutSeconds: 1 }])).toThrow(TypeError);
      expect(() => p.setRoutes([{ ip: '10.0.0.1', port: 80, service: 's', endpoints: [{ ip: '10.0.0.2', port: 'x' as never }], clientIPAffinity: false, affinityTimeoutSeconds: 1 }])).toThrow(TypeError);
      const dup = { ip: '10.0.0.1', port: 80, service: 's', endpoints: [], clientIPAffinity: false, affinityTimeoutSeconds: 1 };
      expect(() => p.setRoutes([dup, dup])).toThrow(/duplicate/);
      expect(() => p.cancel('1' as never)).toThrow(TypeError);
    } finally {
      p.close();
    }
    expect(() => p.connections()).toThrow(/closed/);
  });

  it('starts on loopback, refuses and reports a direct connection, closes once, cannot restart', async () => {
    const proxy = new TcpProxy({ threads: 1 });
    const events: ConnectionEvent[] = [];
    proxy.on('connection', (e) => events.push(e));
    const addr = proxy.start('127.0.0.1', 0);
    expect(addr.address).toBe('127.0.0.1');
    expect(addr.port).toBeGreaterThan(0);
    expect(proxy.connections()).toEqual([]);
    const outcome = await new Promise<string>((resolve) => {
      const s = net.connect(addr.port, '127.0.0.1');
      s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      s.on('close', () => resolve('closed'));
    });
    expect(['ECONNRESET', 'closed']).toContain(outcome);
    for (let i = 0; i < 100 && events.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    // Without a NAT table in this namespace conntrack may have no entry (no-original-dst);
    // with one, the original destination is the proxy itself (loop). Never served.
    expect(events).toHaveLength(1);
    expect(events[0]!.reason).toBe('refused');
    expect(['loop', 'no-original-dst']).toContain(events[0]!.refusal);
    const st = proxy.stats();
    expect(st.total).toBe(1);
    expect(st.relayed).toBe(0);
    expect(st.refused.loop + st.refused.noOriginalDst).toBe(1);
    await proxy.close();
    await proxy.close();
    expect(proxy.stats().total).toBe(1);
    expect(() => proxy.start('127.0.0.1', 0)).toThrow(/already started/);
  });

  it('reports a bind failure as a SyscallError with errno name and syscall', () => {
    const a = new TcpProxy({ threads: 1 });
    const { port } = a.start('127.0.0.1', 0);
    try {
      expect(() => new TcpProxy({ threads: 1 }).start('127.0.0.1', port)).toThrow(expect.objectContaining({ code: 'EADDRINUSE', syscall: 'bind' }));
    } finally {
      void a.close(0);
    }
  });
});
