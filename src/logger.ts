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
    redact: { paths: ['authorization', 'password', 'token', '*.authorization', '*.password', '*.token'], censor: '[redacted]' },
  };
  if (config.log.format === 'json') return pino(opts, out);
  return pino(opts, prettyStream(out));
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
