// Runs one parser input at a time for fuzz-inputs.test.ts, in a worker thread so that the test
// can terminate a hang. Uses the compiled modules (dist/), like the agent tests.
import { parentPort } from 'node:worker_threads';
import { fileURLToPath } from 'node:url';
import { dirname, resolve } from 'node:path';

const dist = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'src');
const { parseManifests } = await import(`${dist}/cluster/manifests.js`);
const { loadConfig } = await import(`${dist}/config.js`);
const { ConfigError } = await import(`${dist}/errors.js`);

parentPort.on('message', ({ id, kind, name, bytes }) => {
  // Files are read as the agent reads them: bytes decoded as UTF-8 (invalid sequences become U+FFFD).
  const text = Buffer.from(bytes).toString('utf8');
  const t0 = performance.now();
  let result;
  try {
    if (kind === 'manifest') {
      const r = parseManifests(text, name);
      result = { ok: true, objects: r.services.length + r.endpointSlices.length + r.endpoints.length };
    } else {
      loadConfig({ command: 'run', file: name, env: {}, readFile: () => text });
      result = { ok: true, objects: 1 };
    }
  } catch (e) {
    result = {
      ok: false,
      configError: e instanceof ConfigError,
      name: e?.name ?? typeof e,
      message: String(e?.message ?? e).slice(0, 4000),
      messageLength: String(e?.message ?? e).length,
      // A --config file reports each of its mistakes on a line of its own.
      lines: Array.isArray(e?.lines) ? e.lines.map((l) => String(l).slice(0, 4000)) : undefined,
      lineLengths: Array.isArray(e?.lines) ? e.lines.map((l) => String(l).length) : undefined,
    };
  }
  parentPort.postMessage({ id, ms: performance.now() - t0, ...result });
});
parentPort.postMessage({ ready: true });
