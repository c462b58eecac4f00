/**
 * The process logger: pino JSON lines on stdout, or a compact human-readable line per record when
 * `log.format: pretty` (for a terminal). Credentials never reach it: nothing logs headers or URLs
 * with userinfo.
 */
import { Writable } from 'node:stream';
import pino from 'pino';
import type { Config } from './config.js';

export function createLogger(config: Pick<Config, 'log'>, out: NodeJS.WritableStream = process.stdout): pino.Logger {
  const opts: pino.LoggerOptions = {
    level: config.log.level,
    base: undefined,
    timestamp: pino.stdTimeFunctions.isoTime,
    // Not pino's `redact`: under 500 clients it made a quarter of all the bytes the process allocated
    // (it parses its paths and copies the record on every line). This looks at the keys and copies only
    // a record that holds a secret. (It sees each record's own fields: the mirror makes no child
    // loggers, whose bindings pino writes without it.)
    formatters: { log: hideSecrets },
  };
  if (config.log.format === 'json') return pino(opts, out);
  return pino(opts, prettyStream(out));
}

const SECRETS = new Set(['authorization', 'password', 'token']);
const CENSOR = '[redacted]';

/**
 * A log record with any `authorization`, `password` or `token` (any case), at the top or one level
 * down, written as `[redacted]`. The record itself is never changed: one with a secret is copied, one
 * without is returned as it is.
 */
export function hideSecrets(record: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const k in record) {
    const v = record[k];
    let shown = v;
    if (SECRETS.has(k.toLowerCase())) shown = CENSOR;
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) shown = hideKeys(v as Record<string, unknown>);
    if (shown !== v) {
      out ??= { ...record };
      out[k] = shown;
    }
  }
  return out ?? record;
}

function hideKeys(o: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | undefined;
  for (const k in o) {
    if (!SECRETS.has(k.toLowerCase())) continue;
    // An Error's message and stack are its own but not enumerable: a copy keeps them.
    out ??= o instanceof Error ? { ...o, message: o.message, stack: o.stack } : { ...o };
    out[k] = CENSOR;
  }
  return out ?? o;
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

function prettyStream(out: NodeJS.WritableStream): Writable {
  return new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (!line) continue;
        try {
          const { time, level, msg, ...rest } = JSON.parse(line) as Record<string, unknown>;
          const fields = Object.entries(rest)
            .filter(([, v]) => v !== undefined)
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join(' ');
          const text = typeof msg === 'string' ? msg : msg == null ? '' : JSON.stringify(msg);
          out.write(`${String(time).slice(11, 23)} ${(LEVELS[level as number] ?? String(level)).padEnd(5)} ${text} ${fields}\n`);
        } catch {
          out.write(`${line}\n`);
        }
      }
      cb();
    },
  });
}
