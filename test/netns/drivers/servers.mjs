// Backends for the proxy tests, started inside a namespace:
//   node servers.mjs '[{"kind":"echo","host":"10.244.2.2","port":8080}, {"kind":"sink",...}]'
// echo: returns every byte. banner: speaks first ("hello\n"), then echoes. sink: reads "SEND <n>\n" then data until EOF (half-close), answers
// "<sha256 of data> <count>\n" followed by n bytes of generator("reply") data, then closes.
// Prints "ready" once every listener is bound.
import net from 'node:net';
import { createHash } from 'node:crypto';
import { generator, CHUNK } from './data.mjs';

const specs = JSON.parse(process.argv[2]);
const reply = generator('reply');

function sink(sock) {
  let header = '';
  let hash = null;
  let count = 0;
  let replyBytes = 0;
  sock.on('data', (d) => {
    if (!hash) {
      header += d.toString('latin1');
      const nl = header.indexOf('\n');
      if (nl < 0) return;
      replyBytes = Number(header.slice(0, nl).split(' ')[1] ?? 0);
      hash = createHash('sha256');
      const rest = Buffer.from(header.slice(nl + 1), 'latin1');
      if (rest.length) { hash.update(rest); count += rest.length; }
      return;
    }
    hash.update(d);
    count += d.length;
  });
  sock.on('end', async () => {
    sock.write(`${hash ? hash.digest('hex') : 'none'} ${count}\n`);
    for (let i = 0, left = replyBytes; left > 0; i++, left -= CHUNK) {
      if (!sock.write(reply(i, Math.min(CHUNK, left)))) await new Promise((r) => sock.once('drain', r));
    }
    sock.end();
  });
  sock.on('error', () => {});
}

let pending = specs.length;
for (const s of specs) {
  const srv = net.createServer({ allowHalfOpen: true }, (sock) => {
    if (s.kind === 'echo' || s.kind === 'banner') {
      sock.on('error', () => {});
      if (s.kind === 'banner') sock.write('hello\n');
      sock.pipe(sock);
    } else sink(sock);
  });
  srv.maxConnections = 100000;
  srv.listen({ host: s.host, port: s.port, backlog: 4096, ipv6Only: s.host.includes(':') }, () => {
    if (--pending === 0) process.stdout.write('ready\n');
  });
  srv.on('error', (e) => {
    process.stderr.write(`listen ${s.host}:${s.port}: ${e.message}\n`);
    process.exit(1);
  });
}
