// Runs inside a namespace: listens, connects to `dial` (which the test DNATs to the listener,
// or not), and reports what originalDst() says about the accepted socket's fd.
//   node origdst.mjs '{"listen":{"host","port"},"dial":{"host","port"}}'
import net from 'node:net';
import { openSync } from 'node:fs';
import { originalDst } from '../../../dist/src/proxy/sockopt.js';

const o = JSON.parse(process.argv[2]);
const report = (r) => { process.stdout.write(JSON.stringify(r) + '\n'); process.exit(0); };
const srv = net.createServer((sock) => {
  const fd = sock._handle.fd;
  let r;
  try {
    r = { ok: originalDst(fd), local: { address: sock.localAddress, port: sock.localPort } };
  } catch (e) {
    r = { error: { name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, message: e.message } };
  }
  // And the error cases: a closed fd number, a non-socket, a unix socket (fd 0 under spawn).
  const errs = {};
  for (const [k, v] of [['badfd', 987654], ['notsock', openSync('/dev/null', 'r')], ['unix', 0], ['typeerror', 'x']]) {
    try { originalDst(v); errs[k] = 'no error'; } catch (e) { errs[k] = { name: e.name, code: e.code, syscall: e.syscall }; }
  }
  report({ ...r, errs });
});
srv.listen({ host: o.listen.host, port: o.listen.port, ipv6Only: o.listen.host.includes(':') }, () => {
  const c = net.connect({ host: o.dial.host, port: o.dial.port });
  c.on('error', (e) => report({ dialError: e.code }));
});
setTimeout(() => report({ error: 'timeout' }), 10000);
