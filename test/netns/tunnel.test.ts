// Acceptance tests of the agent-to-agent mutual-TLS tunnel, with real `edgemesh-agent run`
// processes on two node namespaces whose pod networks have no route to each other
// (test/helpers/tunnel-topology.ts). Each test says what it proves; every wait is bounded.
import { copyFileSync, mkdirSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, it } from 'vitest';
import { describeNetns, type Netns } from '../helpers/netns.js';
import { CLI, eventually } from '../helpers/agent.js';
import { createTunnelTopology, metricSum, tunnelServiceYaml, TUNNEL_DRIVERS, TUNNEL_PORT, type ServerHandle, type TunnelTopology } from '../helpers/tunnel-topology.js';
import { issueWithOpenssl, makeCa, sClient, serialOf } from '../helpers/openssl.js';
import { capture } from '../helpers/pcap.js';

const GiB = 1 << 30;

/** A conversation: `n` messages `gapMs` apart on one connection, each echoed; prints what came back. */
const TALK = `
const net = require('node:net');
const [host, port, n, gapMs] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
let got = '', sent = 0;
s.setTimeout(15000, () => { process.stdout.write(JSON.stringify({ error: 'idle timeout', echoed: got.split('\\n').filter(Boolean).length })); process.exit(1); });
s.on('connect', () => { const t = setInterval(() => { if (sent === Number(n)) { clearInterval(t); setTimeout(() => s.end(), 300); return; } s.write('m' + (sent++) + '\\n'); }, Number(gapMs)); });
s.on('data', (d) => (got += d));
s.on('close', () => { const lines = got.split('\\n').filter(Boolean); process.stdout.write(JSON.stringify({ echoed: lines.length, inOrder: lines.every((l, i) => l === 'm' + i) })); });
s.on('error', (e) => { process.stdout.write(JSON.stringify({ error: e.code })); process.exit(1); });
`;

async function bulk(from: Netns, o: { host: string; port: number; bytes: number; reply?: number; timeoutMs: number }) {
  const r = await from.run(process.execPath, [join(TUNNEL_DRIVERS, 'client.mjs'), 'bulk', JSON.stringify(o)], { allowFail: true, timeoutMs: o.timeoutMs + 5_000 });
  return JSON.parse(r.stdout.trim() || JSON.stringify({ error: r.stderr })) as { sentHash?: string; serverHash?: string; serverCount?: number; replyBytes?: number; replyOk?: boolean; error?: string };
}

/** An agent that is gone although no test stopped it (a crash). */
function deadAgents(t: TunnelTopology | undefined): string[] {
  const out: string[] = [];
  for (const side of [t?.cloud, t?.edge]) {
    const c = side?.agent?.child;
    if (side && c && (c.exitCode !== null || c.signalCode !== null)) out.push(`${side.name} agent (pid ${c.pid}) died: ${c.signalCode ?? `exit ${c.exitCode}`}`);
  }
  return out;
}

/**
 * After each test: an agent that died on its own fails that test (with its last log lines), and
 * is forgotten so that the next test starts it again; on any failure, both agents' last lines.
 */
function checkAgents(t: TunnelTopology | undefined, failed: boolean): void {
  const dead = deadAgents(t);
  if (dead.length || failed) {
    for (const side of [t?.cloud, t?.edge]) {
      const a = side?.agent;
      if (!side || !a) continue;
      console.log(`--- ${side.name} agent (pid ${a.child.pid}, ${a.child.signalCode ?? (a.child.exitCode === null ? 'running' : `exit ${a.child.exitCode}`)}); last log lines:\n${a.logs.slice(-6).map((l) => String(l.msg)).join('\n')}\nstderr: ${a.stderr.slice(-1500)}`);
    }
  }
  for (const side of [t?.cloud, t?.edge]) {
    const c = side?.agent?.child;
    if (side && c && (c.exitCode !== null || c.signalCode !== null)) side.agent = undefined;
  }
  if (dead.length) throw new Error(`during this test: ${dead.join('; ')}`);
}

describeNetns('agent-to-agent tunnel over an IPv4 underlay', () => {
  let t: TunnelTopology;
  let edgeSrv: ServerHandle;
  let cloudSrv: ServerHandle;
  const BACKUP_MARKER = `CLOUD-BACKUP-MARKER-${Math.random().toString(36).slice(2)}`;

  /** Both agents running (started again after a crash that an earlier test reported). */
  const ensureAgents = async () => {
    if (!t.cloud.agent) await t.startAgent('cloud');
    if (!t.edge.agent) await t.startAgent('edge');
  };
  const edgeConns = () => [...edgeSrv.conns.values()].reduce((a, b) => a + b, 0);

  beforeAll(async () => {
    t = await createTunnelTopology({ label: 'tun' });
    // A second cloud pod address: the cloud-side endpoint of shop/edge-ha (failover).
    await t.cloud.pod.run('ip', ['addr', 'add', '10.244.1.11/24', 'dev', t.cloud.podIf]);
    // shop/edge-ha: the edge endpoint plus one on the cloud pod network.
    t.writeManifest('edge-ha.yaml', tunnelServiceYaml({
      namespace: 'shop', name: 'edge-ha', clusterIP: '10.96.0.21',
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      endpoints: [{ ip: '10.244.2.10', nodeName: 'edge' }, { ip: '10.244.1.11', nodeName: 'cloud' }],
    }));
    // shop/edge-local: internalTrafficPolicy Local, its only endpoint on the edge.
    t.writeManifest('edge-local.yaml', tunnelServiceYaml({
      namespace: 'shop', name: 'edge-local', clusterIP: '10.96.0.40', internalTrafficPolicy: 'Local',
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      endpoints: [{ ip: '10.244.2.10', nodeName: 'edge' }],
    }));
    edgeSrv = await t.startServers('edge', [
      { kind: 'http', host: '10.244.2.10', port: 8080, marker: t.markers.edge },
      { kind: 'sink', host: '10.244.2.10', port: 9000 },
      { kind: 'echo', host: '10.244.2.10', port: 7000 },
    ]);
    cloudSrv = await t.startServers('cloud', [
      { kind: 'http', host: '10.244.1.10', port: 8080, marker: t.markers.cloud },
      { kind: 'http', host: '10.244.1.11', port: 8080, marker: BACKUP_MARKER },
    ]);
  });

  afterEach((ctx) => checkAgents(t, ctx.task.result?.state === 'fail'));

  afterAll(async () => {
    await t?.destroy();
  });

  it('without agents: each pod reaches its node and its own server, but the cloud pod cannot reach the edge pod (nor the reverse)', async () => {
    // (no ping here: a TCP connect answered by a reset proves the route both ways)
    expect(await t.probe(t.cloud.pod, '10.244.1.1', 1)).toBe('refused');
    expect(await t.probe(t.edge.pod, '10.244.2.1', 1)).toBe('refused');
    expect(await t.probe(t.cloud.node, '192.168.50.2', 1)).toBe('refused');
    expect((await t.curl(t.cloud.pod, 'http://10.244.1.10:8080/')).body).toContain(t.markers.cloud);
    expect((await t.curl(t.edge.pod, 'http://10.244.2.10:8080/')).body).toContain(t.markers.edge);
    const before = edgeConns();
    const c2e = await t.curl(t.cloud.pod, 'http://10.244.2.10:8080/', 3);
    const e2c = await t.curl(t.edge.pod, 'http://10.244.1.10:8080/', 3);
    const n2e = await t.curl(t.cloud.node, 'http://10.244.2.10:8080/', 3);
    expect(c2e.ok, c2e.stderr).toBe(false);
    expect(e2c.ok, e2c.stderr).toBe(false);
    expect(n2e.ok, n2e.stderr).toBe(false);
    expect(edgeConns()).toBe(before);
    // and no route between the pod networks on either node
    expect((await t.cloud.node.run('ip', ['route', 'get', '10.244.2.10'], { allowFail: true })).code).not.toBe(0);
    expect((await t.edge.node.run('ip', ['route', 'get', '10.244.1.10'], { allowFail: true })).code).not.toBe(0);
  });

  it('with both agents: cloud pod -> edge Service and edge pod -> cloud Service go through the tunnel, and so does the cloud node itself (OUTPUT)', async () => {
    await ensureAgents();
    const [c0, e0] = [await t.metrics('cloud'), await t.metrics('edge')];
    const before = edgeConns();
    const fromPod = await eventually(() => t.curl(t.cloud.pod, 'http://10.96.0.20/'), (r) => r.ok, 5_000, 'cloud pod -> shop/edge-web');
    expect(fromPod.value.body).toContain(t.markers.edge);
    const back = await t.curl(t.edge.pod, 'http://10.96.0.30/');
    expect(back.ok, back.stderr).toBe(true);
    expect(back.body).toContain(t.markers.cloud);
    const fromNode = await t.curl(t.cloud.node, 'http://10.96.0.20/');
    expect(fromNode.ok, fromNode.stderr).toBe(true);
    expect(fromNode.body).toContain(t.markers.edge);
    expect(edgeConns() - before).toBeGreaterThanOrEqual(2);
    // the pod networks still have no route between them: the tunnel carried it
    expect((await t.curl(t.cloud.pod, 'http://10.244.2.10:8080/', 2)).ok).toBe(false);

    const [c1, e1] = [await t.metrics('cloud'), await t.metrics('edge')];
    const d = (a: Record<string, number>, b: Record<string, number>, name: string, l: Record<string, string>) => metricSum(b, name, l) - metricSum(a, name, l);
    expect(d(c0, c1, 'edgemesh_tunnel_connections_total', { direction: 'out', peer: 'edge', result: 'ok' })).toBeGreaterThanOrEqual(2);
    expect(d(e0, e1, 'edgemesh_tunnel_connections_total', { direction: 'in', peer: 'cloud', result: 'ok' })).toBeGreaterThanOrEqual(2);
    expect(d(e0, e1, 'edgemesh_tunnel_connections_total', { direction: 'out', peer: 'cloud', result: 'ok' })).toBeGreaterThanOrEqual(1);
    expect(d(c0, c1, 'edgemesh_tunnel_connections_total', { direction: 'in', peer: 'edge', result: 'ok' })).toBeGreaterThanOrEqual(1);
    for (const m of [c1, e1]) expect(metricSum(m, 'edgemesh_tunnel_tls_mode')).toBe(1);
  });

  it('status lists the tunnel peers with their address and last handshake result', async () => {
    await ensureAgents();
    expect((await t.curl(t.cloud.pod, 'http://10.96.0.20/')).ok).toBe(true);
    const r = await t.cloud.node.run(process.execPath, [CLI, 'status', '--metrics-addr', `127.0.0.1:${t.cloud.metricsPort}`], { allowFail: true });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^# tunnel \(node cloud\): listening on 0\.0\.0\.0:20006/m);
    expect(r.stdout).toContain(`certificate serial ${await serialOf({ file: t.cloud.certFile })}`);
    // one line per peer and direction: node, direction, address, last result
    expect(r.stdout).toMatch(new RegExp(`^edge\\s+out\\s+${t.edge.tunnelAddress.replace(/\./g, '\\.')}\\s+ok\\s`, 'm'));
    expect(r.stdout).toMatch(/^edge\s+in\s+\S+\s+ok\s/m);
  });

  it('1 GiB from the cloud pod to the edge Service arrives intact through the tunnel (sha256), within 60 s', async () => {
    await ensureAgents();
    const c0 = await t.metrics('cloud');
    const t0 = Date.now();
    const r = await bulk(t.cloud.pod, { host: '10.96.0.20', port: 9000, bytes: GiB, reply: 0, timeoutMs: 60_000 });
    const secs = (Date.now() - t0) / 1000;
    expect(r.error).toBeUndefined();
    expect(r.serverCount).toBe(GiB);
    expect(r.serverHash).toBe(r.sentHash);
    console.log(`tunnel: 1 GiB in ${secs.toFixed(1)} s (${(1024 / secs).toFixed(0)} MiB/s)`);
    const c1 = await t.metrics('cloud');
    // the tunnel carried it (TLS adds a little on top)
    expect(metricSum(c1, 'edgemesh_tunnel_bytes_total', { direction: 'out' }) - metricSum(c0, 'edgemesh_tunnel_bytes_total', { direction: 'out' })).toBeGreaterThanOrEqual(GiB);
  }, 120_000);

  it('half-close through the tunnel: the client shuts its write side and still receives the whole reply', async () => {
    await ensureAgents();
    const r = await bulk(t.cloud.pod, { host: '10.96.0.20', port: 9000, bytes: 300_000, reply: 4 << 20, timeoutMs: 20_000 });
    expect(r.error).toBeUndefined();
    expect(r.serverCount).toBe(300_000);
    expect(r.serverHash).toBe(r.sentHash);
    expect(r.replyBytes).toBe(4 << 20);
    expect(r.replyOk).toBe(true);
  });

  it('no plaintext on the underlay: a capture there never holds the page or request markers, while one on the edge pod link does', async () => {
    await ensureAgents();
    const reqMarker = `REQ-MARKER-${Math.random().toString(36).slice(2)}`;
    const under = await capture(t.cloud.node, t.cloud.underlayIf, join(t.tmp, 'underlay.pcap'));
    const podSide = await capture(t.edge.node, t.edge.nodePodIf, join(t.tmp, 'podside.pcap'));
    let u: Buffer;
    let p: Buffer;
    try {
      for (let i = 0; i < 3; i++) {
        const r = await t.curl(t.cloud.pod, `http://10.96.0.20/?m=${reqMarker}`);
        expect(r.ok, r.stderr).toBe(true);
        expect(r.body).toContain(t.markers.edge);
      }
    } finally {
      await new Promise((r) => setTimeout(r, 200));
      u = await under.stop();
      p = await podSide.stop();
    }
    // the underlay capture did see the tunnel's packets
    const listing = await t.cloud.node.run('tcpdump', ['-nn', '-r', join(t.tmp, 'underlay.pcap')], { allowFail: true });
    expect(listing.stdout.split('\n').filter((l) => l.includes(`.${TUNNEL_PORT}`)).length).toBeGreaterThan(5);
    expect(u.includes(t.markers.edge)).toBe(false);
    expect(u.includes(reqMarker)).toBe(false);
    expect(u.includes('HTTP/1.1')).toBe(false);
    expect(p.includes(t.markers.edge)).toBe(true);
    expect(p.includes(reqMarker)).toBe(true);
  });

  // ---- refusals at the edge agent's tunnel port: real OpenSSL clients from the cloud node ----

  const refusal = async (what: string, o: { cert?: string; key?: string }, reason: string) => {
    await ensureAgents();
    const e0 = await t.metrics('edge');
    const before = edgeConns();
    const r = await sClient(t.cloud.node, { connect: `${t.edge.tunnelIp}:${TUNNEL_PORT}`, ca: t.caFile, servername: 'edge', input: 'GET / HTTP/1.0\r\n\r\n', ...o });
    // it never got a page
    expect(r.stdout).not.toContain(t.markers.edge);
    const e1 = await eventually(() => t.metrics('edge'), (m) => metricSum(m, 'edgemesh_tunnel_handshake_failures_total', { direction: 'in', reason }) > metricSum(e0, 'edgemesh_tunnel_handshake_failures_total', { direction: 'in', reason }), 3_000, `${what}: handshake failure counted with reason ${reason}`);
    const m = e1.value;
    expect(metricSum(m, 'edgemesh_tunnel_handshake_failures_total', { direction: 'in', reason }) - metricSum(e0, 'edgemesh_tunnel_handshake_failures_total', { direction: 'in', reason })).toBe(1);
    // a failed inbound handshake named no one: peer="" (docs/tunnel.md)
    const hsFailed = { direction: 'in', peer: '', result: 'handshake-failed' };
    expect(metricSum(m, 'edgemesh_tunnel_connections_total', hsFailed) - metricSum(e0, 'edgemesh_tunnel_connections_total', hsFailed)).toBe(1);
    expect(metricSum(m, 'edgemesh_tunnel_connections_total', { direction: 'in', result: 'ok' })).toBe(metricSum(e0, 'edgemesh_tunnel_connections_total', { direction: 'in', result: 'ok' }));
    expect(edgeConns()).toBe(before); // no backend saw a connection
    return r;
  };

  it('refused: a client without a certificate (handshake failure "no-certificate", no backend reached)', async () => {
    await refusal('no client certificate', {}, 'no-certificate');
  });

  it('refused: a client certificate named "cloud" from another CA ("unknown-ca")', async () => {
    const dir = join(t.tmp, 'rogue');
    const ca = await makeCa(dir, 'rogue CA');
    const leaf = await issueWithOpenssl({ dir, caCert: ca.cert, caKey: ca.key, name: 'cloud', file: 'cloud' });
    await refusal('another CA', leaf, 'unknown-ca');
  });

  it('refused: an expired client certificate from the cluster CA ("expired")', async () => {
    const dir = join(t.tmp, 'expired');
    mkdirSync(dir, { recursive: true });
    const leaf = await issueWithOpenssl({ dir, caCert: t.caFile, caKey: t.caKeyFile, name: 'cloud', file: 'cloud', startdate: '20200101000000Z', enddate: '20200102000000Z' });
    expect(await serialOf({ file: leaf.cert })).toMatch(/^[0-9A-F]+$/);
    await refusal('expired certificate', leaf, 'expired');
  });

  it('control: the same openssl client with the valid "cloud" certificate completes the handshake with the edge agent', async () => {
    await ensureAgents();
    const r = await sClient(t.cloud.node, { connect: `${t.edge.tunnelIp}:${TUNNEL_PORT}`, ca: t.caFile, servername: 'edge', cert: t.cloud.certFile, key: t.cloud.keyFile, waitForClose: false });
    expect(r.stdout + r.stderr).toMatch(/Verify return code: 0 \(ok\)/);
    expect(await serialOf({ text: r.serverCert })).toBe(await serialOf({ file: t.edge.certFile }));
  });

  // ---- the tunnel request after a valid handshake (docs/tunnel.md), spoken by hand ----

  const request = async (o: Record<string, unknown>) => {
    const r = await t.cloud.node.run(process.execPath, [join(TUNNEL_DRIVERS, 'tunnel-request.mjs'), JSON.stringify({
      connect: `${t.edge.tunnelAddress}`, servername: 'edge', ca: t.caFile, cert: t.cloud.certFile, key: t.cloud.keyFile, timeoutMs: 5_000, ...o,
    })], { timeoutMs: 15_000 });
    return JSON.parse(r.stdout.trim()) as { handshake: boolean; status: number | null; statusBytes: string; reply: string; closed: string; ms: number };
  };
  const allConns = () => edgeConns() + [...cloudSrv.conns.values()].reduce((a, b) => a + b, 0);

  const refusedRequest = async (o: Record<string, unknown>, reason: string, status: number) => {
    await ensureAgents();
    const e0 = await t.metrics('edge');
    const before = allConns();
    const r = await request(o);
    expect(r.handshake).toBe(true);
    expect(r.status, JSON.stringify(r)).toBe(status);
    expect(r.reply).toBe('');
    const { value: e1 } = await eventually(() => t.metrics('edge'), (m) => metricSum(m, 'edgemesh_tunnel_refusals_total', { reason }) > metricSum(e0, 'edgemesh_tunnel_refusals_total', { reason }), 3_000, `refusal ${reason} counted`);
    expect(metricSum(e1, 'edgemesh_tunnel_refusals_total', { reason }) - metricSum(e0, 'edgemesh_tunnel_refusals_total', { reason })).toBe(1);
    expect(metricSum(e1, 'edgemesh_tunnel_connections_total', { direction: 'in', peer: 'cloud', result: 'refused' }) - metricSum(e0, 'edgemesh_tunnel_connections_total', { direction: 'in', peer: 'cloud', result: 'refused' })).toBe(1);
    expect(allConns()).toBe(before); // no backend saw a connection
    return r;
  };

  it('control: a valid peer naming a local endpoint of the edge agent gets status ok and the page (the hand-made request is right)', async () => {
    await ensureAgents();
    const r = await request({ service: 'shop/edge-web', servicePort: 80, endpoint: '10.244.2.10', endpointPort: 8080, send: 'GET / HTTP/1.0\r\n\r\n' });
    expect(r.status, JSON.stringify(r)).toBe(0);
    expect(r.reply).toContain(t.markers.edge);
  });

  it('refused after a valid handshake: an endpoint of the Service that is not local to the accepting node ("not-local")', async () => {
    // 10.244.1.11:8080 is a real endpoint of shop/edge-ha, but on the cloud node
    await refusedRequest({ service: 'shop/edge-ha', servicePort: 80, endpoint: '10.244.1.11', endpointPort: 8080 }, 'not-local', 3);
  });

  it('refused after a valid handshake: a Service that does not exist ("no-service")', async () => {
    await refusedRequest({ service: 'shop/nope', servicePort: 80, endpoint: '10.244.2.10', endpointPort: 8080 }, 'no-service', 2);
  });

  it('refused after a valid handshake: bytes that are not a tunnel request ("bad-request"), at once (not at the request timeout)', async () => {
    const r = await refusedRequest({ raw: Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n').toString('hex') }, 'bad-request', 1);
    expect(r.ms).toBeLessThan(2_000);
  });

  it('SIGKILL of the edge agent: shop/edge-ha fails over to its cloud endpoint while the edge agent is down, and shop/edge-web is back < 10 s after the restart', async () => {
    await ensureAgents();
    // both endpoints serve while all is up
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) {
      const r = await t.curl(t.cloud.pod, 'http://10.96.0.21/');
      expect(r.ok, r.stderr).toBe(true);
      seen.add(r.body.includes(t.markers.edge) ? 'edge' : r.body.includes(BACKUP_MARKER) ? 'backup' : 'other');
    }
    expect([...seen].sort()).toEqual(['backup', 'edge']);

    // a live conversation through the edge agent when it is killed: its TLS stream is cut without
    // close_notify, which must reach the client as a reset, never as a clean end
    const talk = t.cloud.pod.run(process.execPath, ['-e', TALK, '10.96.0.20', '7000', '100', '100'], { timeoutMs: 30_000, allowFail: true });
    const echoBefore = edgeSrv.count('10.244.2.10:7000');
    await eventually(async () => edgeSrv.count('10.244.2.10:7000'), (n) => n > echoBefore, 5_000, 'the conversation reached the edge echo server');
    await new Promise((r) => setTimeout(r, 300));
    const c0 = await t.metrics('cloud');
    await t.stopAgent('edge', 'SIGKILL');
    const cut = JSON.parse((await talk).stdout || '{}') as { error?: string; echoed?: number };
    expect(['ECONNRESET', 'EPIPE'], JSON.stringify(cut)).toContain(cut.error); // a reset (EPIPE: it came while writing)

    expect((await t.curl(t.cloud.pod, 'http://10.96.0.20/', 3)).ok).toBe(false); // the edge really is unreachable
    for (let i = 0; i < 10; i++) {
      const r = await t.curl(t.cloud.pod, 'http://10.96.0.21/', 4);
      expect(r.ok, `edge-ha #${i} with the edge agent down: ${r.stderr}`).toBe(true);
      expect(r.body).toContain(BACKUP_MARKER);
    }
    // and the cloud agent counted its failed dials to the edge
    const c1 = await t.metrics('cloud');
    const cf = { direction: 'out', peer: 'edge', result: 'connect-failed' };
    expect(metricSum(c1, 'edgemesh_tunnel_connections_total', cf) - metricSum(c0, 'edgemesh_tunnel_connections_total', cf)).toBeGreaterThanOrEqual(1);

    const t0 = Date.now();
    await t.startAgent('edge');
    const back = await eventually(() => t.curl(t.cloud.pod, 'http://10.96.0.20/', 2), (r) => r.ok, 10_000, 'shop/edge-web back after the edge agent restart');
    const ms = Date.now() - t0;
    console.log(`tunnel: shop/edge-web back ${ms} ms after restarting the edge agent`);
    expect(back.value.body).toContain(t.markers.edge);
    expect(ms).toBeLessThan(10_000);
    expect((await t.curl(t.edge.pod, 'http://10.96.0.30/')).body).toContain(t.markers.cloud);
  }, 60_000);

  it('certificate rotation: new handshakes present the new serial within seconds, without a restart, and a live tunnelled connection is untouched', async () => {
    await ensureAgents();
    const agentPid = t.edge.agent!.child.pid;
    const ssl = () => sClient(t.cloud.node, { connect: `${t.edge.tunnelIp}:${TUNNEL_PORT}`, ca: t.caFile, servername: 'edge', cert: t.cloud.certFile, key: t.cloud.keyFile, waitForClose: false });
    const oldSerial = await serialOf({ file: t.edge.certFile });
    const first = await ssl();
    expect(await serialOf({ text: first.serverCert })).toBe(oldSerial);

    // a long-lived connection through the tunnel: 70 messages 100 ms apart
    const echoBefore = edgeSrv.count('10.244.2.10:7000');
    const talk = t.cloud.pod.run(process.execPath, ['-e', TALK, '10.96.0.20', '7000', '70', '100'], { timeoutMs: 30_000, allowFail: true });
    await eventually(async () => edgeSrv.count('10.244.2.10:7000'), (n) => n > echoBefore, 5_000, 'the long-lived connection reached the edge echo server');

    // a new certificate for edge (new serial), issued aside and moved over the live files
    const staging = join(t.tmp, 'rotate');
    mkdirSync(staging, { recursive: true });
    copyFileSync(t.caFile, join(staging, 'ca.pem'));
    copyFileSync(t.caKeyFile, join(staging, 'ca.key'));
    await t.cli(['certs', 'issue', '--dir', staging, '--node', 'edge']);
    const newSerial = await serialOf({ file: join(staging, 'edge.pem') });
    expect(newSerial).not.toBe(oldSerial);
    const t0 = Date.now();
    renameSync(join(staging, 'edge.key'), t.edge.keyFile);
    renameSync(join(staging, 'edge.pem'), t.edge.certFile);

    const seen = await eventually(async () => serialOf({ text: (await ssl()).serverCert }).catch(() => ''), (s) => s === newSerial, 10_000, 'new serial presented');
    console.log(`tunnel: new certificate served ${Date.now() - t0} ms after the files were replaced`);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(t.edge.agent!.child.pid).toBe(agentPid);
    expect(t.edge.agent!.child.exitCode).toBeNull();
    expect(seen.value).toBe(newSerial);
    expect(metricSum(await t.metrics('edge'), 'edgemesh_tunnel_certificate_rotations_total', { result: 'ok' })).toBeGreaterThanOrEqual(1);

    const r = JSON.parse((await talk).stdout || '{}') as { echoed?: number; inOrder?: boolean; error?: string };
    expect(r).toEqual({ echoed: 70, inOrder: true });
    expect(edgeSrv.count('10.244.2.10:7000')).toBe(echoBefore + 1); // one connection, never re-established
    // and the cloud agent's new handshakes accept the new certificate
    expect((await t.curl(t.cloud.pod, 'http://10.96.0.20/')).body).toContain(t.markers.edge);
  }, 60_000);

  it('internalTrafficPolicy Local, only endpoint on the edge: from the cloud pod no endpoint (refused/reset at once), from the edge pod it works', async () => {
    await ensureAgents();
    const before = edgeConns();
    const fromCloud = await t.curl(t.cloud.pod, 'http://10.96.0.40/', 4);
    expect(fromCloud.ok).toBe(false);
    expect([7, 52, 56], `curl exit ${fromCloud.code}: ${fromCloud.stderr}`).toContain(fromCloud.code);
    expect(fromCloud.ms).toBeLessThan(3_000);
    expect(edgeConns()).toBe(before);
    const fromEdge = await t.curl(t.edge.pod, 'http://10.96.0.40/');
    expect(fromEdge.ok, fromEdge.stderr).toBe(true);
    expect(fromEdge.body).toContain(t.markers.edge);
    expect(edgeConns()).toBe(before + 1);
  });

  it('--direct-cidr: an endpoint inside it is dialled directly, never through the tunnel (unreachable without a route, served with one)', async () => {
    await ensureAgents();
    await t.stopAgent('cloud', 'SIGTERM');
    await t.startAgent('cloud', ['--direct-cidr', '10.244.2.0/24']);
    try {
      const tunnelled = async () => metricSum(await t.metrics('cloud'), 'edgemesh_tunnel_connections_total', { direction: 'out' }) + metricSum(await t.metrics('edge'), 'edgemesh_tunnel_connections_total', { direction: 'in' });
      const n0 = await tunnelled();
      const noRoute = await t.curl(t.cloud.pod, 'http://10.96.0.20/', 3);
      expect(noRoute.ok).toBe(false); // the cloud node has no route to the edge pod network
      // give the cloud node a route to the edge pods over the underlay (inside our namespaces)
      await t.cloud.node.run('ip', ['route', 'add', '10.244.2.0/24', 'via', t.edge.underlayIp4]);
      try {
        const direct = await t.curl(t.cloud.pod, 'http://10.96.0.20/');
        expect(direct.ok, direct.stderr).toBe(true);
        expect(direct.body).toContain(t.markers.edge);
      } finally {
        await t.cloud.node.run('ip', ['route', 'del', '10.244.2.0/24']);
      }
      expect(await tunnelled()).toBe(n0);
    } finally {
      await t.stopAgent('cloud', 'SIGTERM');
      await t.startAgent('cloud', []);
    }
    expect((await t.curl(t.cloud.pod, 'http://10.96.0.20/')).body).toContain(t.markers.edge); // through the tunnel again
  });

  it('sanity of the backend counters used above: both cloud servers did see the connections meant for them', () => {
    expect(cloudSrv.count('10.244.1.10:8080')).toBeGreaterThan(0);
    expect(cloudSrv.count('10.244.1.11:8080')).toBeGreaterThan(0);
  });
});

describeNetns('agent-to-agent tunnel over an IPv6 underlay', () => {
  let t: TunnelTopology;

  beforeAll(async () => {
    t = await createTunnelTopology({ underlay: 'ipv6', label: 'tun6' });
    await t.startServers('edge', [{ kind: 'http', host: '10.244.2.10', port: 8080, marker: t.markers.edge }]);
    await t.startServers('cloud', [{ kind: 'http', host: '10.244.1.10', port: 8080, marker: t.markers.cloud }]);
  });

  afterEach((ctx) => checkAgents(t, ctx.task.result?.state === 'fail'));

  afterAll(async () => {
    await t?.destroy();
  });

  it('Nodes announce [fd00:50::x]:20006: the agents listen there and pods reach each other\'s Services through the IPv6 tunnel', async () => {
    expect(t.edge.tunnelAddress).toBe('[fd00:50::2]:20006');
    await t.startAgent('cloud');
    await t.startAgent('edge');
    const ss = await t.edge.node.run('ss', ['-Hltn', `sport = :${TUNNEL_PORT}`]);
    expect(ss.stdout).toContain('[fd00:50::2]:20006');
    const c2e = await eventually(() => t.curl(t.cloud.pod, 'http://10.96.0.20/'), (r) => r.ok, 5_000, 'cloud pod -> edge-web over IPv6');
    expect(c2e.value.body).toContain(t.markers.edge);
    const e2c = await t.curl(t.edge.pod, 'http://10.96.0.30/');
    expect(e2c.ok, e2c.stderr).toBe(true);
    expect(e2c.body).toContain(t.markers.cloud);
    const m = await t.metrics('cloud');
    expect(metricSum(m, 'edgemesh_tunnel_connections_total', { direction: 'out', peer: 'edge', result: 'ok' })).toBeGreaterThanOrEqual(1);
  });
});
