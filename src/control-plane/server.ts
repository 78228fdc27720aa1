/**
 * `persys-agent serve`: the reference central side, on node:http / node:https.
 *
 * Why no framework: the server has six routes, and the part that matters (holding thousands of
 * GETs open cheaply, answering each exactly once, bounding them, shedding them on shutdown) is
 * plain socket and timer handling that a router adds nothing to. node:https also gives the client
 * certificate (mTLS) directly. No dependency means nothing extra to audit or to install.
 *
 *   GET  /v1/nodes/{id}/desired   node (own) or admin; strong ETag, 304, `Prefer: wait=N` long-poll
 *   POST /v1/nodes/{id}/status    node (own) or admin; capped, gzip, validated, seq-ordered
 *   PUT  /v1/nodes/{id}/desired   admin; validated, generation must not go down
 *   GET  /v1/nodes                admin; the fleet overview as JSON (`?filter=failing|stale|behind`)
 *   GET  /v1/nodes/{id}/history   admin; the node's bounded report history
 *   GET  /                        admin; the overview page
 *   GET  /metrics                 admin; Prometheus text
 *   GET  /healthz                 anyone; "ok"
 */
import { readFile } from 'node:fs/promises';
import * as http from 'node:http';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import type { Logger } from '../log.js';
import { NODE_ID_PATTERN, ANY_NODE_ID } from '../spec/desired-state.js';
import { statusReport, type StatusReport } from '../spec/status-report.js';
import { validateDesiredState, validateWith, type ValidationIssue } from '../spec/validate.js';
import { authorize, nodeIdFromCertificate, type Action, type Principal, type TokenTable } from './auth.js';
import { etagMatches, HeldRequests, preferWaitSeconds } from './long-poll.js';
import { createServeMetrics, type ServeMetrics } from './metrics.js';
import { filterOverview, fleetOverview, NODE_STATES, type NodeOverview, type NodeState, type OverviewFilter } from './overview.js';
import { renderOverviewPage } from './page.js';
import type { FleetStore } from './store.js';

const gunzipAsync = promisify(gunzip);

export interface ControlPlaneOptions {
  store: FleetStore;
  tokens: TokenTable;
  logger: Logger;
  /** host:port; port 0 picks a free one. */
  host: string;
  port: number;
  tls?: { certFile: string; keyFile: string; clientCaFile?: string };
  /** Longest hold granted, whatever the client asks (default 90 s: below the ~100 s CDNs allow). */
  maxWaitSeconds: number;
  /** Most GETs held at once; beyond it a request is answered at once (default 10,000). */
  maxHeld: number;
  /** Largest status body, compressed and decompressed. */
  maxStatusBytes: number;
  /** Largest desired-state body on PUT. */
  maxDocumentBytes: number;
  /** A node is stale after 3 heartbeats without a report. */
  heartbeatSeconds: number;
  /** Checks a DSSE envelope on PUT and refuses unsigned documents; undefined: signatures not required. */
  verifyEnvelope?: (envelope: unknown) => { ok: true; payload: unknown } | { ok: false; reason: string };
}

export interface ControlPlane {
  readonly url: string;
  readonly port: number;
  readonly held: HeldRequests;
  readonly metrics: ServeMetrics;
  close(): Promise<void>;
}

type Route = 'desired-get' | 'desired-put' | 'status' | 'nodes' | 'history' | 'page' | 'metrics' | 'healthz' | 'other';

const NODE_PATH = /^\/v1\/nodes\/([^/]+)\/(desired|status|history)$/;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly issues?: ValidationIssue[],
  ) {
    super(message);
  }
}

export async function startControlPlane(opts: ControlPlaneOptions): Promise<ControlPlane> {
  const { store, tokens, logger } = opts;
  const held = new HeldRequests(opts.maxHeld);
  let closing = false;
  const nodesByState = async (): Promise<Record<NodeState, number>> => {
    const counts = Object.fromEntries(NODE_STATES.map((s) => [s, 0])) as Record<NodeState, number>;
    for (const n of await overview()) counts[n.state]++;
    return counts;
  };
  const metrics = createServeMetrics({ heldRequests: () => held.count, nodesByState });
  store.onDocumentChanged((nodeId) => {
    const n = held.wake(nodeId);
    if (n > 0) metrics.wakes.inc(n);
  });

  async function overview(): Promise<NodeOverview[]> {
    const published = new Map<string, number | null>();
    for (const id of store.documentNodeIds()) published.set(id, store.document(id)?.generation ?? null);
    return fleetOverview({ published, reports: await store.latestReports(), now: new Date(), heartbeatSeconds: opts.heartbeatSeconds });
  }

  async function principalOf(req: http.IncomingMessage): Promise<Principal | null> {
    const auth = req.headers.authorization;
    if (auth !== undefined) {
      const bearer = /^Bearer\s+(\S+)$/i.exec(auth);
      // Basic with the token as password: how a browser sends it (the page answers 401 with a Basic challenge).
      const basic = /^Basic\s+(\S+)$/i.exec(auth);
      let token: string | undefined = bearer?.[1];
      if (token === undefined && basic?.[1] !== undefined) {
        const decoded = Buffer.from(basic[1], 'base64').toString('utf8');
        token = decoded.slice(decoded.indexOf(':') + 1);
      }
      // A wrong token is "nobody", even when a client certificate would have named a node.
      return token === undefined || token === '' ? null : tokens.resolve(token);
    }
    const socket = req.socket as Partial<TLSSocket>;
    if (socket.authorized === true && typeof socket.getPeerCertificate === 'function') {
      const nodeId = nodeIdFromCertificate(socket.getPeerCertificate(), (s) => NODE_ID_PATTERN.test(s) && s !== ANY_NODE_ID);
      if (nodeId !== null) return { kind: 'node', nodeId };
    }
    return null;
  }

  async function check(req: http.IncomingMessage, route: Route, action: Action, nodeId?: string): Promise<Principal> {
    const principal = await principalOf(req);
    const decision = authorize(principal, action, nodeId);
    if (decision === 'unauthenticated') throw new HttpError(401, 'a bearer token (or a client certificate naming the node) is required');
    if (decision === 'forbidden') {
      metrics.forbidden.inc({ route });
      throw new HttpError(403, principal?.kind === 'node' ? `node ${principal.nodeId} may not ${action} ${nodeId === undefined ? 'the fleet' : `of node ${nodeId}`}` : 'forbidden');
    }
    return principal as Principal;
  }

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<Route> {
    const url = new URL(req.url ?? '/', 'http://serve');
    const m = NODE_PATH.exec(url.pathname);
    if (m !== null) {
      let nodeId: string;
      try {
        nodeId = decodeURIComponent(m[1] ?? '');
      } catch {
        throw new HttpError(400, 'node id in the path is not valid percent-encoding');
      }
      if (!NODE_ID_PATTERN.test(nodeId) || nodeId === ANY_NODE_ID) throw new HttpError(400, `not a node id: ${JSON.stringify(nodeId.slice(0, 64))}`);
      const what = m[2];
      if (what === 'desired' && (req.method === 'GET' || req.method === 'HEAD')) {
        await check(req, 'desired-get', 'read-desired', nodeId);
        serveDesired(req, res, nodeId);
        return 'desired-get';
      }
      if (what === 'desired' && req.method === 'PUT') {
        await check(req, 'desired-put', 'write-desired', nodeId);
        await putDesired(req, res, nodeId);
        return 'desired-put';
      }
      if (what === 'status' && req.method === 'POST') {
        await check(req, 'status', 'write-status', nodeId);
        const started = performance.now();
        await postStatus(req, res, nodeId);
        metrics.intake.observe((performance.now() - started) / 1000);
        return 'status';
      }
      if (what === 'history' && req.method === 'GET') {
        await check(req, 'history', 'read-fleet');
        sendJson(res, 200, { nodeId, history: await store.history(nodeId) });
        return 'history';
      }
      throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`);
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, `${req.method} is not allowed on ${url.pathname}`);
    switch (url.pathname) {
      case '/healthz':
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return 'healthz';
      case '/v1/nodes': {
        await check(req, 'nodes', 'read-fleet');
        const filter = parseFilter(url.searchParams.get('filter'));
        sendJson(res, 200, { generatedAt: new Date().toISOString(), nodes: filterOverview(await overview(), filter) });
        return 'nodes';
      }
      case '/': {
        try {
          await check(req, 'page', 'read-fleet');
        } catch (err) {
          // A browser asks for credentials on a Basic challenge (user name ignored, password = admin token).
          if (err instanceof HttpError && err.status === 401) res.setHeader('www-authenticate', 'Basic realm="persys fleet", charset="UTF-8"');
          throw err;
        }
        const filter = parseFilter(url.searchParams.get('filter'));
        const html = renderOverviewPage(await overview(), filter, new Date());
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store', 'content-security-policy': "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'" });
        res.end(html);
        return 'page';
      }
      case '/metrics': {
        await check(req, 'metrics', 'read-fleet');
        const text = await metrics.registry.metrics();
        res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text);
        return 'metrics';
      }
      default:
        throw new HttpError(404, `no route ${url.pathname}`);
    }
  }

  function serveDesired(req: http.IncomingMessage, res: http.ServerResponse, nodeId: string): void {
    const asked = preferWaitSeconds(header(req, 'prefer'));
    const wait = Math.min(asked, opts.maxWaitSeconds);
    const ifNoneMatch = header(req, 'if-none-match');
    const answer = (holding: boolean) => {
      // Shutting down: this connection will not be reused; the agent reconnects (to another instance).
      if (closing) res.setHeader('connection', 'close');
      res.setHeader('vary', 'Prefer');
      res.setHeader('cache-control', 'no-cache');
      // Said on every answer to a wait request, so the agent knows at once that this server holds
      // (it goes straight back after a 200 instead of sleeping its poll interval).
      if (holding) res.setHeader('preference-applied', `wait=${wait}`);
      const doc = store.document(nodeId);
      if (doc === undefined) {
        sendJson(res, 404, { error: `no desired state published for node ${nodeId}` });
        return;
      }
      res.setHeader('etag', doc.etag);
      if (etagMatches(ifNoneMatch, doc.etag)) {
        res.writeHead(304).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': doc.body.length });
      res.end(req.method === 'HEAD' ? undefined : doc.body);
    };
    const doc = store.document(nodeId);
    const unchanged = doc === undefined ? true : etagMatches(ifNoneMatch, doc.etag);
    if (wait <= 0 || !unchanged) {
      answer(wait > 0);
      return;
    }
    const ok = held.hold(
      nodeId,
      wait * 1000,
      () => answer(true),
      (drop) => res.on('close', drop),
    );
    // Over the bound: answer now without Preference-Applied, so this agent polls on its interval.
    if (!ok) answer(false);
  }

  async function putDesired(req: http.IncomingMessage, res: http.ServerResponse, nodeId: string): Promise<void> {
    const body = await readBody(req, opts.maxDocumentBytes, false);
    const raw = parseJson(body);
    let payload: unknown = raw;
    if (opts.verifyEnvelope !== undefined) {
      const verified = opts.verifyEnvelope(raw);
      if (!verified.ok) throw new HttpError(400, `signature: ${verified.reason}`);
      payload = verified.payload;
    } else if (isEnvelopeShape(raw)) {
      try {
        payload = JSON.parse(Buffer.from(raw.payload, 'base64').toString('utf8'));
      } catch {
        throw new HttpError(400, 'payload: the envelope payload is not base64 of JSON');
      }
    }
    const checked = validateDesiredState(payload);
    if (!checked.ok) throw new HttpError(400, `the document is not valid (${checked.issues.length} issue${checked.issues.length === 1 ? '' : 's'})`, checked.issues);
    const doc = checked.value;
    if (doc.nodeId !== nodeId) throw new HttpError(400, `nodeId: the document is for node ${doc.nodeId}, the path names ${nodeId}`, [{ path: 'nodeId', message: `must be ${nodeId} (the node in the path)` }]);
    const result = await store.putDocument(nodeId, body, doc.generation);
    if (!result.ok) {
      throw new HttpError(409, `generation: ${doc.generation} is lower than the published generation ${result.storedGeneration} (generation only grows)`, [
        { path: 'generation', message: `must be at least ${result.storedGeneration}, got ${doc.generation}` },
      ]);
    }
    if (!result.unchanged) logger.info({ nodeId, generation: doc.generation, etag: result.etag }, 'desired state published');
    sendJson(res, 200, { nodeId, generation: doc.generation, etag: result.etag, unchanged: result.unchanged });
  }

  async function postStatus(req: http.IncomingMessage, res: http.ServerResponse, nodeId: string): Promise<void> {
    const body = await readBody(req, opts.maxStatusBytes, true);
    const raw = parseJson(body);
    const checked = validateWith(statusReport, raw);
    if (!checked.ok) throw new HttpError(400, `the status report is not valid (${checked.issues.length} issue${checked.issues.length === 1 ? '' : 's'})`, checked.issues);
    const report: StatusReport = checked.value;
    if (report.nodeId !== nodeId) throw new HttpError(400, `nodeId: the report is from node ${report.nodeId}, the path names ${nodeId}`, [{ path: 'nodeId', message: `must be ${nodeId} (the node in the path)` }]);
    const stored = await store.putReport(nodeId, report, new Date().toISOString());
    sendJson(res, 200, stored.stored ? { stored: true, seq: report.seq } : { stored: false, seq: report.seq, storedSeq: stored.storedSeq, reason: 'seq is not above the stored one' });
  }

  async function readBody(req: http.IncomingMessage, cap: number, gzipAllowed: boolean): Promise<Buffer> {
    const encoding = (header(req, 'content-encoding') ?? 'identity').toLowerCase();
    if (encoding !== 'identity' && !(gzipAllowed && encoding === 'gzip')) throw new HttpError(415, `content-encoding ${encoding} is not accepted${gzipAllowed ? ' (identity or gzip)' : ''}`);
    const declared = Number(header(req, 'content-length') ?? NaN);
    if (Number.isFinite(declared) && declared > cap) throw new HttpError(413, `body of ${declared} bytes is larger than ${cap}`);
    const chunks: Buffer[] = [];
    let total = 0;
    for await (const chunk of req) {
      const buf = chunk as Buffer;
      total += buf.length;
      if (total > cap) throw new HttpError(413, `body larger than ${cap} bytes`);
      chunks.push(buf);
    }
    const body = Buffer.concat(chunks, total);
    if (encoding !== 'gzip') return body;
    try {
      return await gunzipAsync(body, { maxOutputLength: cap });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (code === 'ERR_BUFFER_TOO_LARGE') throw new HttpError(413, `decompressed body larger than ${cap} bytes`);
      throw new HttpError(400, `gzip: ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse) => {
    let route: Route = 'other';
    res.on('finish', () => metrics.requests.inc({ route, code: String(res.statusCode) }));
    handle(req, res).then(
      (r) => {
        route = r;
      },
      (err: unknown) => {
        route = routeOf(req);
        if (err instanceof HttpError) {
          if (!res.headersSent) sendJson(res, err.status, { error: err.message, ...(err.issues !== undefined ? { issues: err.issues } : {}) });
          // Drain what the client still sends, so it reads our answer instead of a reset.
          req.resume();
          return;
        }
        logger.error({ err: err instanceof Error ? err.message : String(err), path: req.url }, 'request failed');
        if (!res.headersSent) sendJson(res, 500, { error: 'internal error' });
        else res.destroy();
      },
    );
  };

  let server: http.Server | https.Server;
  if (opts.tls !== undefined) {
    const [cert, key, ca] = await Promise.all([
      readFile(opts.tls.certFile),
      readFile(opts.tls.keyFile),
      opts.tls.clientCaFile !== undefined ? readFile(opts.tls.clientCaFile) : Promise.resolve(undefined),
    ]);
    // With a client CA a certificate is asked for but not required: tokens still work, and a
    // certificate that does not verify simply names nobody.
    server = https.createServer({ cert, key, ...(ca !== undefined ? { ca, requestCert: true, rejectUnauthorized: false } : {}) }, onRequest);
  } else {
    server = http.createServer(onRequest);
  }
  // A held request legitimately lasts maxWaitSeconds; Node's default request timeout would cut it.
  server.requestTimeout = (opts.maxWaitSeconds + 60) * 1000;
  server.headersTimeout = 30_000;
  server.keepAliveTimeout = 75_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  const hostPart = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `${opts.tls !== undefined ? 'https' : 'http'}://${hostPart}:${addr.port}`;

  return {
    url,
    port: addr.port,
    held,
    metrics,
    async close() {
      closing = true;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Held requests end as if their wait had passed, with Connection: close, so each agent asks
      // again at once (another instance behind the load balancer, or this one when it is back).
      held.releaseAll();
      server.closeIdleConnections();
      const force = setTimeout(() => server.closeAllConnections(), 5000);
      await closed;
      clearTimeout(force);
    },
  };
}

function routeOf(req: http.IncomingMessage): Route {
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  const m = NODE_PATH.exec(path);
  if (m !== null) return m[2] === 'status' ? 'status' : m[2] === 'history' ? 'history' : req.method === 'PUT' ? 'desired-put' : 'desired-get';
  if (path === '/') return 'page';
  if (path === '/v1/nodes') return 'nodes';
  if (path === '/metrics') return 'metrics';
  return 'other';
}

function parseFilter(v: string | null): OverviewFilter {
  if (v === null || v === '' || v === 'all') return 'all';
  if (v === 'failing' || v === 'stale' || v === 'behind') return v;
  throw new HttpError(400, `filter must be all, failing, stale or behind, got ${JSON.stringify(v.slice(0, 32))}`);
}

function header(req: http.IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v.join(', ') : v;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function parseJson(body: Buffer): unknown {
  try {
    return JSON.parse(body.toString('utf8')) as unknown;
  } catch (err) {
    throw new HttpError(400, `not JSON: ${err instanceof Error ? err.message : String(err)}`, [{ path: '(root)', message: 'must be JSON' }]);
  }
}

function isEnvelopeShape(x: unknown): x is { payloadType: string; payload: string; signatures: unknown[] } {
  if (typeof x !== 'object' || x === null) return false;
  const o = x as Record<string, unknown>;
  return typeof o.payloadType === 'string' && typeof o.payload === 'string' && Array.isArray(o.signatures);
}
