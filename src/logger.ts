// pino for the agent: JSON lines (one object per event) when stdout is not a terminal, a short
// human-readable line when it is. Level from --log-level.
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Logger } from './log.js';

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname']);

/** Formats pino's JSON lines for a terminal: `12:00:01 INFO  message key=value ...`. */
function humanStream(out: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        try {
          const o = JSON.parse(line) as Record<string, unknown>;
          const t = new Date(Number(o.time)).toISOString().slice(11, 19);
          const extra = Object.entries(o)
            .filter(([k]) => !SKIP.has(k))
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join(' ');
          out.write(`${t} ${(LEVELS[Number(o.level)] ?? String(o.level)).padEnd(5)} ${String(o.msg ?? '')}${extra ? `  ${extra}` : ''}\n`);
        } catch {
          out.write(`${line}\n`);
        }
      }
      done();
    },
  });
}

export function createLogger(level: string, opts: { pretty?: boolean } = {}): Logger & { flush?: () => void } {
  const pretty = opts.pretty ?? process.stdout.isTTY === true;
  const options = { level, base: undefined, timestamp: pino.stdTimeFunctions.epochTime };
  return pretty ? pino(options, humanStream(process.stdout)) : pino(options, pino.destination({ dest: 1, sync: true }));
}
