/**
 * The PostgreSQL store: several `serve` instances behind any load balancer share one fleet.
 *
 * Documents, latest reports and a bounded history live in three tables (created if missing). Each
 * instance keeps the documents in memory and one dedicated connection on `LISTEN persys_desired`;
 * a publish commits the row and `pg_notify('persys_desired', nodeId)` in one transaction, so every
 * instance (the publishing one included) reloads that row and wakes its held long-polls. If the
 * listening connection drops, the instance reconnects and reloads everything, since it may have
 * missed notifications in between.
 */
import pg from 'pg';
import type { Logger } from '../log.js';
import type { StatusReport } from '../spec/status-report.js';
import {
  DEFAULT_HISTORY,
  DocumentCache,
  historyEntry,
  strongEtag,
  type FleetStore,
  type HistoryEntry,
  type PutDocumentResult,
  type PutReportResult,
  type StoredDocument,
  type StoredReport,
} from './store.js';

const CHANNEL = 'persys_desired';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS persys_documents (
  node_id    text PRIMARY KEY,
  body       bytea NOT NULL,
  etag       text NOT NULL,
  generation bigint NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS persys_reports (
  node_id     text PRIMARY KEY,
  seq         bigint NOT NULL,
  report      jsonb NOT NULL,
  received_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS persys_report_history (
  id          bigserial PRIMARY KEY,
  node_id     text NOT NULL,
  entry       jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS persys_report_history_node ON persys_report_history (node_id, id);
`;

interface DocRow {
  node_id: string;
  body: Buffer;
  etag: string;
  generation: string;
  updated_at: Date;
}

export class PgStore implements FleetStore {
  readonly #pool: pg.Pool;
  readonly #url: string;
  readonly #historyLimit: number;
  readonly #logger: Logger | undefined;
  readonly #docs = new DocumentCache();
  #listener: pg.Client | undefined;
  #closed = false;
  #reconnect: NodeJS.Timeout | undefined;

  constructor(url: string, opts: { historyLimit?: number; logger?: Logger } = {}) {
    this.#url = url;
    this.#pool = new pg.Pool({ connectionString: url, max: 10 });
    // An idle pooled client that dies (server restart) must not crash the process.
    this.#pool.on('error', (err) => this.#logger?.warn({ err: err.message }, 'postgres: idle connection failed'));
    this.#historyLimit = opts.historyLimit ?? DEFAULT_HISTORY;
    this.#logger = opts.logger;
  }

  async open(): Promise<void> {
    // Two instances starting together both run CREATE ... IF NOT EXISTS, which can still race in
    // the catalog; an advisory lock makes it one at a time.
    const client = await this.#pool.connect();
    try {
      await client.query('SELECT pg_advisory_lock(7242001)');
      await client.query(SCHEMA);
    } finally {
      await client.query('SELECT pg_advisory_unlock(7242001)').catch(() => undefined);
      client.release();
    }
    await this.#listen();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#reconnect !== undefined) clearTimeout(this.#reconnect);
    await this.#listener?.end().catch(() => undefined);
    await this.#pool.end();
  }

  document(nodeId: string): StoredDocument | undefined {
    return this.#docs.get(nodeId);
  }

  documentNodeIds(): string[] {
    return this.#docs.ids();
  }

  onDocumentChanged(listener: (nodeId: string) => void): void {
    this.#docs.onChanged(listener);
  }

  async putDocument(nodeId: string, body: Buffer, generation: number): Promise<PutDocumentResult> {
    const etag = strongEtag(body);
    const client = await this.#pool.connect();
    try {
      await client.query('BEGIN');
      // FOR UPDATE: two publishes of one node on two instances are ordered, so the generation
      // check cannot be raced.
      const cur = await client.query<{ etag: string; generation: string }>('SELECT etag, generation FROM persys_documents WHERE node_id = $1 FOR UPDATE', [nodeId]);
      const row = cur.rows[0];
      if (row !== undefined && generation < Number(row.generation)) {
        await client.query('ROLLBACK');
        return { ok: false, reason: 'generation', storedGeneration: Number(row.generation) };
      }
      if (row?.etag === etag) {
        await client.query('ROLLBACK');
        return { ok: true, etag, unchanged: true };
      }
      await client.query(
        `INSERT INTO persys_documents (node_id, body, etag, generation, updated_at) VALUES ($1, $2, $3, $4, now())
         ON CONFLICT (node_id) DO UPDATE SET body = EXCLUDED.body, etag = EXCLUDED.etag, generation = EXCLUDED.generation, updated_at = now()`,
        [nodeId, body, etag, generation],
      );
      await client.query('SELECT pg_notify($1, $2)', [CHANNEL, nodeId]);
      await client.query('COMMIT');
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
    // Our own notification will also arrive; setting it now makes the answer and the cache agree at once.
    this.#docs.set(nodeId, { body, etag, generation, updatedAt: new Date().toISOString() });
    return { ok: true, etag, unchanged: false };
  }

  async putReport(nodeId: string, report: StatusReport, receivedAt: string): Promise<PutReportResult> {
    const res = await this.#pool.query<{ seq: string }>(
      `INSERT INTO persys_reports (node_id, seq, report, received_at) VALUES ($1, $2, $3, $4)
       ON CONFLICT (node_id) DO UPDATE SET seq = EXCLUDED.seq, report = EXCLUDED.report, received_at = EXCLUDED.received_at
       WHERE persys_reports.seq < EXCLUDED.seq
       RETURNING seq`,
      [nodeId, report.seq, JSON.stringify(report), receivedAt],
    );
    if (res.rowCount === 0) {
      const cur = await this.#pool.query<{ seq: string }>('SELECT seq FROM persys_reports WHERE node_id = $1', [nodeId]);
      return { stored: false, storedSeq: Number(cur.rows[0]?.seq ?? report.seq) };
    }
    // History: append, then trim this node to the newest N (one indexed range delete).
    await this.#pool.query('INSERT INTO persys_report_history (node_id, entry) VALUES ($1, $2)', [nodeId, JSON.stringify(historyEntry(report, receivedAt))]);
    await this.#pool.query(
      `DELETE FROM persys_report_history WHERE node_id = $1
         AND id <= (SELECT id FROM persys_report_history WHERE node_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)`,
      [nodeId, this.#historyLimit],
    );
    return { stored: true };
  }

  async latestReports(): Promise<Map<string, StoredReport>> {
    const res = await this.#pool.query<{ node_id: string; report: StatusReport; received_at: Date }>('SELECT node_id, report, received_at FROM persys_reports');
    return new Map(res.rows.map((r) => [r.node_id, { report: r.report, receivedAt: r.received_at.toISOString() }]));
  }

  async history(nodeId: string): Promise<HistoryEntry[]> {
    const res = await this.#pool.query<{ entry: HistoryEntry }>('SELECT entry FROM persys_report_history WHERE node_id = $1 ORDER BY id', [nodeId]);
    return res.rows.map((r) => r.entry);
  }

  async #listen(): Promise<void> {
    const client = new pg.Client({ connectionString: this.#url });
    client.on('error', (err) => {
      this.#logger?.warn({ err: err.message }, 'postgres: LISTEN connection failed; reconnecting');
      this.#scheduleReconnect();
    });
    client.on('end', () => this.#scheduleReconnect());
    client.on('notification', (msg) => {
      if (msg.channel === CHANNEL && msg.payload !== undefined) void this.#reloadOne(msg.payload);
    });
    await client.connect();
    await client.query(`LISTEN ${CHANNEL}`);
    this.#listener = client;
    // Load after LISTEN: a publish in between is then both loaded here and notified (harmless twice).
    await this.#reloadAll();
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#reconnect !== undefined) return;
    this.#listener = undefined;
    this.#reconnect = setTimeout(() => {
      this.#reconnect = undefined;
      this.#listen().catch((err: unknown) => {
        this.#logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'postgres: reconnect failed; trying again');
        this.#scheduleReconnect();
      });
    }, 1000);
  }

  async #reloadAll(): Promise<void> {
    const res = await this.#pool.query<DocRow>('SELECT node_id, body, etag, generation, updated_at FROM persys_documents');
    for (const r of res.rows) this.#docs.set(r.node_id, rowToDoc(r));
  }

  async #reloadOne(nodeId: string): Promise<void> {
    try {
      const res = await this.#pool.query<DocRow>('SELECT node_id, body, etag, generation, updated_at FROM persys_documents WHERE node_id = $1', [nodeId]);
      const row = res.rows[0];
      if (row === undefined) {
        this.#docs.delete(nodeId);
      } else this.#docs.set(nodeId, rowToDoc(row));
    } catch (err) {
      this.#logger?.warn({ err: err instanceof Error ? err.message : String(err), nodeId }, 'postgres: reloading a published document failed');
    }
  }
}

function rowToDoc(r: DocRow): StoredDocument {
  return { body: r.body, etag: r.etag, generation: Number(r.generation), updatedAt: r.updated_at.toISOString() };
}
