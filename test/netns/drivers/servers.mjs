// Backends for the proxy tests, started inside a namespace:
//   node servers.mjs '[{"kind":"echo","host":"10.244.2.2","port":8080}, {"kind":"sink",...}]'
// echo: returns every byte. banner: speaks first ("hello\n"), then echoes. sink: reads "SEND <n>\n" then data until EOF (half-close), answers
// "<sha256 of data> <count>\n" followed by n bytes of generator("reply") data, then closes.
// Prints "ready" once every listener is bound.
import net from 'node:net';
import { sink } from './data.mjs';

const specs = JSON.parse(process.argv[2]);
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
