// The tunnel's credentials at start and on rotation, the start-up refusals of the CLI (exit 2,
// one line, nothing changed), and the status rendering. No privileges: files in a temp dir.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initCa, issueNodeCert } from '../../src/tunnel/certs.js';
import { checkTunnelPem, CredentialWatcher, readTunnelPem, type TunnelFiles } from '../../src/tunnel/credentials.js';
import { renderTunnelStatus } from '../../src/tunnel/status.js';
import type { TunnelState } from '../../src/agent.js';
import { ConfigError } from '../../src/errors.js';
import { CLI } from '../helpers/agent.js';
import type { Logger } from '../../src/log.js';

let dir: string;
let other: string;
const files = (node: string, d = dir): TunnelFiles => ({ ca: join(d, 'ca.pem'), cert: join(d, `${node}.pem`), key: join(d, `${node}.key`) });

function recordingLogger(): Logger & { lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = [];
  const at = (level: string) => (_o: unknown, msg: string) => void lines.push({ level, msg });
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'em-tcred-'));
  other = mkdtempSync(join(tmpdir(), 'em-tcred-other-'));
  await initCa(dir);
  await issueNodeCert(dir, 'edge-1');
  await issueNodeCert(dir, 'edge-2');
  await initCa(other, { commonName: 'another CA' });
  await issueNodeCert(other, 'edge-1');
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(other, { recursive: true, force: true });
});

describe('tunnel credentials', () => {
  it('a usable set gives its node name, serial and expiry', () => {
    const f = files('edge-1');
    const info = checkTunnelPem(readTunnelPem(f), f);
    expect(info.node).toBe('edge-1');
    expect(info.serial).toMatch(/^[0-9A-F]+$/);
    expect(Date.parse(info.notAfter)).toBeGreaterThan(Date.now());
  });

  it('a missing file is a ConfigError naming its flag and path', () => {
    const f = { ...files('edge-1'), key: join(dir, 'nope.key') };
    expect(() => readTunnelPem(f)).toThrow(ConfigError);
    expect(() => readTunnelPem(f)).toThrow(/--tunnel-key ".*nope\.key": cannot read it \(ENOENT\)/);
  });

  it('refuses a key of another certificate, and a certificate the CA did not sign, in one line each', () => {
    const mismatch = { ...files('edge-1'), key: join(dir, 'edge-2.key') };
    expect(() => checkTunnelPem(readTunnelPem(mismatch), mismatch)).toThrow(/does not match the certificate/);
    const foreign = { ca: join(dir, 'ca.pem'), cert: join(other, 'edge-1.pem'), key: join(other, 'edge-1.key') };
    let msg = '';
    try {
      checkTunnelPem(readTunnelPem(foreign), foreign);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/does not verify against the CA/);
    expect(msg.split('\n')).toHaveLength(1);
  });

  it('rotation: a changed usable set is installed once; an unusable change is refused, logged once, and the last good set stays', () => {
    const work = mkdtempSync(join(tmpdir(), 'em-trot-'));
    try {
      const f = files('edge-1', work);
      for (const k of ['ca.pem', 'edge-1.pem', 'edge-1.key']) writeFileSync(join(work, k), readFileSync(join(dir, k)));
      const pem = readTunnelPem(f);
      const info = checkTunnelPem(pem, f);
      const applied: string[] = [];
      const log = recordingLogger();
      const w = new CredentialWatcher({ files: f, initial: { pem, info }, log, apply: (p) => {
        const i = checkTunnelPem(p, f);
        applied.push(i.serial);
        return i;
      } });
      expect(w.check()).toBe(false); // unchanged: nothing to do
      // a half-done copy: a new certificate with the old key
      writeFileSync(join(work, 'edge-1.pem'), readFileSync(join(other, 'edge-1.pem')));
      expect(w.check()).toBe(false);
      expect(w.check()).toBe(false);
      expect(w.info.serial).toBe(info.serial);
      expect(log.lines.filter((l) => l.level === 'error')).toHaveLength(1); // said once, not every period
      expect(log.lines[0]?.msg).toMatch(new RegExp(`keeping serial ${info.serial}`));
      // the renewal, complete: a new certificate of the same CA for the same node
      spawnSync(process.execPath, [CLI, 'certs', 'issue', '--dir', dir, '--node', 'edge-1'], { encoding: 'utf8' });
      writeFileSync(join(work, 'edge-1.pem'), readFileSync(join(dir, 'edge-1.pem')));
      writeFileSync(join(work, 'edge-1.key'), readFileSync(join(dir, 'edge-1.key')));
      expect(w.check()).toBe(true);
      expect(w.info.serial).not.toBe(info.serial);
      expect(applied).toEqual([w.info.serial]);
      expect(w.rotations).toBe(1);
      expect(w.failures).toBe(1);
      expect(w.check()).toBe(false);
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  });
});

describe('edgemesh-agent run with tunnel credentials that cannot work', () => {
  const run = (args: string[]) =>
    spawnSync(process.execPath, [CLI, 'run', '--services-dir', dir, '--metrics-addr', 'off', '--healthz-addr', 'off', '--backend', 'nftables', ...args], { encoding: 'utf8', timeout: 20_000 });

  it('a certificate for another node than --node-name: exit 2, one line naming both', () => {
    const f = files('edge-2');
    const r = run(['--node-name', 'edge-1', '--tunnel-ca', f.ca, '--tunnel-cert', f.cert, '--tunnel-key', f.key]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/is for node "edge-2", but this node is "edge-1"/);
  });

  it('an unreadable key file: exit 2, one line naming --tunnel-key', () => {
    const f = files('edge-1');
    const r = run(['--node-name', 'edge-1', '--tunnel-ca', f.ca, '--tunnel-cert', f.cert, '--tunnel-key', join(dir, 'missing.key')]);
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--tunnel-key ".*missing\.key": cannot read it/);
  });
});

describe('status: the tunnel section', () => {
  const zero = { 'no-certificate': 0, 'unknown-ca': 0, expired: 0, 'name-mismatch': 0, 'bad-certificate': 0, protocol: 0, timeout: 0, closed: 0 };
  const zr = { 'bad-request': 0, 'no-service': 0, 'not-local': 0, 'endpoint-failed': 0, 'over-limit': 0, 'not-registered': 0, timeout: 0 };
  const state: TunnelState = {
    node: 'cloud',
    listen: '0.0.0.0:20006',
    tlsMode: 'userspace',
    ktlsReason: 'kernel has no TLS ULP (CONFIG_TLS)',
    certificate: { node: 'cloud', serial: 'ABC123', notAfter: '2027-01-01T00:00:00Z' },
    rotations: 1,
    rotationFailures: 0,
    stats: { dialed: 5, dialOk: 4, dialConnectFailed: 1, inAccepted: 2, inOk: 2, resumed: 3, ktls: 0, pending: 0, pendingLimit: 0, bytesOut: 10, bytesIn: 20, dialHandshakeFailures: zero, inHandshakeFailures: zero, dialRefused: zr, inRefused: zr, relayJoinsOk: 0, relayJoinsRefused: zr, relayUnknownToken: 0, relayRateLimited: 0, relayBytes: 0, registered: 0, pendingJoins: 0, dialJoinOk: 0, dialJoinRefused: zr, dataConns: 0, dataConnsFailed: 0 },
    peers: [
      { node: 'edge', direction: 'out', address: '192.168.50.2:20006', lastResult: 'ok', lastAt: 1_000_000, ok: 4, handshakeFailed: 0, refused: 0, connectFailed: 1, resumed: 3 },
      { node: 'edge-2', direction: 'out', address: '[fd00::2]:20006', lastResult: 'ECONNREFUSED', lastAt: 995_000, ok: 0, handshakeFailed: 0, refused: 0, connectFailed: 2, resumed: 0 },
    ],
    unreachable: [{ service: 'shop/web', ip: '10.244.9.9', port: 8080, node: 'edge-3', reason: 'no-tunnel-address' }],
    relays: {
      configured: ['relay.example:20006'],
      resolved: ['192.168.50.1:20006'],
      sessions: [{ relay: '192.168.50.1:20006', state: 'registered', lastError: '', relayNode: 'cloud', since: 1_000_000, connects: 1, failures: 0, notifies: 7 }],
      registrations: [{ node: 'edge-9', address: '192.168.60.2:40000', since: 1_005_000 }],
    },
  };

  it('lists every peer with its address, last result and age, and the endpoints without a path', () => {
    const text = renderTunnelStatus('cloud', state, 1_010_000);
    expect(text).toContain('listening on 0.0.0.0:20006');
    expect(text).toContain('user space (kTLS: kernel has no TLS ULP (CONFIG_TLS))');
    expect(text).toContain('serial ABC123');
    expect(text).toMatch(/^edge\s+out\s+192\.168\.50\.2:20006\s+ok\s+10s\s+4\/0\/0\/1$/m);
    expect(text).toMatch(/^edge-2\s+out\s+\[fd00::2\]:20006\s+ECONNREFUSED\s+15s\s+0\/0\/0\/2$/m);
    expect(text).toContain('shop/web 10.244.9.9:8080 node edge-3: no-tunnel-address');
    expect(text).toMatch(/^192\.168\.50\.1:20006\s+registered\s+cloud\s+10s\s+7\s+0$/m);
    expect(text).toMatch(/^ {2}edge-9\s+from 192\.168\.60\.2:40000, 5s$/m);
  });

  it('says the tunnel is off when the agent has none', () => {
    expect(renderTunnelStatus('cloud', undefined)).toMatch(/tunnel \(node cloud\): off/);
  });
});
