import { pino, type Logger, type LevelWithSilent } from 'pino';

export type { Logger };

/**
 * Paths redacted wherever they appear in a log object. Env values, tokens, passwords and
 * whole specs (which carry env) never reach the log; log ids, codes and reasons instead.
 */
export const REDACT_PATHS = [
  'env',
  '*.env',
  '*.*.env',
  'spec.env',
  '*.spec.env',
  'token',
  '*.token',
  'authorization',
  '*.authorization',
  'headers.authorization',
  '*.headers.authorization',
  'password',
  '*.password',
  '*.*.password',
  'secrets',
  '*.secrets',
  'userData',
  '*.userData',
  '*.*.userData',
];

export function createLogger(level: LevelWithSilent = 'info', destination?: NodeJS.WritableStream): Logger {
  const opts = {
    level,
    base: { pid: process.pid },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  };
  return destination ? pino(opts, destination) : pino(opts);
}

/** A logger that drops everything (unit tests, `plan`). */
export const silentLogger = (): Logger => pino({ level: 'silent' });
