// Runs inside a namespace: node iface.mjs ensure|remove '{"name","addresses"}'; prints JSON.
import { ensureProxyInterface, removeProxyInterface } from '../../../dist/src/proxy/iface.js';

const [op, json] = process.argv.slice(2);
const o = JSON.parse(json ?? '{}');
const f = op === 'ensure' ? () => ensureProxyInterface(o) : () => removeProxyInterface(o);
f().then(
  (r) => process.stdout.write(JSON.stringify({ ok: r }) + '\n'),
  (e) => { process.stdout.write(JSON.stringify({ error: e.message, code: e.code }) + '\n'); process.exitCode = 1; },
);
