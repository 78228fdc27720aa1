/**
 * A real fleet server for tests: node:https (or node:http with `tls: null`) on 127.0.0.1 only.
 *
 *   GET  /fleet/nodes/:nodeId.json     the node's desired state; strong ETag = sha256 of the body;
 *                                      304 on a matching If-None-Match; `Prefer: wait=N` holds a
 *                                      matching request until the document changes or N s pass
 *                                      (then 304), answering with `Preference-Applied: wait=N`.
 *   POST /fleet/nodes/:nodeId/status   a status report; 204 and recorded (reports(), waitForReport()).
 *
 * Every request is recorded (requests()). Faults are programmable per node for both sides.
 *
 *   const pki = await makeThrowawayCa(dir);
 *   const fleet = await startFleetServer({ tls: { certFile: pki.serverCert, keyFile: pki.serverKey } });
 *   fleet.setDocument('edge-7', doc);
 *   // agent config: source.url = fleet.sourceUrl, status.url = fleet.statusUrl, source.caFile = pki.caCert
 *   await fleet.waitForReport('edge-7', (r) => r.observedGeneration === doc.generation, 30_000);
 *   await fleet.close();
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';

export interface FleetServerTls {
  certFile: string;
  keyFile: string;
  /** CA that signs acceptable client certificates (needed with requireClientCert). */
  caFile?: string;
  /** mTLS: refuse the handshake without a client certificate signed by caFile. */
  requireClientCert?: boolean;
}

export interface FleetServerOptions {
  /** TLS material, or null for plain http (loopback only, like everything here). */
  tls: FleetServerTls | null;
  /** Port on `host`; 0 (default) picks a free one. */
  port?: number;
  /** Loopback address to listen on (default 127.0.0.1; 127.0.0.2 plays "another host" in redirect tests). */
  host?: string;
  /** When set, every request must carry `Authorization: Bearer <token>` (else 401). */
  requireToken?: string;
  /** Upper bound of a long-poll hold, whatever the client asks. Default 300 s. */
  maxWaitSeconds?: number;
}

/** A fault on the desired-state side: an HTTP answer of your choice, or a 200 whose body is not JSON. */
export type DocumentFault =
  | {
      status: number;
      /** Retry-After header value (seconds or an HTTP date). */
      retryAfter?: number | string;
      body?: string;
      /** Send the body without Content-Length (chunked), e.g. to test a streaming size cap. */
      chunked?: boolean;
      /** Location header (a redirect with a 3xx status). */
      location?: string;
    }
  | { invalidJson: true }
  | RawFault;

/**
 * Any answer at all (hostile-server tests: a reset mid-body, a stall after the headers, an endless
 * body): the handler owns the response. The request stays recorded with status 0 unless the
 * handler calls `answered(status)` once it has sent the status line.
 */
export interface RawFault {
  respond: (req: http.IncomingMessage, res: http.ServerResponse, answered: (status: number) => void) => void;
}

/** A fault on the status side: the POST is answered with this instead of 204 and NOT recorded as a report. */
export type StatusFault =
  | {
      status: number;
      retryAfter?: number | string;
      body?: string;
      /** Location header (a redirect with a 3xx status). */
      location?: string;
    }
  | RawFault;

export type JsonObject = Record<string, unknown>;

export interface RecordedRequest {
  method: string;
  /** Path without the query string. */
  path: string;
  kind: 'document' | 'status' | 'other';
  /** Decoded node id from the path (null for other paths). */
  nodeId: string | null;
  status: number;
  receivedAt: number;
  durationMs: number;
  headers: {
    ifNoneMatch?: string;
    prefer?: string;
    authorization?: string;
    accept?: string;
    contentType?: string;
  };
  /** CN of the client certificate, when one was presented. */
  clientCertCn?: string;
  /** The parsed JSON body of a status POST (also when a fault rejected it); undefined otherwise. */
  json?: unknown;
}

export interface FleetServer {
  /** `https://127.0.0.1:PORT` (or http://). */
  readonly origin: string;
  readonly port: number;
  /** Desired-state URL template with `{nodeId}` (for source.url). */
  readonly sourceUrl: string;
  /** Status URL template with `{nodeId}` (for status.url). */
  readonly statusUrl: string;
  documentUrl(nodeId: string): string;
  statusUrlFor(nodeId: string): string;
  /** Publishes a document (objects are JSON-encoded, strings served verbatim); returns its ETag. Wakes held long-polls. */
  setDocument(nodeId: string, doc: unknown): string;
  /** Unpublishes (GET answers 404). Wakes held long-polls. */
  deleteDocument(nodeId: string): void;
  /** Current ETag of a node's document, or undefined. */
  etag(nodeId: string): string | undefined;
  setFault(nodeId: string, fault: DocumentFault | null): void;
  setStatusFault(nodeId: string, fault: StatusFault | null): void;
  setRequiredToken(token: string | null): void;
  /**
   * Serves another certificate from now on (e.g. one from a CA the agent does not trust) and drops
   * open connections, so the next request makes a new handshake. TLS servers only.
   */
  setTls(tls: { certFile: string; keyFile: string }): Promise<void>;
  /** Recorded requests in arrival order, optionally filtered; status is 0 while a request is unanswered (held). */
  requests(filter?: { nodeId?: string; kind?: RecordedRequest['kind']; method?: string }): RecordedRequest[];
  clearRequests(): void;
  /** Accepted status reports of a node, oldest first. */
  reports(nodeId: string): JsonObject[];
  /** First accepted report of `nodeId` (already received or future) matching `predicate`; rejects after timeoutMs. */
  waitForReport(nodeId: string, predicate: (report: JsonObject) => boolean, timeoutMs: number): Promise<JsonObject>;
  /** First answered request (already or in future) matching `predicate`; rejects after timeoutMs. */
  waitForRequest(predicate: (req: RecordedRequest) => boolean, timeoutMs: number): Promise<RecordedRequest>;
  /** Number of GETs currently held by long-poll. */
  heldRequests(): number;
  close(): Promise<void>;
}

const DOC_PATH = /^\/fleet\/nodes\/([^/]+)\.json$/;
const STATUS_PATH = /^\/fleet\/nodes\/([^/]+)\/status$/;
const MAX_STATUS_BODY = 16 * 1024 * 1024;

interface StoredDoc {
  body: Buffer;
  etag: string;
}

interface Waiter {
  nodeId: string;
  wake: () => void;
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

/** RFC 9110 If-None-Match: `*`, or a list of (possibly weak) tags; weak comparison applies. */
function etagMatches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (ifNoneMatch === undefined) return false;
  const trimmed = ifNoneMatch.trim();
  if (trimmed === '*') return true;
  const strip = (t: string) => t.trim().replace(/^W\//, '');
  return trimmed.split(',').some((t) => strip(t) === strip(etag));
}

/** `Prefer: wait=N` (RFC 7240), possibly among other preferences. */
function preferWaitSeconds(prefer: string | undefined): number {
  if (prefer === undefined) return 0;
  const m = /(?:^|[,;\s])wait\s*=\s*"?(\d+)"?/i.exec(prefer);
  return m?.[1] === undefined ? 0 : Number(m[1]);
}

export async function startFleetServer(opts: FleetServerOptions): Promise<FleetServer> {
  const docs = new Map<string, StoredDoc>();
  const faults = new Map<string, DocumentFault>();
  const statusFaults = new Map<string, StatusFault>();
  const reports = new Map<string, JsonObject[]>();
  const recorded: RecordedRequest[] = [];
  const entries = new WeakMap<http.ServerResponse, RecordedRequest>();
  const waiters = new Set<Waiter>();
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let requiredToken = opts.requireToken ?? null;
  const maxWait = opts.maxWaitSeconds ?? 300;

  const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const receivedAt = Date.now();
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const docMatch = DOC_PATH.exec(path);
    const statusMatch = STATUS_PATH.exec(path);
    const rawId = docMatch?.[1] ?? statusMatch?.[1];
    let nodeId: string | null = null;
    if (rawId !== undefined) {
      try {
        nodeId = decodeURIComponent(rawId);
      } catch {
        nodeId = rawId;
      }
    }
    const entry: RecordedRequest = {
      method: req.method ?? '',
      path,
      kind: docMatch ? 'document' : statusMatch ? 'status' : 'other',
      nodeId,
      status: 0,
      receivedAt,
      durationMs: 0,
      headers: {},
    };
    const hv = (name: string) => header(req, name);
    for (const [key, name] of [
      ['ifNoneMatch', 'if-none-match'],
      ['prefer', 'prefer'],
      ['authorization', 'authorization'],
      ['accept', 'accept'],
      ['contentType', 'content-type'],
    ] as const) {
      const v = hv(name);
      if (v !== undefined) entry.headers[key] = v;
    }
    const socket = req.socket as TLSSocket;
    if (typeof socket.getPeerCertificate === 'function') {
      const cn = socket.getPeerCertificate()?.subject?.CN;
      if (typeof cn === 'string' && cn !== '') entry.clientCertCn = cn;
    }
    // Recorded on arrival and completed in send(), synchronously with the answer: a test that has
    // just received a response always finds its request here, status included.
    recorded.push(entry);
    entries.set(res, entry);
    res.on('close', () => {
      // A client that gave up (e.g. mid-hold) is recorded with status 0 = no answer sent.
      if (entry.status === 0) {
        entry.durationMs = Date.now() - receivedAt;
        events.emit('request', entry);
      }
    });

    if (requiredToken !== null && hv('authorization') !== `Bearer ${requiredToken}`) {
      send(res, 401, { 'www-authenticate': 'Bearer', 'content-type': 'text/plain' }, 'missing or wrong bearer token\n');
      return;
    }
    if (docMatch && nodeId !== null) {
      if (req.method !== 'GET') {
        send(res, 405, { allow: 'GET' }, '');
        return;
      }
      req.resume();
      serveDocument(req, res, nodeId, true);
      return;
    }
    if (statusMatch && nodeId !== null) {
      if (req.method !== 'POST') {
        send(res, 405, { allow: 'POST' }, '');
        return;
      }
      acceptStatus(req, res, nodeId, entry);
      return;
    }
    req.resume();
    send(res, 404, { 'content-type': 'text/plain' }, 'not found\n');
  };

  function send(res: http.ServerResponse, status: number, headers: Record<string, string>, body: string | Buffer, chunked = false): void {
    if (res.headersSent || res.destroyed) return;
    const entry = entries.get(res);
    if (entry !== undefined) {
      entry.status = status;
      entry.durationMs = Date.now() - entry.receivedAt;
    }
    const buf = typeof body === 'string' ? Buffer.from(body) : body;
    if (!chunked && status !== 304 && status !== 204) headers['content-length'] = String(buf.length);
    res.writeHead(status, headers);
    if (status === 304 || status === 204) res.end();
    else res.end(buf);
    if (entry !== undefined) events.emit('request', entry);
  }

  function serveDocument(req: http.IncomingMessage, res: http.ServerResponse, nodeId: string, mayWait: boolean): void {
    const fault = faults.get(nodeId);
    if (fault !== undefined) {
      if ('respond' in fault) {
        respondRaw(fault, req, res);
        return;
      }
      if ('invalidJson' in fault) {
        send(res, 200, { 'content-type': 'application/json' }, '{"apiVersion": "persys.dev/v1", this is not json');
        return;
      }
      const headers: Record<string, string> = { 'content-type': 'text/plain' };
      if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter);
      if (fault.location !== undefined) headers.location = fault.location;
      send(res, fault.status, headers, fault.body ?? `fault ${fault.status}\n`, fault.chunked === true);
      return;
    }
    const doc = docs.get(nodeId);
    if (doc === undefined) {
      send(res, 404, { 'content-type': 'text/plain' }, `no desired state for ${nodeId}\n`);
      return;
    }
    const inm = header(req, 'if-none-match');
    if (etagMatches(inm, doc.etag)) {
      const wait = Math.min(preferWaitSeconds(header(req, 'prefer')), maxWait);
      if (mayWait && wait > 0) {
        hold(req, res, nodeId, wait);
        return;
      }
      send(res, 304, { etag: doc.etag, 'cache-control': 'no-cache' }, '');
      return;
    }
    send(res, 200, { 'content-type': 'application/json', etag: doc.etag, 'cache-control': 'no-cache' }, doc.body);
  }

  function respondRaw(fault: RawFault, req: http.IncomingMessage, res: http.ServerResponse): void {
    const entry = entries.get(res);
    fault.respond(req, res, (status) => {
      if (entry === undefined || entry.status !== 0) return;
      entry.status = status;
      entry.durationMs = Date.now() - entry.receivedAt;
      events.emit('request', entry);
    });
  }

  function hold(req: http.IncomingMessage, res: http.ServerResponse, nodeId: string, waitSeconds: number): void {
    res.setHeader('preference-applied', `wait=${waitSeconds}`);
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      waiters.delete(waiter);
      // Re-evaluate from scratch: the document may have changed, gone, or a fault been set.
      if (!res.destroyed) serveDocument(req, res, nodeId, false);
    };
    const waiter: Waiter = { nodeId, wake: finish };
    const timer = setTimeout(finish, waitSeconds * 1000);
    waiters.add(waiter);
    res.on('close', () => {
      done = true;
      clearTimeout(timer);
      waiters.delete(waiter);
    });
  }

  function wakeNode(nodeId: string): void {
    for (const w of [...waiters]) if (w.nodeId === nodeId) w.wake();
  }

  function acceptStatus(req: http.IncomingMessage, res: http.ServerResponse, nodeId: string, entry: RecordedRequest): void {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooBig = false;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_STATUS_BODY) tooBig = true;
      else chunks.push(chunk);
    });
    req.on('end', () => {
      if (tooBig) {
        send(res, 413, { 'content-type': 'text/plain' }, 'status report too large\n');
        return;
      }
      let json: unknown;
      try {
        json = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
      } catch (err) {
        send(res, 400, { 'content-type': 'text/plain' }, `not JSON: ${err instanceof Error ? err.message : String(err)}\n`);
        return;
      }
      entry.json = json;
      const fault = statusFaults.get(nodeId);
      if (fault !== undefined) {
        if ('respond' in fault) {
          respondRaw(fault, req, res);
          return;
        }
        const headers: Record<string, string> = { 'content-type': 'text/plain' };
        if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter);
        if (fault.location !== undefined) headers.location = fault.location;
        send(res, fault.status, headers, fault.body ?? `fault ${fault.status}\n`);
        return;
      }
      if (typeof json !== 'object' || json === null || Array.isArray(json)) {
        send(res, 400, { 'content-type': 'text/plain' }, 'status report must be a JSON object\n');
        return;
      }
      const report = json as JsonObject;
      let list = reports.get(nodeId);
      if (list === undefined) reports.set(nodeId, (list = []));
      list.push(report);
      send(res, 204, {}, '');
      events.emit('report', nodeId, report);
    });
    req.on('error', () => res.destroy());
  }

  let server: http.Server | https.Server;
  if (opts.tls === null) {
    server = http.createServer(handler);
  } else {
    const [cert, key, ca] = await Promise.all([
      readFile(opts.tls.certFile),
      readFile(opts.tls.keyFile),
      opts.tls.caFile === undefined ? Promise.resolve(undefined) : readFile(opts.tls.caFile),
    ]);
    if (opts.tls.requireClientCert === true && ca === undefined) throw new Error('startFleetServer: requireClientCert needs tls.caFile');
    server = https.createServer(
      {
        cert,
        key,
        ...(ca !== undefined ? { ca } : {}),
        requestCert: opts.tls.requireClientCert === true,
        rejectUnauthorized: opts.tls.requireClientCert === true,
      },
      handler,
    );
  }
  // Tests only ever talk to loopback.
  const host = opts.host ?? '127.0.0.1';
  if (!host.startsWith('127.')) throw new Error(`startFleetServer: ${host} is not a loopback address`);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const origin = `${opts.tls === null ? 'http' : 'https'}://${host}:${port}`;

  function waitFor<T>(event: 'report' | 'request', check: () => T | undefined, timeoutMs: number, what: () => string): Promise<T> {
    const now = check();
    if (now !== undefined) return Promise.resolve(now);
    return new Promise<T>((resolve, reject) => {
      const onEvent = () => {
        const found = check();
        if (found !== undefined) {
          cleanup();
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`fleet server: timed out after ${timeoutMs} ms waiting for ${what()}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        events.off(event, onEvent);
      };
      events.on(event, onEvent);
    });
  }

  const api: FleetServer = {
    origin,
    port,
    sourceUrl: `${origin}/fleet/nodes/{nodeId}.json`,
    statusUrl: `${origin}/fleet/nodes/{nodeId}/status`,
    documentUrl: (nodeId) => `${origin}/fleet/nodes/${encodeURIComponent(nodeId)}.json`,
    statusUrlFor: (nodeId) => `${origin}/fleet/nodes/${encodeURIComponent(nodeId)}/status`,
    setDocument(nodeId, doc) {
      const body = Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc));
      const etag = `"${createHash('sha256').update(body).digest('hex')}"`;
      docs.set(nodeId, { body, etag });
      wakeNode(nodeId);
      return etag;
    },
    deleteDocument(nodeId) {
      docs.delete(nodeId);
      wakeNode(nodeId);
    },
    etag: (nodeId) => docs.get(nodeId)?.etag,
    setFault(nodeId, fault) {
      if (fault === null) faults.delete(nodeId);
      else faults.set(nodeId, fault);
    },
    setStatusFault(nodeId, fault) {
      if (fault === null) statusFaults.delete(nodeId);
      else statusFaults.set(nodeId, fault);
    },
    setRequiredToken(token) {
      requiredToken = token;
    },
    async setTls(tls) {
      if (!(server instanceof https.Server)) throw new Error('setTls: this fleet server speaks plain http');
      const [cert, key] = await Promise.all([readFile(tls.certFile), readFile(tls.keyFile)]);
      server.setSecureContext({ cert, key });
      server.closeAllConnections();
    },
    requests(filter) {
      return recorded.filter(
        (r) =>
          (filter?.nodeId === undefined || r.nodeId === filter.nodeId) &&
          (filter?.kind === undefined || r.kind === filter.kind) &&
          (filter?.method === undefined || r.method === filter.method),
      );
    },
    clearRequests() {
      recorded.length = 0;
    },
    reports: (nodeId) => [...(reports.get(nodeId) ?? [])],
    waitForReport(nodeId, predicate, timeoutMs) {
      return waitFor(
        'report',
        () => (reports.get(nodeId) ?? []).find(predicate),
        timeoutMs,
        () => {
          const got = reports.get(nodeId) ?? [];
          return `a matching report from ${nodeId} (got ${got.length}: seq ${got.map((r) => String(r.seq)).join(', ') || 'none'})`;
        },
      );
    },
    waitForRequest(predicate, timeoutMs) {
      return waitFor('request', () => recorded.find((r) => r.status !== 0 && predicate(r)), timeoutMs, () => `a matching request (got ${recorded.length})`);
    },
    heldRequests: () => waiters.size,
    async close() {
      for (const w of [...waiters]) w.wake();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
  return api;
}
