/**
 * The ONE place where Docker Engine error strings and status codes are matched (DESIGN: "no string
 * matching outside the runtime adapters"). Everything else in the agent sees a WorkloadError with a
 * code from the closed set, and the engine's exact message kept as `message`.
 *
 * Messages seen on dockerd 20.10 (API 1.41) on the testbed, for reference:
 *   pull, no registry reachable: `Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host` (500)
 *   pull, registry refuses:      `Get "http://localhost:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused` (500)
 *   create, image missing:       `No such image: persys-test/nope:1` (404)
 *   create, bind source missing: `invalid mount config for type "bind": bind source path does not exist: /nonexistent/dir` (400)
 *   create, too many cpus:       `Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available` (400)
 *   start, port taken by docker: `driver failed programming external connectivity on endpoint x (...): Bind for 127.0.0.1:18999 failed: port is already allocated` (500)
 *   start, bad command:          `failed to create shim task: OCI runtime create failed: ... exec: "/nope": stat /nope: no such file or directory: unknown` (400)
 *   start, dockerd shutting down: `failed to update store for object type *libnetwork.endpoint: open : no such file or directory`,
 *                                `failed to update the store state of sandbox: failed to update store for object type *libnetwork.sbState: open : no such file or directory`,
 *                                `transport is closing: unavailable` (500)
 *   start, after such a restart: `task <id>: already exists`, `id already in use` (500, on every later start)
 * Docker Hub answers a pull of a repository that does not exist (or is private) with
 *   `pull access denied for x, repository does not exist or may require 'docker login': denied: requested access to the resource is denied`.
 */
import { WorkloadError, type ErrorCode } from '../../errors/index.js';

export type DockerErrorContext = 'pull' | 'create' | 'start' | 'stop' | 'remove' | 'inspect' | 'list' | 'events';

/** Node socket errors that mean "the engine is not there (or not ours to talk to)", not "the engine said no". */
const UNAVAILABLE_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ENOENT',
  'EACCES',
  'EPERM',
  'ECONNRESET',
  'EPIPE',
  'ENOTSOCK',
  'ENOTDIR',
  'EHOSTUNREACH',
  'ENETUNREACH',
]);

const TIMEOUT_CODES: ReadonlySet<string> = new Set(['ETIMEDOUT', 'ESOCKETTIMEDOUT', 'ABORT_ERR']);

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null;
}

/** HTTP status the engine answered with, when it answered at all (dockerode puts it on `statusCode`). */
export function dockerStatusCode(err: unknown): number | undefined {
  if (!isRecord(err)) return undefined;
  const code = err.statusCode;
  return typeof code === 'number' ? code : undefined;
}

/**
 * docker-modem's wording around the engine's message: "(HTTP code 500) server error - <engine message> ".
 * For streaming endpoints (pull, events) it reads the error body into the message and leaves `json` null,
 * so the decoration must come off here for the exact engine message to survive.
 */
const MODEM_DECORATION = /^\(HTTP code \d+\) [^]*? - ([^]*?)\s*$/;

function undecorated(message: string): string {
  const m = MODEM_DECORATION.exec(message);
  return m?.[1] !== undefined && m[1] !== '' ? m[1] : message;
}

/**
 * The engine's own words. dockerode's Error.message is decorated ("(HTTP code 404) no such container - ... "),
 * while `json.message` is exactly what dockerd said; when the body was not JSON, docker-modem leaves the raw
 * Buffer or string in `json`; streaming endpoints leave nothing there (see MODEM_DECORATION).
 */
export function dockerErrorMessage(err: unknown): string {
  if (isRecord(err)) {
    const json = err.json;
    if (isRecord(json) && !Buffer.isBuffer(json)) {
      if (typeof json.message === 'string' && json.message.trim() !== '') return json.message.trim();
      // The shape of an error line in a pull/push progress stream.
      const detail = json.errorDetail;
      if (isRecord(detail) && typeof detail.message === 'string' && detail.message.trim() !== '') return detail.message.trim();
      if (typeof json.error === 'string' && json.error.trim() !== '') return json.error.trim();
    }
    if (Buffer.isBuffer(json) && json.length > 0) return json.toString('utf8').trim();
    if (typeof json === 'string' && json.trim() !== '') return json.trim();
  }
  if (err instanceof Error) return undecorated(err.message);
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

function nodeErrorCode(err: unknown): string | undefined {
  if (!isRecord(err)) return undefined;
  return typeof err.code === 'string' ? err.code : undefined;
}

function isAbort(err: unknown): boolean {
  if (!isRecord(err)) return false;
  const name = typeof err.name === 'string' ? err.name : '';
  return name === 'AbortError' || name === 'TimeoutError' || nodeErrorCode(err) === 'ABORT_ERR';
}

const AUTH = /unauthorized|authentication required|no basic auth credentials|incorrect username or password/i;
const IMAGE_MISSING =
  /manifest unknown|manifest for \S+ not found|pull access denied|repository does not exist|no such image|not found: manifest|name unknown/i;
const PORT = /port is already allocated|address already in use/i;
const MOUNT_EXPLICIT = /invalid mount config|bind source path does not exist|error while creating mount source path|invalid volume specification/i;
const MOUNT_WORD = /\bmount/i;
const MOUNT_FS = /no such file or directory|not a directory/i;
const NO_SPACE = /no space left on device/i;
const CPU_RANGE = /range of cpus is from/i;
/** A command that cannot exist in the image never fixes itself: a spec problem, not a retryable one. */
const BAD_EXEC = /executable file not found|exec: "[^"]*": (?:stat [^:]*: )?no such file or directory|exec format error/i;
const ENGINE_TIMEOUT = /context deadline exceeded|i\/o timeout|timeout exceeded/i;
/**
 * A dockerd that is shutting down still answers, with these (seen on 20.10 when it was stopped during
 * starts): its containerd connection closing, and libnetwork's store already closed (the empty path
 * in "open : no such file" is that closed store). The engine going away, not the workload failing.
 */
const ENGINE_GOING_AWAY = /transport is closing|failed to update (?:the )?store\b.*: open : no such file or directory/i;

function classify(err: unknown, message: string, context: DockerErrorContext): ErrorCode {
  if (isAbort(err)) return 'TIMEOUT';

  const status = dockerStatusCode(err);
  const code = nodeErrorCode(err);
  // No status code means the engine never answered: a socket-level failure.
  if (status === undefined && code !== undefined) {
    if (UNAVAILABLE_CODES.has(code)) return 'RUNTIME_UNAVAILABLE';
    if (TIMEOUT_CODES.has(code)) return 'TIMEOUT';
  }
  if (status === undefined && /socket hang up/i.test(message)) return 'RUNTIME_UNAVAILABLE';

  if (ENGINE_GOING_AWAY.test(message)) return 'RUNTIME_UNAVAILABLE';
  if (NO_SPACE.test(message)) return 'NO_SPACE';
  // Before the not-found patterns: Docker's "pull access denied ... may require 'docker login'" is its
  // generic answer for a missing repository, and is only an auth failure when the registry said so.
  if (AUTH.test(message)) return 'REGISTRY_AUTH_FAILED';
  if (IMAGE_MISSING.test(message)) return 'IMAGE_NOT_FOUND';
  if (PORT.test(message)) return 'PORT_CONFLICT';
  if (MOUNT_EXPLICIT.test(message) || (MOUNT_WORD.test(message) && MOUNT_FS.test(message))) return 'MOUNT_FAILED';
  if (BAD_EXEC.test(message)) return 'INVALID_SPEC';
  if (CPU_RANGE.test(message)) return 'INSUFFICIENT_RESOURCES';

  // A pull that failed for any other reason (DNS, refused connection, TLS, rate limit, registry 5xx)
  // is the registry being unreachable or slow: transient.
  if (context === 'pull') return 'IMAGE_PULL_FAILED';
  if (ENGINE_TIMEOUT.test(message)) return 'TIMEOUT';
  // 400 on create is dockerd rejecting the body ("bad parameter"): the spec, not the host, must change.
  if (context === 'create' && status === 400) return 'INVALID_SPEC';
  return 'INTERNAL';
}

/**
 * Whether a failed start says this container can never start again: dockerd 20.10 stopped during a
 * start can leave containerd a task ("task <id>: already exists") or a container record ("id already
 * in use") under this container's id that dockerd no longer knows. Every later start fails the same
 * way; only a new container (a new id) runs, so the caller replaces it rather than retry.
 */
export function cannotStartAgain(message: string, containerId: string): boolean {
  return message.includes(`task ${containerId}: already exists`) || /\bid already in use\b/.test(message);
}

/**
 * Turns whatever dockerode threw into a WorkloadError. The exact engine message is the error's message;
 * `details` carries the operation and HTTP status for logs and the status report.
 */
export function translateDockerError(err: unknown, context: DockerErrorContext): WorkloadError {
  if (err instanceof WorkloadError) return err;
  const message = dockerErrorMessage(err);
  const code = classify(err, message, context);
  const details: Record<string, string | number | boolean> = { operation: context };
  const status = dockerStatusCode(err);
  if (status !== undefined) details.statusCode = status;
  return new WorkloadError(code, message, { cause: err, details });
}
