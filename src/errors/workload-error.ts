import { ERROR_CODES, type ErrorCode } from './codes.js';

export interface ErrorSummary {
  code: ErrorCode;
  /** The exact runtime/engine message, kept verbatim. */
  message: string;
  /** What a person should understand. */
  userMessage: string;
  transient: boolean;
  details?: Record<string, string | number | boolean>;
}

/** An error with a code from the closed set; the runtime's exact message is kept beside the friendly one. */
export class WorkloadError extends Error {
  readonly code: ErrorCode;
  readonly transient: boolean;
  readonly userMessage: string;
  readonly details: Record<string, string | number | boolean> | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    opts: { cause?: unknown; transient?: boolean; userMessage?: string; details?: Record<string, string | number | boolean> } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'WorkloadError';
    this.code = code;
    this.transient = opts.transient ?? ERROR_CODES[code].transient;
    this.userMessage = opts.userMessage ?? ERROR_CODES[code].user;
    this.details = opts.details;
  }

  summary(): ErrorSummary {
    const s: ErrorSummary = { code: this.code, message: this.message, userMessage: this.userMessage, transient: this.transient };
    if (this.details) s.details = this.details;
    return s;
  }
}

/** Anything thrown that is not already classified becomes INTERNAL, keeping its message. */
export function toWorkloadError(err: unknown): WorkloadError {
  if (err instanceof WorkloadError) return err;
  if (err instanceof Error && err.name === 'AbortError') return new WorkloadError('TIMEOUT', err.message, { cause: err });
  const message = err instanceof Error ? err.message : String(err);
  return new WorkloadError('INTERNAL', message, { cause: err });
}

/** Errors of the desired-state source: never tied to one workload. */
export class SourceError extends Error {
  readonly code: ErrorCode;
  readonly retryAfterMs: number | undefined;
  constructor(code: ErrorCode, message: string, opts: { cause?: unknown; retryAfterMs?: number } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'SourceError';
    this.code = code;
    this.retryAfterMs = opts.retryAfterMs;
  }
}

/** A bad configuration; the CLI exits 2 with every issue listed. */
export class ConfigError extends Error {
  readonly issues: readonly string[];
  constructor(issues: readonly string[]) {
    super(`invalid configuration:\n  ${issues.join('\n  ')}`);
    this.name = 'ConfigError';
    this.issues = issues;
  }
}
