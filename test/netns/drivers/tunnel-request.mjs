// A hand-made tunnel client, run inside a node namespace: mutual TLS 1.3 to an agent's tunnel
// port, then one tunnel request (docs/tunnel.md), then the agent's answer. Prints one JSON line.
//   node tunnel-request.mjs '{"connect":"192.168.50.2:20006","servername":"edge","ca","cert","key",
//                             "service":"shop/edge-web","servicePort":80,"endpoint":"10.244.2.10","endpointPort":8080,
//                             "raw":"<hex: send these bytes instead of a request>","send":"<text sent after an ok answer>"}'
//   -> {"handshake":true,"status":<0..5>|null,"statusBytes":"<hex>","reply":"<text received after the answer>","closed":"end|error CODE|timeout","ms":<until closed>}
//
//   request  = "EMT1" type(1)=1 len(1) service(len: "namespace/name") servicePort(2)
//              family(1)=4|6 endpointIp(4|16) endpointPort(2)          integers big-endian
//   response = "EMT1" status(1)     0 ok, 1 bad-request, 2 no-service, 3 not-local, 4 endpoint-failed, 5 over-limit
import tls from 'node:tls';
import net from 'node:net';
import { readFileSync } from 'node:fs';

const o = JSON.parse(process.argv[2]);
const t0 = Date.now();
const out = { handshake: false, status: null, statusBytes: '', reply: '', closed: '', ms: 0 };
const finish = (closed) => {
  if (out.closed) return;
  out.closed = closed;
  out.ms = Date.now() - t0;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
};
setTimeout(() => finish('timeout'), o.timeoutMs ?? 5000);

export function encodeRequest(service, servicePort, ip, port) {
  const name = Buffer.from(service);
  const fam = net.isIPv6(ip) ? 6 : 4;
  const addr = fam === 4 ? Buffer.from(ip.split('.').map(Number)) : ipv6Bytes(ip);
  const b = Buffer.alloc(4 + 1 + 1 + name.length + 2 + 1 + addr.length + 2);
  let i = b.write('EMT1', 0, 'latin1');
  b[i++] = 1;
  b[i++] = name.length;
  i += name.copy(b, i);
  i = b.writeUInt16BE(servicePort, i);
  b[i++] = fam;
  i += addr.copy(b, i);
  b.writeUInt16BE(port, i);
  return b;
}

function ipv6Bytes(ip) {
  const [head, tail] = ip.split('::');
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail ? tail.split(':') : [];
  const groups = [...h, ...Array(8 - h.length - t.length).fill('0'), ...t];
  const b = Buffer.alloc(16);
  groups.forEach((g, k) => b.writeUInt16BE(parseInt(g, 16), k * 2));
  return b;
}

const [host, port] = o.connect.startsWith('[') ? [o.connect.slice(1, o.connect.indexOf(']')), o.connect.slice(o.connect.indexOf(']') + 2)] : o.connect.split(':');
const sock = tls.connect({
  host,
  port: Number(port),
  servername: o.servername,
  ca: readFileSync(o.ca),
  cert: o.cert ? readFileSync(o.cert) : undefined,
  key: o.key ? readFileSync(o.key) : undefined,
  minVersion: 'TLSv1.3',
  maxVersion: 'TLSv1.3',
});
let answer = Buffer.alloc(0);
sock.on('secureConnect', () => {
  out.handshake = true;
  sock.write(o.raw !== undefined ? Buffer.from(o.raw, 'hex') : encodeRequest(o.service, o.servicePort, o.endpoint, o.endpointPort));
});
sock.on('data', (d) => {
  if (out.status === null) {
    answer = Buffer.concat([answer, d]);
    if (answer.length < 5) return;
    out.statusBytes = answer.subarray(0, 5).toString('hex');
    out.status = answer.subarray(0, 4).toString('latin1') === 'EMT1' ? answer[4] : -1;
    d = answer.subarray(5);
    if (out.status === 0 && o.send) sock.write(o.send);
  }
  out.reply += d.toString('latin1');
});
sock.on('end', () => finish('end'));
sock.on('error', (e) => finish(`error ${e.code ?? e.message}`));
