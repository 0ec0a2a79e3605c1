// The logger the agent passes around: pino's calling convention (object first, message second),
// and the agent's own pino set-up. Library users may pass any compatible logger.
import { Writable } from 'node:stream';
import pino from 'pino';

export interface Logger {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  child?(bindings: object): Logger;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

export const LOG_FORMATS = ['json', 'pino', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface CreateLoggerOptions {
  /**
   * json: one object per line with a string level ("info"), an ISO-8601 time and `node` (what
   * log collectors of a cluster parse without a mapping); pino: pino's own defaults (numeric
   * level, epoch milliseconds, pid, hostname); text: a short line for a terminal. Default: text
   * when stdout is a terminal, else json.
   */
  format?: LogFormat;
  /** This node's name, on every json line. */
  node?: string;
  /** Before --log-format: true is `text`, false `json` (format wins). */
  pretty?: boolean;
}

const NUMERIC_LEVELS: Record<number, string> = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' };
const SKIP = new Set(['level', 'time', 'msg', 'pid', 'hostname', 'node']);

/** Formats the json lines for a terminal: `12:00:01 INFO  message key=value ...`. */
function humanStream(out: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) {
        if (!line) continue;
        try {
          const o = JSON.parse(line) as Record<string, unknown>;
          const t = new Date(typeof o.time === 'string' ? o.time : Number(o.time)).toISOString().slice(11, 19);
          const level = typeof o.level === 'number' ? (NUMERIC_LEVELS[o.level] ?? String(o.level)) : String(o.level);
          const extra = Object.entries(o)
            .filter(([k]) => !SKIP.has(k))
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join(' ');
          // eslint-disable-next-line @typescript-eslint/no-base-to-string -- pino writes msg as a string; String() only guards a line someone else wrote
          out.write(`${t} ${level.toUpperCase().padEnd(5)} ${String(o.msg ?? '')}${extra ? `  ${extra}` : ''}\n`);
        } catch {
          out.write(`${line}\n`);
        }
      }
      done();
    },
  });
}

/** pino for the agent, level from --log-level, format from --log-format. */
export function createLogger(level: string, opts: CreateLoggerOptions = {}): Logger & { flush?: () => void } {
  const format = opts.format ?? (opts.pretty === undefined ? (process.stdout.isTTY === true ? 'text' : 'json') : opts.pretty ? 'text' : 'json');
  if (format === 'pino') return pino({ level }, pino.destination({ dest: 1, sync: true }));
  const options: pino.LoggerOptions = {
    level,
    base: opts.node !== undefined ? { node: opts.node } : undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label) => ({ level: label }) },
  };
  return format === 'text' ? pino(options, humanStream(process.stdout)) : pino(options, pino.destination({ dest: 1, sync: true }));
}
