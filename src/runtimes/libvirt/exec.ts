/**
 * Runs the host tools the libvirt runtime needs (virsh, qemu-img, genisoimage) with execFile: never a
 * shell, always a timeout, an AbortSignal, and a bound on the output kept. Failures become ToolError,
 * which keeps the tool's exact stderr; translate-error.ts turns it into a WorkloadError.
 */
import { execFile } from 'node:child_process';

/** Output beyond this is an engine gone wrong, not an answer: the call fails instead of growing memory. */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

export interface ToolRunOptions {
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** How messages name the call, e.g. "virsh start"; default the tool and its first argument. */
  label?: string;
}

export interface ToolResult {
  stdout: string;
  stderr: string;
}

export type ToolFailure = 'exit' | 'not-found' | 'timeout' | 'aborted' | 'spawn';

/** A tool that could not run or did not succeed; `stderr` is kept verbatim. */
export class ToolError extends Error {
  constructor(
    readonly tool: string,
    readonly args: readonly string[],
    readonly failure: ToolFailure,
    readonly stderr: string,
    readonly exitCode: number | null,
    message: string,
  ) {
    super(message);
    this.name = 'ToolError';
  }

  /** The tool's own message: its stderr lines without virsh's "error: " prefixes, joined with ": ". */
  get toolMessage(): string {
    return toolMessage(this.stderr) || this.message;
  }
}

/**
 * virsh prints one "error: ..." line per level ("Failed to start domain 'x'", then libvirt's own
 * message). Both are kept, in order, without the prefix and without blank lines.
 */
export function toolMessage(stderr: string): string {
  return stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '')
    .map((l) => l.replace(/^error:\s*/, ''))
    .join(': ');
}

export function runTool(tool: string, args: readonly string[], opts: ToolRunOptions): Promise<ToolResult> {
  const signal = opts.signal;
  if (signal?.aborted) {
    return Promise.reject(new ToolError(tool, args, 'aborted', '', null, `${opts.label ?? tool}: aborted before it started`));
  }
  return new Promise<ToolResult>((resolve, reject) => {
    execFile(
      tool,
      [...args],
      {
        timeout: opts.timeoutMs,
        killSignal: 'SIGKILL',
        maxBuffer: MAX_OUTPUT_BYTES,
        encoding: 'utf8',
        windowsHide: true,
        ...(signal ? { signal } : {}),
        ...(opts.cwd ? { cwd: opts.cwd } : {}),
        // A fixed locale keeps virsh's and qemu-img's messages and tables in the form we parse.
        env: { ...(opts.env ?? process.env), LC_ALL: 'C', LANG: 'C' },
      },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: string | number };
        const what = opts.label ?? `${tool} ${args[0] ?? ''}`.trim();
        if (e.code === 'ENOENT') {
          reject(new ToolError(tool, args, 'not-found', stderr, null, `${tool} not found on PATH (${e.message})`));
        } else if (signal?.aborted || e.name === 'AbortError') {
          reject(new ToolError(tool, args, 'aborted', stderr, null, `${what}: aborted`));
        } else if (e.killed === true && e.code === null) {
          reject(new ToolError(tool, args, 'timeout', stderr, null, `${what} did not finish within ${opts.timeoutMs / 1000} s`));
        } else if (typeof e.code === 'number') {
          reject(new ToolError(tool, args, 'exit', stderr, e.code, `${what} exited with status ${e.code}${stderr.trim() ? `: ${toolMessage(stderr)}` : ''}`));
        } else {
          reject(new ToolError(tool, args, 'spawn', stderr, null, `${what}: ${e.message}`));
        }
      },
    );
  });
}
