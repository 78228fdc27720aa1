/**
 * A listener the configuration asks for could not be opened (the metrics port, the local API
 * socket). That is a problem of this host's setup, not a crash of the agent: `persys-agent run`
 * prints the message on one line and exits 2, with no stack trace.
 */
export class ListenError extends Error {
  override name = 'ListenError';
  constructor(
    /** The config key that chose the address (`metrics.listen`, `stateDir`). */
    readonly key: string,
    /** host:port or the socket path. */
    readonly address: string,
    /** The errno code (EADDRINUSE, ...), when there was one. */
    readonly code: string | undefined,
    message: string,
  ) {
    super(message);
  }
}

/** What each errno means for someone who only wanted the agent to start. */
const REASONS: Record<string, string> = {
  EADDRINUSE: 'the address is already in use (EADDRINUSE): another process listens there',
  EADDRNOTAVAIL: 'no interface of this host has that address (EADDRNOTAVAIL)',
  EACCES: 'permission denied (EACCES)',
  EPERM: 'permission denied (EPERM)',
  ENOTFOUND: 'the host name does not resolve (ENOTFOUND)',
  EAI_AGAIN: 'the host name could not be resolved now (EAI_AGAIN)',
  ENOENT: 'its directory does not exist (ENOENT)',
};

/**
 * The one-line error for a failed listen: the address, the key that chose it, why, and what to do.
 * `fix` is the remedy, e.g. `stop it, or set metrics.listen to a free address or "off"`.
 */
export function listenError(key: string, address: string, err: unknown, fix: string): ListenError {
  const code = typeof (err as { code?: unknown } | null)?.code === 'string' ? (err as { code: string }).code : undefined;
  const why = (code !== undefined ? REASONS[code] : undefined) ?? (err instanceof Error ? err.message : String(err));
  return new ListenError(key, address, code, `cannot listen on ${address} (${key}): ${why}; ${fix}`);
}

/**
 * Linux keeps a unix socket path in sun_path[108], NUL included. Node does not refuse a longer
 * path: it silently truncates it, so the socket would appear under another name (or collide with a
 * directory) and clients looking for the real path would never find it.
 */
export const UNIX_SOCKET_PATH_MAX = 107;
