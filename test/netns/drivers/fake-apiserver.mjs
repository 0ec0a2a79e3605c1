// The in-test API server (test/helpers/fake-apiserver.ts, as built into dist/) run inside a
// namespace, e.g. as the MetaServer of an edge node on 127.0.0.1:10550:
//   node fake-apiserver.mjs '{"host":"127.0.0.1","port":10550,"disabled":["endpointslices"],"objects":{"services":[...],"endpoints":[...]}}'
// (or '@FILE': the same JSON in a file, for large object sets). Prints "ready <url>" once listening. Each stdin line is a JSON command:
//   {"op":"set","resource":"endpoints","object":{...}}   {"op":"expire","resource":"endpoints"}
//   {"op":"drop"}   {"op":"requests"} (prints one JSON line: the request log)
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { FakeApiServer } = await import(join(here, '..', '..', '..', 'dist', 'test', 'helpers', 'fake-apiserver.js'));
const arg = process.argv[2];
const spec = JSON.parse(arg.startsWith('@') ? readFileSync(arg.slice(1), 'utf8') : arg);
const api = new FakeApiServer();
for (const r of spec.disabled ?? []) api.disabled.add(r);
for (const [resource, list] of Object.entries(spec.objects ?? {})) for (const o of list) api.set(resource, o);
const url = await api.start(spec.port ?? 0, spec.host ?? '127.0.0.1');
process.stdout.write(`ready ${url}\n`);
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const c = JSON.parse(line);
  if (c.op === 'set') api.set(c.resource, c.object);
  else if (c.op === 'expire') api.expireWatches(c.resource);
  else if (c.op === 'drop') api.dropConnections();
  else if (c.op === 'requests') process.stdout.write(JSON.stringify(api.requests) + '\n');
}
await api.close();
