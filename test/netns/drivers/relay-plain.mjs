// A hand-made client of a relay's plaintext headers (native/relay/tunnel_proto.h), run inside a node
// namespace: connects, sends the given bytes, and reports what came back and how the connection
// ended. Prints one JSON line.
//   node relay-plain.mjs '{"connect":"192.168.50.1:20006","join":"edge-1"}'            join = "EMJ1" len(1) node
//   node relay-plain.mjs '{"connect":"...","data":"<32 hex digits: a token>"}'          data = "EMD1" token(16)
//   node relay-plain.mjs '{"connect":"...","raw":"<hex>"}'                              any bytes
//   -> {"connected":true,"recv":"<hex of everything received>","closed":"end|error CODE|timeout","ms":N}
// `waitMs` (default 3000): how long to wait for the relay to close before giving up ("timeout").
import net from 'node:net';

const o = JSON.parse(process.argv[2]);
const t0 = Date.now();
const out = { connected: false, recv: '', closed: '', ms: 0 };
const finish = (closed) => {
  if (out.closed) return;
  out.closed = closed;
  out.ms = Date.now() - t0;
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
};
let bytes;
if (o.join !== undefined) {
  const name = Buffer.from(o.join);
  bytes = Buffer.concat([Buffer.from('EMJ1'), Buffer.from([name.length]), name]);
} else if (o.data !== undefined) {
  bytes = Buffer.concat([Buffer.from('EMD1'), Buffer.from(o.data, 'hex')]);
} else bytes = Buffer.from(o.raw ?? '', 'hex');

const i = o.connect.lastIndexOf(':');
const sock = net.connect({ host: o.connect.slice(0, i), port: Number(o.connect.slice(i + 1)) });
setTimeout(() => { sock.destroy(); finish('timeout'); }, o.waitMs ?? 3000);
sock.on('connect', () => {
  out.connected = true;
  sock.write(bytes);
});
sock.on('data', (d) => (out.recv += d.toString('hex')));
sock.on('end', () => finish('end'));
sock.on('error', (e) => finish(`error ${e.code ?? e.message}`));
