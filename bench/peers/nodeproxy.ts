// The Node peer: a TCP proxy with net sockets and socket.pipe (read/write copies in libuv).
// Usage: node nodeproxy.js LISTEN_HOST LISTEN_PORT BACKEND_HOST BACKEND_PORT   (prints "ready")
import { createConnection, createServer } from 'node:net';

const [host, port, bhost, bport] = process.argv.slice(2);
if (!host || !port || !bhost || !bport) {
  process.stderr.write('usage: nodeproxy LISTEN_HOST LISTEN_PORT BACKEND_HOST BACKEND_PORT\n');
  process.exit(2);
}
const server = createServer({ noDelay: true }, (client) => {
  const upstream = createConnection({ host: bhost, port: Number(bport), noDelay: true });
  client.pipe(upstream);
  upstream.pipe(client);
  const end = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', end);
  upstream.on('error', end);
  client.on('close', () => upstream.end());
  upstream.on('close', () => client.end());
});
server.listen({ host, port: Number(port), backlog: 4096 }, () => process.stdout.write('ready\n'));
