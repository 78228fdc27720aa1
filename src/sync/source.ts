/**
 * Pulls this node's desired-state document: https:// (or loopback http://) with ETags and
 * long-poll, or file://. Every outcome is either a PullResult or a SourceError with a code from
 * the closed set and the exact reason, so the caller can keep the last good state and report why.
 *
 * Order of checks on a 200: size cap -> JSON -> signature (DSSE, when trust is configured) ->
 * verify hook -> schema -> node id (`*` only from file://, or signed with trust.allowWildcardNode)
 * -> generation (rollback; mix-and-match for signed documents) -> expiresAt. Nothing here writes
 * anything; the caller stores an accepted document.
 */
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { ConfigError, SourceError } from '../errors/index.js';
import type { Logger } from '../log.js';
import { ANY_NODE_ID, type DesiredStateDocument } from '../spec/desired-state.js';
import { checkFreshness, checkWildcardNode, openSigned, type TrustSettings } from '../trust/desired-state-trust.js';
import { formatIssues, validateDesiredState } from '../spec/validate.js';
import { parseRetryAfter } from '../util/backoff.js';
import {
  checkUrlAllowed,
  describeNetworkError,
  discardBody,
  expandNodeIdTemplate,
  headerValue,
  readSnippet,
  redactUrl,
  RequestDeadlineError,
  UrlNotAllowedError,
  type HttpClient,
  type HttpResponse,
} from './http-client.js';

export type PullResult =
  | { kind: 'not-modified'; waitApplied?: number }
  | {
      kind: 'updated';
      /** `Preference-Applied: wait=N` of the answer: the server holds requests (long-poll). Absent from static hosts. */
      waitApplied?: number;
      document: DesiredStateDocument;
      /** Opaque validator to send back as currentEtag; null when the server gave none. */
      etag: string | null;
      /** The parsed body as received, before the verify hook (a DSSE envelope when signed). */
      raw: unknown;
      /** Ids of the trusted keys whose signatures verified; empty when unsigned. */
      signedBy: string[];
    };

export interface PullOptions {
  currentEtag: string | null;
  storedGeneration: number | null;
  nodeId: string;
  signal: AbortSignal;
  /** Long-poll: ask the server to hold the request up to this long (`Prefer: wait=N`). Ignored for file://. */
  waitSeconds?: number;
}

export interface DesiredStateSourceOptions {
  /** URL template; `{nodeId}` is replaced by the URL-encoded node id. https://, http:// (loopback) or file://. */
  url: string;
  /** Needed for http(s) URLs; its timeoutMs is the request timeout and it decides which URLs are allowed. */
  httpClient?: HttpClient;
  /** Request timeout (config source.timeoutSeconds); default the client's. Long-poll time is added on top. */
  timeoutMs?: number;
  /** Largest body accepted (config source.maxBodyBytes). */
  maxBodyBytes: number;
  logger?: Logger;
  /**
   * Signature hook, run on the parsed body before schema validation. Returns the payload to
   * validate (e.g. the document inside a DSSE envelope) or throws to reject. A thrown SourceError
   * keeps its code; anything else becomes SIGNATURE_INVALID. Not called on 304 / unchanged files.
   */
  verify?: (raw: unknown) => unknown;
  /** trust.*: when set, only DSSE envelopes signed by `threshold` of these keys are accepted. */
  trust?: TrustSettings;
  /**
   * The document in force, for the rollback and mix-and-match checks; when absent, only the
   * generation in PullOptions.storedGeneration is compared.
   */
  storedDocument?: () => DesiredStateDocument | null;
  /** Clock for expiresAt (tests). */
  now?: () => number;
}

/** Bytes of a non-2xx body quoted in the error (enough for a proxy's one-line reason). */
const ERROR_SNIPPET_BYTES = 512;

export class DesiredStateSource {
  readonly #template: string;
  readonly #client: HttpClient | undefined;
  readonly #maxBodyBytes: number;
  readonly #timeoutMs: number | undefined;
  readonly #logger: Logger | undefined;
  readonly #verify: ((raw: unknown) => unknown) | undefined;
  readonly #trust: TrustSettings | undefined;
  readonly #storedDocument: (() => DesiredStateDocument | null) | undefined;
  readonly #now: () => number;

  constructor(opts: DesiredStateSourceOptions) {
    this.#template = opts.url;
    this.#client = opts.httpClient;
    this.#maxBodyBytes = opts.maxBodyBytes;
    this.#timeoutMs = opts.timeoutMs;
    this.#logger = opts.logger;
    this.#verify = opts.verify;
    this.#trust = opts.trust;
    this.#storedDocument = opts.storedDocument;
    this.#now = opts.now ?? Date.now;
    if (!(opts.maxBodyBytes > 0)) throw new ConfigError([`source.maxBodyBytes must be positive, got ${opts.maxBodyBytes}`]);
    // Check the URL at start-up (with a placeholder node id) so a forbidden URL is a configuration
    // error the operator sees at once, never a connection attempt.
    let probe: URL;
    try {
      probe = new URL(expandNodeIdTemplate(opts.url, 'node'));
      checkUrlAllowed(probe, opts.httpClient?.allowInsecureHttp ?? false);
    } catch (err) {
      throw new ConfigError([`source.url: ${err instanceof UrlNotAllowedError ? err.message : `not a valid URL: ${opts.url}`}`]);
    }
    if ((probe.protocol === 'https:' || probe.protocol === 'http:') && opts.httpClient === undefined) {
      throw new Error('DesiredStateSource: an http(s) source needs an httpClient');
    }
  }

  /** The URL pulled for `nodeId`. */
  urlFor(nodeId: string): URL {
    return new URL(expandNodeIdTemplate(this.#template, nodeId));
  }

  /** The URL as it may be logged or stored (DesiredStateEntry.source). */
  describe(nodeId: string): string {
    return redactUrl(this.urlFor(nodeId));
  }

  async pull(opts: PullOptions): Promise<PullResult> {
    const url = this.urlFor(opts.nodeId);
    if (opts.signal.aborted) throw new SourceError('DESIRED_STATE_UNAVAILABLE', `pull of ${redactUrl(url)} aborted`, { cause: opts.signal.reason });
    let fetched: { raw: unknown; etag: string | null } | 'not-modified';
    const applied: { waitApplied?: number } = {};
    if (url.protocol === 'file:') fetched = await this.#pullFile(url, opts);
    else fetched = await this.#pullHttp(url, opts, applied);
    if (fetched === 'not-modified') return { kind: 'not-modified', ...applied };
    const { document, signedBy } = await this.#accept(fetched.raw, opts, url.protocol === 'file:');
    return { kind: 'updated', document, etag: fetched.etag, raw: fetched.raw, signedBy, ...applied };
  }

  async #accept(raw: unknown, opts: PullOptions, local: boolean): Promise<{ document: DesiredStateDocument; signedBy: string[] }> {
    const opened = openSigned(raw, this.#trust);
    let payload: unknown = opened.payload;
    const signed = this.#trust !== undefined;
    if (this.#verify !== undefined) {
      try {
        payload = await this.#verify(payload);
      } catch (err) {
        if (err instanceof SourceError) throw err;
        throw new SourceError('SIGNATURE_INVALID', err instanceof Error ? err.message : String(err), { cause: err });
      }
    }
    const checked = validateDesiredState(payload);
    if (!checked.ok) {
      const n = checked.issues.length;
      throw new SourceError('DESIRED_STATE_INVALID', `schema: ${n} issue${n === 1 ? '' : 's'}:\n${formatIssues(checked.issues)}`);
    }
    const doc = checked.value;
    // "*" ("this host") is for hand-written local files; a fetched document must name the node, so
    // one fleet-wide file served to every node by mistake is refused rather than applied everywhere.
    checkWildcardNode(doc, signed, local, this.#trust?.allowWildcardNode ?? false, opts.nodeId);
    if (doc.nodeId !== opts.nodeId && doc.nodeId !== ANY_NODE_ID) {
      throw new SourceError('DESIRED_STATE_INVALID', `document is for node ${doc.nodeId}, this node is ${opts.nodeId}`);
    }
    // The document in force when the caller gave it, else only its generation (rollback check alone).
    const inForce = this.#storedDocument?.() ?? null;
    const stored = inForce ?? (opts.storedGeneration !== null ? { generation: opts.storedGeneration } : null);
    const freshness = checkFreshness(doc, stored, signed, this.#now());
    // Same generation, other content, unsigned: the publisher changed the content without bumping
    // the generation (typically a fix of a typo). Accepted on purpose: refusing would leave the
    // node on the broken version until the next bump. Noted, because it is unusual.
    if (freshness === 'newer' && stored !== null && doc.generation === stored.generation && opts.currentEtag !== null) {
      this.#logger?.info({ generation: doc.generation }, 'desired state changed without a generation bump; accepting it');
    }
    return { document: doc, signedBy: opened.signedBy };
  }

  async #pullHttp(url: URL, opts: PullOptions, applied: { waitApplied?: number }): Promise<{ raw: unknown; etag: string | null } | 'not-modified'> {
    const client = this.#client;
    if (client === undefined) throw new Error('DesiredStateSource: an http(s) source needs an httpClient');
    const shown = redactUrl(url);
    const waitSeconds = Math.max(0, Math.floor(opts.waitSeconds ?? 0));
    const headers: Record<string, string> = {
      accept: 'application/json',
      // No compression support here: ask for identity so a body is always plain JSON.
      'accept-encoding': 'identity',
    };
    if (opts.currentEtag !== null) headers['if-none-match'] = opts.currentEtag;
    if (waitSeconds > 0) headers.prefer = `wait=${waitSeconds}`;
    try {
      return await client.request(
        url,
        {
          method: 'GET',
          headers,
          signal: opts.signal,
          extraTimeoutMs: waitSeconds * 1000,
          ...(this.#timeoutMs !== undefined ? { timeoutMs: this.#timeoutMs } : {}),
        },
        (res, answeredBy) => {
          const waitApplied = parsePreferenceAppliedWait(headerValue(res.headers, 'preference-applied'));
          if (waitApplied !== undefined) applied.waitApplied = waitApplied;
          // After a redirect the error names both: the URL configured and the host that answered.
          return this.#handleResponse(res, answeredBy.href === url.href ? shown : `${shown} (redirected to ${redactUrl(answeredBy)})`, opts);
        },
      );
    } catch (err) {
      if (err instanceof SourceError) throw err;
      if (err instanceof UrlNotAllowedError) throw new SourceError('DESIRED_STATE_UNAVAILABLE', err.message, { cause: err });
      if (opts.signal.aborted && !(err instanceof RequestDeadlineError)) {
        throw new SourceError('DESIRED_STATE_UNAVAILABLE', `GET ${shown} aborted`, { cause: err });
      }
      throw new SourceError('DESIRED_STATE_UNAVAILABLE', `GET ${shown}: ${describeNetworkError(err)}`, { cause: err });
    }
  }

  async #handleResponse(res: HttpResponse, shown: string, opts: PullOptions): Promise<{ raw: unknown; etag: string | null } | 'not-modified'> {
    const status = res.statusCode;
    if (status === 304) {
      // Nothing to read: a 304 has no body by definition, and whatever a broken server sends is
      // dropped unread (never parsed, never validated).
      await res.body.dump();
      return 'not-modified';
    }
    if (status < 200 || status > 299) {
      const reason = `${status}${res.statusText ? ` ${res.statusText}` : ''}`;
      if (status === 404) {
        await res.body.dump();
        throw new SourceError('DESIRED_STATE_UNAVAILABLE', `GET ${shown}: ${reason}: no desired state published for node ${opts.nodeId}`);
      }
      const snippet = await readSnippet(res.body, ERROR_SNIPPET_BYTES);
      const retryAfterMs = status === 429 || status === 503 ? parseRetryAfter(headerValue(res.headers, 'retry-after')) : undefined;
      const message = `GET ${shown}: ${reason}${snippet ? `: ${snippet}` : ''}`;
      throw new SourceError('DESIRED_STATE_UNAVAILABLE', message, retryAfterMs === undefined ? {} : { retryAfterMs });
    }
    const body = await this.#readCapped(res);
    return { raw: parseJson(body), etag: headerValue(res.headers, 'etag') ?? null };
  }

  async #readCapped(res: HttpResponse): Promise<Buffer> {
    const cap = this.#maxBodyBytes;
    const tooLarge = () => new SourceError('DESIRED_STATE_INVALID', `body larger than ${cap} bytes (source.maxBodyBytes)`);
    const declared = headerValue(res.headers, 'content-length');
    if (declared !== undefined && /^\d+$/.test(declared) && Number(declared) > cap) {
      discardBody(res.body); // do not download what we will refuse
      throw tooLarge();
    }
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of res.body) {
      const buf: Buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array);
      total += buf.length;
      // Leaving the loop destroys the stream, which aborts the transfer.
      if (total > cap) throw tooLarge();
      chunks.push(buf);
    }
    return Buffer.concat(chunks, total);
  }

  async #pullFile(url: URL, opts: PullOptions): Promise<{ raw: unknown; etag: string | null } | 'not-modified'> {
    let path: string;
    try {
      path = fileURLToPath(url);
    } catch (err) {
      throw new SourceError('DESIRED_STATE_UNAVAILABLE', `${url.href}: ${describeNetworkError(err)}`, { cause: err });
    }
    const cap = this.#maxBodyBytes;
    let content: Buffer;
    let mtimeMs: number;
    let fh: FileHandle;
    try {
      fh = await open(path, 'r');
    } catch (err) {
      throw fileError(path, err);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new SourceError('DESIRED_STATE_UNAVAILABLE', `${path}: not a regular file`);
      if (st.size > cap) throw new SourceError('DESIRED_STATE_INVALID', `body larger than ${cap} bytes (source.maxBodyBytes): ${path} is ${st.size} bytes`);
      mtimeMs = st.mtimeMs;
      // Read at most cap+1 bytes whatever stat said: the file may grow between stat and read.
      const buf = Buffer.alloc(Math.min(cap + 1, Math.max(st.size, 0) + 64 * 1024));
      let filled = 0;
      for (;;) {
        if (opts.signal.aborted) throw new SourceError('DESIRED_STATE_UNAVAILABLE', `read of ${path} aborted`, { cause: opts.signal.reason });
        if (filled === buf.length) break;
        const { bytesRead } = await fh.read(buf, filled, buf.length - filled, filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      if (filled > cap) throw new SourceError('DESIRED_STATE_INVALID', `body larger than ${cap} bytes (source.maxBodyBytes): ${path} grew while being read`);
      content = buf.subarray(0, filled);
    } catch (err) {
      if (err instanceof SourceError) throw err;
      throw fileError(path, err);
    } finally {
      await fh.close().catch(() => undefined);
    }
    // The "ETag" of a file: size, mtime and the content digest. Unchanged means the same digest:
    // a `touch` or a rewrite with identical bytes is not news, so the comparison is on the digest
    // alone; size and mtime are kept in the string so `status` shows which version is in force.
    const digest = createHash('sha256').update(content).digest('hex');
    const etag = `"file-${content.length}-${Math.trunc(mtimeMs)}-${digest}"`;
    if (opts.currentEtag !== null && fileDigestOf(opts.currentEtag) === digest) return 'not-modified';
    return { raw: parseJson(content), etag };
  }
}

/** `Preference-Applied: wait=N` (RFC 7240) -> N; undefined when absent or without a wait. */
export function parsePreferenceAppliedWait(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /(?:^|[,;\s])wait\s*=\s*"?(\d+)"?/i.exec(value);
  return m?.[1] === undefined ? undefined : Number(m[1]);
}

function fileDigestOf(etag: string): string | undefined {
  return /^"file-\d+-\d+-([0-9a-f]{64})"$/.exec(etag)?.[1];
}

function fileError(path: string, err: unknown): SourceError {
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ENOENT') return new SourceError('DESIRED_STATE_UNAVAILABLE', `file not found: ${path}`, { cause: err });
  return new SourceError('DESIRED_STATE_UNAVAILABLE', `${path}: ${describeNetworkError(err)}`, { cause: err });
}

function parseJson(body: Buffer): unknown {
  let text = body.toString('utf8');
  // A UTF-8 BOM (Windows editors) is not JSON, but it is not worth refusing a document for.
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new SourceError('DESIRED_STATE_INVALID', `not JSON: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}
