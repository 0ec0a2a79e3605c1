// `edgemesh-agent status`: the tunnel section, from the running agent's GET /status. Pure text
// rendering (tested without an agent).
import type { TunnelState } from '../agent.js';

const pad = (s: string, n: number): string => (s.length >= n ? `${s} ` : s.padEnd(n));

export function renderTunnelStatus(node: string, t: TunnelState | undefined, now = Date.now()): string {
  if (!t) return `# tunnel (node ${node || '?'}): off (no --tunnel-ca/--tunnel-cert/--tunnel-key)\n`;
  const s = t.stats;
  const lines: string[] = [];
  lines.push(
    `# tunnel (node ${t.node}): ${t.listen ? `listening on ${t.listen}` : 'dialling only'}; TLS 1.3 in ${t.tlsMode === 'ktls' ? 'the kernel (kTLS)' : `user space (kTLS: ${t.ktlsReason})`}`,
    `# certificate serial ${t.certificate.serial}, not after ${t.certificate.notAfter}; rotations ${t.rotations} (refused ${t.rotationFailures})`,
    `# dialled ${s.dialed} (ok ${s.dialOk}, resumed sessions ${s.resumed}), accepted ${s.inAccepted} (served ${s.inOk}), bytes out ${s.bytesOut} in ${s.bytesIn}`,
  );
  lines.push(`${pad('PEER', 20)}${pad('DIR', 5)}${pad('ADDRESS', 26)}${pad('LAST RESULT', 24)}${pad('AGO', 8)}OK/HS-FAIL/REFUSED/CONN-FAIL`);
  if (t.peers.length === 0) lines.push('(no peer seen yet)');
  for (const p of t.peers) {
    const ago = `${Math.max(0, Math.round((now - p.lastAt) / 1000))}s`;
    lines.push(`${pad(p.node, 20)}${pad(p.direction, 5)}${pad(p.address, 26)}${pad(p.lastResult, 24)}${pad(ago, 8)}${p.ok}/${p.handshakeFailed}/${p.refused}/${p.connectFailed}`);
  }
  const r = t.relays;
  if (r.configured.length > 0 || r.registrations.length > 0) {
    lines.push(`# relays: ${r.configured.join(', ') || '(none configured)'}${r.resolved.length ? ` -> ${r.resolved.join(', ')}` : ''}; joins here ok ${s.relayJoinsOk}, bytes spliced ${s.relayBytes}; joins asked ok ${s.dialJoinOk}`);
    if (r.sessions.length > 0) {
      lines.push(`${pad('RELAY SESSION', 26)}${pad('STATE', 16)}${pad('RELAY NODE', 20)}${pad('SINCE', 8)}${pad('NOTIFIES', 10)}FAILURES (LAST ERROR)`);
      for (const x of r.sessions) {
        const since = `${Math.max(0, Math.round((now - x.since) / 1000))}s`;
        lines.push(`${pad(x.relay, 26)}${pad(x.state, 16)}${pad(x.relayNode || '-', 20)}${pad(since, 8)}${pad(String(x.notifies), 10)}${x.failures}${x.lastError ? ` (${x.lastError})` : ''}`);
      }
    }
    if (r.registrations.length > 0) {
      lines.push(`# ${r.registrations.length} nodes registered with this agent as their relay:`);
      for (const x of r.registrations) lines.push(`  ${pad(x.node, 24)}from ${x.address}, ${Math.max(0, Math.round((now - x.since) / 1000))}s`);
    }
  }
  if (t.unreachable.length > 0) {
    lines.push(`# ${t.unreachable.length} endpoints have no path from this node:`);
    for (const u of t.unreachable.slice(0, 50)) lines.push(`  ${u.service} ${u.ip.includes(':') ? `[${u.ip}]` : u.ip}:${u.port} node ${u.node ?? '(none)'}: ${u.reason}`);
    if (t.unreachable.length > 50) lines.push(`  ... and ${t.unreachable.length - 50} more`);
  }
  return lines.join('\n') + '\n';
}
