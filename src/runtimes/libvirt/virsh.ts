/**
 * `virsh -c <uri> ...` through execFile, and the one place libvirt's messages are read to classify
 * failures: an unreachable daemon is RUNTIME_UNAVAILABLE, a refused definition VM_DEFINE_FAILED, a
 * failed start VM_START_FAILED; the exact libvirt message is always the error's message.
 */
import { WorkloadError } from '../../errors/index.js';
import { runTool, ToolError } from './exec.js';

export type VirshOperation = 'define' | 'start' | 'stop' | 'remove' | 'inspect' | 'list' | 'events' | 'health' | 'stats';

const UNREACHABLE = [
  /failed to connect to the hypervisor/i,
  /Failed to connect socket/i,
  /Cannot recv data/i,
  /End of file while reading data/i,
  /Connection reset by peer/i,
  /unable to connect to server/i,
  /no connection driver available/i,
  /Broken pipe/i,
  /client socket is closed/i,
];
const NOT_FOUND = [/failed to get domain/i, /Domain not found/i, /no domain with matching/i];
const NOT_RUNNING = [/domain is not running/i, /Requested operation is not valid: domain is not running/i];
const ALREADY_RUNNING = [/domain is already running/i, /already active/i];

const matches = (res: readonly RegExp[], s: string) => res.some((re) => re.test(s));

export function isDomainNotFound(err: unknown): boolean {
  return err instanceof ToolError && err.failure === 'exit' && matches(NOT_FOUND, err.stderr);
}
export function isNotRunning(err: unknown): boolean {
  return err instanceof ToolError && err.failure === 'exit' && matches(NOT_RUNNING, err.stderr);
}
export function isAlreadyRunning(err: unknown): boolean {
  return err instanceof ToolError && err.failure === 'exit' && matches(ALREADY_RUNNING, err.stderr);
}

/** A virsh failure as a WorkloadError with a code from the closed set and libvirt's exact message. */
export function translateVirshError(err: unknown, op: VirshOperation): WorkloadError {
  if (err instanceof WorkloadError) return err;
  if (!(err instanceof ToolError)) {
    return new WorkloadError('INTERNAL', err instanceof Error ? err.message : String(err), { cause: err, details: { operation: op } });
  }
  const details = { operation: op };
  switch (err.failure) {
    case 'not-found':
      return new WorkloadError('RUNTIME_UNAVAILABLE', err.message, { cause: err, details, userMessage: 'virsh (libvirt-clients) is not installed on this host.' });
    case 'timeout':
    case 'aborted':
      return new WorkloadError('TIMEOUT', err.message, { cause: err, details });
    case 'spawn':
      return new WorkloadError('RUNTIME_UNAVAILABLE', err.message, { cause: err, details });
    case 'exit':
      break;
  }
  const message = err.toolMessage;
  if (matches(UNREACHABLE, err.stderr)) return new WorkloadError('RUNTIME_UNAVAILABLE', message, { cause: err, details });
  if (/No space left on device/i.test(err.stderr)) return new WorkloadError('NO_SPACE', message, { cause: err, details });
  switch (op) {
    case 'define':
      return new WorkloadError('VM_DEFINE_FAILED', message, { cause: err, details });
    case 'start':
      if (/Cannot allocate memory|cannot set up guest memory/i.test(err.stderr)) {
        return new WorkloadError('INSUFFICIENT_RESOURCES', message, { cause: err, details });
      }
      return new WorkloadError('VM_START_FAILED', message, { cause: err, details });
    default:
      return new WorkloadError('INTERNAL', message, { cause: err, details });
  }
}

export interface VirshOptions {
  binary: string;
  uri: string;
  timeoutMs: number;
}

export class Virsh {
  constructor(readonly opts: VirshOptions) {}

  /** Raw call: rejects with ToolError (callers that look at "not found" / "not running" need it). */
  async raw(args: readonly string[], signal?: AbortSignal, timeoutMs?: number): Promise<string> {
    const { stdout } = await runTool(this.opts.binary, ['-q', '-c', this.opts.uri, ...args], {
      timeoutMs: timeoutMs ?? this.opts.timeoutMs,
      signal,
      label: `virsh ${args[0] ?? ''}`.trim(),
    });
    return stdout;
  }

  /** Call whose failure leaves as a WorkloadError. */
  async run(op: VirshOperation, args: readonly string[], signal?: AbortSignal, timeoutMs?: number): Promise<string> {
    try {
      return await this.raw(args, signal, timeoutMs);
    } catch (err) {
      throw translateVirshError(err, op);
    }
  }
}
