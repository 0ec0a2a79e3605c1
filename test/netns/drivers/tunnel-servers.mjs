// Backends for the tunnel tests, started inside a pod namespace:
//   node tunnel-servers.mjs '[{"kind":"http","host":"10.244.2.10","port":8080,"marker":"..."}, ...]'
// http: any request gets "200 OK" and a page containing `marker` (and never echoes the request).
// sink: reads "SEND <n>\n", then data until EOF (the client's half-close), answers
//       "<sha256 of data> <count>\n" and n bytes of generator("reply") data, then closes
//       (the protocol of drivers/client.mjs bulk).
// echo: returns every byte (a long-lived conversation).
// Prints "ready" once every listener is bound, then one line "conn <host>:<port>" per accepted
// connection, so the test counts what reached a backend.
import net from 'node:net';
import http from 'node:http';
import { sink } from './data.mjs';

const specs = JSON.parse(process.argv[2]);
let pending = specs.length;
const ready = () => {
  if (--pending === 0) process.stdout.write('ready\n');
};
for (const s of specs) {
  const where = `${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.port}`;
  const count = (sock) => {
    sock.on('error', () => {});
    process.stdout.write(`conn ${where}\n`);
  };
  let srv;
  if (s.kind === 'http') {
    const page = `<html><body><h1>${s.marker}</h1><p>served by ${where}</p></body></html>\n`;
    srv = http.createServer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/html', 'content-length': Buffer.byteLength(page) });
      res.end(page);
    });
    srv.keepAliveTimeout = 1000;
    srv.on('connection', count);
  } else {
    srv = net.createServer({ allowHalfOpen: true }, (sock) => {
      count(sock);
      if (s.kind === 'echo') sock.pipe(sock);
      else sink(sock);
    });
  }
  srv.listen({ host: s.host, port: s.port, backlog: 1024, ipv6Only: s.host.includes(':') }, ready);
  srv.on('error', (e) => {
    process.stderr.write(`listen ${where}: ${e.message}\n`);
    process.exit(1);
  });
}
