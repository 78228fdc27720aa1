/**
 * The agent's HTTP side: one undici `Agent` per origin carrying the fleet's TLS material, a bearer
 * token read from a file, the "which URLs may we talk to" rule, and request deadlines that cover
 * the whole exchange (headers and body), not just the first byte.
 *
 * Both the desired-state source and the status reporter go through `HttpClient.request`, so the
 * URL check, the token and the TLS settings are applied in exactly one place.
 */
import { readFileSync, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { BlockList, isIPv4, isIPv6 } from 'node:net';
import { createSecureContext } from 'node:tls';
import type { Agent, Dispatcher } from 'undici';

/**
 * undici is loaded on the first request, not at start: a host whose source and status are files
 * (the embedded defaults) never needs it, and it is a few MiB of an edge agent's idle RSS.
 */
let undici: Promise<typeof import('undici')> | undefined;
const loadUndici = (): Promise<typeof import('undici')> => (undici ??= import('undici'));
import { ConfigError } from '../errors/index.js';

export interface HttpClientOptions {
  /** PEM CA bundle. When set it REPLACES the system roots for our endpoints (a private fleet CA is pinned). */
  caFile?: string;
  /** Client certificate for mTLS (needs keyFile). Re-read when it changes on disk. */
  certFile?: string;
  /** Client key for mTLS (needs certFile). Re-read when it changes on disk. */
  keyFile?: string;
  /** File holding a bearer token; re-read when it changes, and once more after a 401, so it can be rotated in place. */
  tokenFile?: string;
  /** Allow plain http:// to hosts that are not loopback. */
  allowInsecureHttp: boolean;
  /** Connect timeout, and the base of every request's header/body timeouts. */
  timeoutMs: number;
  /** Config section the files come from, named in error messages: `source` (default) or `status`. */
  keyPrefix?: 'source' | 'status';
}

/** Redirects followed per request; more is an error (a loop or a misconfigured proxy). */
export const MAX_REDIRECTS = 3;

/** A redirect the client refuses to follow (other scheme, too many hops, no Location). */
export class RedirectRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RedirectRefusedError';
  }
}

/** A URL the agent refuses to talk to (scheme, host or shape); thrown before any connection is made. */
export class UrlNotAllowedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UrlNotAllowedError';
  }
}

/** The request ran past its own deadline (as opposed to the caller aborting it). */
export class RequestDeadlineError extends Error {
  constructor(ms: number) {
    super(`no complete answer within ${formatSeconds(ms)}`);
    this.name = 'RequestDeadlineError';
  }
}

// Config keys named in the URL-rule messages (checkUrlAllowed has no client, so no prefix).
const KEYS = {
  caFile: 'source.caFile',
  certFile: 'source.certFile',
  keyFile: 'source.keyFile',
  tokenFile: 'source.tokenFile',
  allowInsecureHttp: 'source.allowInsecureHttp',
} as const;

const loopbackV4 = new BlockList();
loopbackV4.addSubnet('127.0.0.0', 8, 'ipv4');

/** True for localhost, 127.0.0.0/8, ::1 and IPv4-mapped 127/8 (`::ffff:127.x.y.z`). */
export function isLoopbackHost(hostname: string): boolean {
  let host = hostname.toLowerCase();
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  // Only the exact name: `*.localhost` is loopback by RFC 6761 but not every resolver honours it,
  // and `localhost.example.com` must never count.
  if (host === 'localhost' || host === 'localhost.') return true;
  if (isIPv4(host)) return loopbackV4.check(host, 'ipv4');
  if (isIPv6(host)) {
    if (host === '::1' || host === '0:0:0:0:0:0:0:1') return true;
    // WHATWG URL normalises [::ffff:127.0.0.1] to [::ffff:7f00:1].
    const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
    if (mapped?.[1] !== undefined && mapped[2] !== undefined) {
      const hi = parseInt(mapped[1], 16);
      return hi >> 8 === 127;
    }
    const dotted = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(host);
    if (dotted?.[1] !== undefined) return loopbackV4.check(dotted[1], 'ipv4');
  }
  return false;
}

/**
 * Throws UrlNotAllowedError unless the agent may use `url` as an endpoint:
 * - https:// always;
 * - http:// only to loopback (127.0.0.0/8, ::1, localhost), unless allowInsecureHttp;
 * - file:// with no host (or `localhost`);
 * - never credentials in the URL (they would end up in logs; use source.tokenFile).
 * Pure: no DNS lookup, no connection. A name that resolves to 127.0.0.1 is NOT loopback here,
 * because what a name resolves to can change after the check.
 */
export function checkUrlAllowed(url: string | URL, allowInsecureHttp: boolean): void {
  let u: URL;
  try {
    u = typeof url === 'string' ? new URL(url) : url;
  } catch {
    throw new UrlNotAllowedError(`not a valid URL: ${JSON.stringify(String(url))}`);
  }
  if (u.username !== '' || u.password !== '') {
    throw new UrlNotAllowedError(`${redactUrl(u)}: credentials in the URL are not supported; put a bearer token in ${KEYS.tokenFile}`);
  }
  switch (u.protocol) {
    case 'https:':
      if (u.hostname === '') throw new UrlNotAllowedError(`${u.href}: https:// URL without a host`);
      return;
    case 'http:':
      if (u.hostname === '') throw new UrlNotAllowedError(`${u.href}: http:// URL without a host`);
      if (isLoopbackHost(u.hostname) || allowInsecureHttp) return;
      throw new UrlNotAllowedError(
        `${u.href}: plain http:// is only allowed to loopback (127.0.0.0/8, ::1, localhost); ` +
          `use https://, or set ${KEYS.allowInsecureHttp}=true to send desired state and tokens unencrypted to ${u.hostname}`,
      );
    case 'file:':
      if (u.hostname !== '' && u.hostname !== 'localhost') {
        throw new UrlNotAllowedError(`${u.href}: file:// URLs must name a local path (file:///path), not host ${u.hostname}`);
      }
      return;
    default:
      throw new UrlNotAllowedError(`${u.href}: unsupported URL scheme ${u.protocol} (use https://, http:// to loopback, or file://)`);
  }
}

/**
 * Replaces `{nodeId}` in a URL template with the URL-encoded node id. Done on the string, before
 * parsing, because `new URL()` would percent-encode the braces and hide the placeholder.
 */
export function expandNodeIdTemplate(template: string, nodeId: string): string {
  return template.split('{nodeId}').join(encodeURIComponent(nodeId));
}

/** The URL as it may be logged (no userinfo, no query string: either could carry a secret). */
export function redactUrl(url: URL): string {
  const u = new URL(url.href);
  u.username = '';
  u.password = '';
  if (u.search !== '') u.search = '?…';
  return u.href;
}

function formatSeconds(ms: number): string {
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function readConfigFile(key: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new ConfigError([`${key}: cannot read ${path}: ${errorMessage(err)}`]);
  }
}

/**
 * An AbortSignal that fires when any of `parents` fires or after `deadlineMs`; `dispose()` removes
 * the listeners and the timer. Hand-rolled instead of AbortSignal.any/timeout so long-lived parent
 * signals (the agent's shutdown signal) do not accumulate listeners or composite signals across
 * thousands of requests, and the deadline timer is cleared as soon as the exchange ends.
 */
export function linkSignals(parents: readonly AbortSignal[], deadlineMs?: number): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const cleanups: Array<() => void> = [];
  const dispose = () => {
    for (const c of cleanups.splice(0)) c();
  };
  const fire = (reason: unknown) => {
    if (!controller.signal.aborted) controller.abort(reason);
    dispose();
  };
  for (const parent of parents) {
    if (parent.aborted) {
      fire(parent.reason);
      return { signal: controller.signal, dispose };
    }
    const onAbort = () => fire(parent.reason);
    parent.addEventListener('abort', onAbort, { once: true });
    cleanups.push(() => parent.removeEventListener('abort', onAbort));
  }
  if (deadlineMs !== undefined && Number.isFinite(deadlineMs)) {
    const timer = setTimeout(() => fire(new RequestDeadlineError(deadlineMs)), Math.max(0, deadlineMs));
    cleanups.push(() => clearTimeout(timer));
  }
  return { signal: controller.signal, dispose };
}

export interface HttpRequestOptions {
  method: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** The caller's cancellation (shutdown). The client adds its own deadline on top. */
  signal: AbortSignal;
  /** Time the server may legitimately hold the request (long-poll), added to every timeout. */
  extraTimeoutMs?: number;
  /** Overrides the client's timeoutMs for this request. */
  timeoutMs?: number;
}

export type HttpResponse = Dispatcher.ResponseData;

/** What identifies a version of a file on disk: a rotation (rewrite or rename over) changes it. */
function fileStamp(st: { mtimeMs: number; size: number; ino: number }): string {
  return `${st.ino}:${st.size}:${st.mtimeMs}`;
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export class HttpClient {
  readonly timeoutMs: number;
  readonly allowInsecureHttp: boolean;
  readonly #files: { caFile?: string; certFile?: string; keyFile?: string };
  readonly #keys: { caFile: string; certFile: string; keyFile: string; tokenFile: string };
  #connect: { ca?: Buffer; cert?: Buffer; key?: Buffer; timeout: number };
  #tlsStamp = '';
  readonly #agents = new Map<string, Agent>();
  readonly #tokenFile: string | undefined;
  // The token lives only here and in the outgoing header; it is never put in an error or log line.
  #token: { value: string; stamp: string } | undefined;
  #tlsReloads = 0;
  #closed = false;

  constructor(opts: HttpClientOptions) {
    const prefix = opts.keyPrefix ?? 'source';
    this.#keys = { caFile: `${prefix}.caFile`, certFile: `${prefix}.certFile`, keyFile: `${prefix}.keyFile`, tokenFile: `${prefix}.tokenFile` };
    const K = this.#keys;
    if (!(opts.timeoutMs > 0)) throw new ConfigError([`http timeout must be positive, got ${opts.timeoutMs}`]);
    if ((opts.certFile === undefined) !== (opts.keyFile === undefined)) {
      throw new ConfigError([
        opts.certFile === undefined ? `${K.keyFile} is set but ${K.certFile} is not: mTLS needs both` : `${K.certFile} is set but ${K.keyFile} is not: mTLS needs both`,
      ]);
    }
    this.timeoutMs = opts.timeoutMs;
    this.allowInsecureHttp = opts.allowInsecureHttp;
    this.#files = {
      ...(opts.caFile !== undefined ? { caFile: opts.caFile } : {}),
      ...(opts.certFile !== undefined ? { certFile: opts.certFile } : {}),
      ...(opts.keyFile !== undefined ? { keyFile: opts.keyFile } : {}),
    };
    // Read once, synchronously, at start-up: a missing or unreadable file is a configuration error
    // the operator should see immediately, not a transient failure on every poll. Later versions
    // of the files are picked up by #refreshTls.
    this.#connect = { timeout: opts.timeoutMs };
    if (opts.caFile !== undefined) this.#connect.ca = readConfigFile(K.caFile, opts.caFile);
    if (opts.certFile !== undefined) this.#connect.cert = readConfigFile(K.certFile, opts.certFile);
    if (opts.keyFile !== undefined) this.#connect.key = readConfigFile(K.keyFile, opts.keyFile);
    this.#tlsStamp = this.#tlsStampSync();
    this.#tokenFile = opts.tokenFile;
    if (opts.tokenFile !== undefined) {
      const raw = readConfigFile(K.tokenFile, opts.tokenFile).toString('utf8').trim();
      if (raw === '') throw new ConfigError([`${K.tokenFile}: ${opts.tokenFile} is empty`]);
    }
  }

  /** Number of per-origin agents opened so far (tests use it to prove a rejected URL never connected). */
  get agentCount(): number {
    return this.#agents.size;
  }

  /** How often changed TLS files were picked up (tests). */
  get tlsReloads(): number {
    return this.#tlsReloads;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Throws UrlNotAllowedError when this client must not talk to `url`. */
  checkUrl(url: URL): void {
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw new UrlNotAllowedError(`${redactUrl(url)}: the HTTP client only speaks https:// and http://`);
    }
    checkUrlAllowed(url, this.allowInsecureHttp);
  }

  /**
   * The `Authorization` header value, or undefined without a token file. Re-reads the file when it
   * changed (inode, size or mtime), or always with `force` (after a 401).
   */
  async authorization(force = false): Promise<string | undefined> {
    const path = this.#tokenFile;
    if (path === undefined) return undefined;
    const key = this.#keys.tokenFile;
    let st;
    try {
      st = await stat(path);
    } catch (err) {
      throw new Error(`${key}: cannot read ${path}: ${errorMessage(err)}`);
    }
    const stamp = fileStamp(st);
    const cached = this.#token;
    if (force || cached === undefined || cached.stamp !== stamp) {
      let value: string;
      try {
        value = (await readFile(path, 'utf8')).trim();
      } catch (err) {
        throw new Error(`${key}: cannot read ${path}: ${errorMessage(err)}`);
      }
      if (value === '') throw new Error(`${key}: ${path} is empty`);
      if (/[\r\n]/.test(value)) throw new Error(`${key}: ${path} holds more than one line`);
      this.#token = { value, stamp };
    }
    return `Bearer ${this.#token?.value ?? ''}`;
  }

  #tlsStampSync(): string {
    const parts: string[] = [];
    for (const f of [this.#files.caFile, this.#files.certFile, this.#files.keyFile]) {
      if (f === undefined) continue;
      try {
        parts.push(fileStamp(statSync(f)));
      } catch {
        parts.push('missing');
      }
    }
    return parts.join('|');
  }

  /**
   * Picks up a CA, client certificate or key replaced on disk: new connections use the new files,
   * open ones finish on the old. A half-written or unreadable set keeps the old material (and is
   * tried again on the next request), so a rotation in progress never breaks the agent.
   */
  async #refreshTls(): Promise<void> {
    const f = this.#files;
    if (f.caFile === undefined && f.certFile === undefined) return;
    const stamp = this.#tlsStampSync();
    if (stamp === this.#tlsStamp) return;
    try {
      const next: { ca?: Buffer; cert?: Buffer; key?: Buffer; timeout: number } = { timeout: this.timeoutMs };
      if (f.caFile !== undefined) next.ca = await readFile(f.caFile);
      if (f.certFile !== undefined) next.cert = await readFile(f.certFile);
      if (f.keyFile !== undefined) next.key = await readFile(f.keyFile);
      // Throws on a certificate that does not match its key, or PEM that does not parse.
      createSecureContext({ ...(next.ca ? { ca: next.ca } : {}), ...(next.cert ? { cert: next.cert } : {}), ...(next.key ? { key: next.key } : {}) });
      this.#connect = next;
    } catch {
      return;
    }
    this.#tlsStamp = stamp;
    this.#tlsReloads++;
    const old = [...this.#agents.values()];
    this.#agents.clear();
    for (const a of old) void a.close().catch(() => undefined);
  }

  #agentFor(url: URL, lib: typeof import('undici')): Agent {
    let agent = this.#agents.get(url.origin);
    if (agent === undefined) {
      agent = new lib.Agent({
        connect: { ...this.#connect },
        // A held long-poll answers late by design; undici's per-request timeouts are set on each
        // request, these are only the defaults.
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
      this.#agents.set(url.origin, agent);
    }
    return agent;
  }

  /**
   * One exchange. The URL is checked before anything is opened. `handle` must consume or dump the
   * body; whatever it leaves is destroyed afterwards. Timeouts: the headers must arrive, and the
   * body may not stall, for longer than timeoutMs + extraTimeoutMs; the whole exchange (redirects
   * included) is bounded by 2 * timeoutMs + extraTimeoutMs (the per-request timeoutMs when given)
   * so a server dribbling one byte at a time cannot hold us forever.
   *
   * Redirects: at most MAX_REDIRECTS, same scheme only (so never https -> http), each target
   * checked like the first URL; the bearer token goes only to the origin first asked. A POST
   * follows only 307/308 (which keep the method and body). A 401 re-reads the token file once
   * and, when it changed, repeats the request with the new token. `handle` gets the URL that
   * answered (after redirects), so an error can name the host that actually refused.
   */
  async request<T>(url: URL, opts: HttpRequestOptions, handle: (res: HttpResponse, answeredBy: URL) => Promise<T>): Promise<T> {
    if (this.#closed) throw new Error('HTTP client is closed');
    this.checkUrl(url);
    const extra = Math.max(0, opts.extraTimeoutMs ?? 0);
    const base = opts.timeoutMs !== undefined && opts.timeoutMs > 0 ? opts.timeoutMs : this.timeoutMs;
    const { signal, dispose } = linkSignals([opts.signal], 2 * base + extra);
    try {
      await this.#refreshTls();
      const lib = await loadUndici();
      let current = url;
      let redirects = 0;
      let reread = false;
      for (;;) {
        const headers: Record<string, string> = { ...(opts.headers ?? {}) };
        const withToken = current.origin === url.origin;
        const auth = withToken ? await this.authorization() : undefined;
        if (auth !== undefined) headers.authorization = auth;
        const res = await lib.request(current, {
          dispatcher: this.#agentFor(current, lib),
          method: opts.method,
          headers,
          body: opts.body ?? null,
          signal,
          headersTimeout: base + extra,
          bodyTimeout: base + extra,
        });
        if (res.statusCode === 401 && auth !== undefined && !reread) {
          reread = true;
          const fresh = await this.authorization(true).catch(() => auth);
          if (fresh !== auth) {
            discardBody(res.body);
            continue;
          }
        }
        const location = headerValue(res.headers, 'location');
        const followable = REDIRECT_STATUSES.has(res.statusCode) && (opts.method === 'GET' || res.statusCode === 307 || res.statusCode === 308);
        if (followable) {
          discardBody(res.body);
          current = this.#redirectTarget(current, location, ++redirects);
          continue;
        }
        try {
          return await handle(res, current);
        } finally {
          if (!res.body.readableEnded && !res.body.destroyed) discardBody(res.body);
        }
      }
    } catch (err) {
      // undici rejects with the abort reason; make our own deadline readable and keep the rest.
      if (signal.aborted && signal.reason instanceof RequestDeadlineError) throw signal.reason;
      throw err;
    } finally {
      dispose();
    }
  }

  #redirectTarget(from: URL, location: string | undefined, hop: number): URL {
    const shown = redactUrl(from);
    if (location === undefined || location === '') throw new RedirectRefusedError(`${shown}: redirect without a Location header`);
    if (hop > MAX_REDIRECTS) throw new RedirectRefusedError(`${shown}: more than ${MAX_REDIRECTS} redirects`);
    let to: URL;
    try {
      to = new URL(location, from);
    } catch {
      throw new RedirectRefusedError(`${shown}: redirect to an invalid Location`);
    }
    if (to.protocol !== from.protocol) {
      throw new RedirectRefusedError(`${shown}: redirect from ${from.protocol}// to ${to.protocol}// refused (same scheme only)`);
    }
    try {
      this.checkUrl(to);
    } catch (err) {
      throw new RedirectRefusedError(`${shown}: redirect refused: ${errorMessage(err)}`);
    }
    return to;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const agents = [...this.#agents.values()];
    this.#agents.clear();
    await Promise.allSettled(agents.map((a) => a.close()));
  }
}

export function createHttpClient(opts: HttpClientOptions): HttpClient {
  return new HttpClient(opts);
}

/**
 * Drops a body unread and closes its connection. The no-op error listener matters: destroying an
 * undici body emits an AbortError, which would otherwise be an uncaught exception.
 */
export function discardBody(body: HttpResponse['body']): void {
  body.on('error', () => undefined);
  body.destroy();
}

/** Reads at most `limit` bytes of a body as text (for error messages), then drops the rest. */
export async function readSnippet(body: HttpResponse['body'], limit = 512): Promise<string> {
  const chunks: Buffer[] = [];
  let total = 0;
  let truncated = false;
  try {
    for await (const chunk of body) {
      const buf = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
      chunks.push(buf);
      total += buf.length;
      if (total > limit) {
        truncated = true;
        break; // leaving the loop destroys the stream: the rest is never read
      }
    }
  } catch {
    // A body that fails mid-way still gives us what arrived; the status code is the real news.
  }
  const text = Buffer.concat(chunks)
    .subarray(0, limit)
    .toString('utf8')
    // eslint-disable-next-line no-control-regex
    .replace(/[\u0000-\u001f\u007f]+/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return truncated ? `${text}…` : text;
}

/** First value of a response header. */
export function headerValue(headers: HttpResponse['headers'], name: string): string | undefined {
  const v = headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

/** "connect ECONNREFUSED 127.0.0.1:1 (ECONNREFUSED)": the exact message, plus the code when it adds something. */
export function describeNetworkError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as Error & { code?: unknown }).code;
  let msg = err.message || err.name;
  if (typeof code === 'string' && !msg.includes(code)) msg += ` (${code})`;
  // undici sometimes wraps the socket error ("fetch failed"-style); the cause holds the real reason.
  const cause = err.cause;
  if (cause instanceof Error && cause.message && !msg.includes(cause.message)) msg += `: ${describeNetworkError(cause)}`;
  return msg;
}
