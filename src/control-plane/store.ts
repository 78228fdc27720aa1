/**
 * What `serve` keeps, behind one interface with two implementations: a directory (the default,
 * nothing to install) and PostgreSQL (several `serve` instances share one fleet).
 *
 * Documents are served from an in-memory cache that the store keeps current (fs.watch for the
 * directory, LISTEN/NOTIFY for PostgreSQL), so a GET or a long-poll wake never touches the disk or
 * the database. `onDocumentChanged` fires once per node whose ETag changed, on every instance.
 */
import { createHash } from 'node:crypto';
import type { StatusReport } from '../spec/status-report.js';

export interface StoredDocument {
  /** Exactly the bytes served (a document or a DSSE envelope). */
  body: Buffer;
  /** Strong ETag: `"sha256-<hex of body>"`. */
  etag: string;
  /** Generation of the document (of the envelope's payload); null when it cannot be read. */
  generation: number | null;
  updatedAt: string;
}

export interface StoredReport {
  report: StatusReport;
  receivedAt: string;
}

/** One line of a node's bounded report history (a summary, not the whole report). */
export interface HistoryEntry {
  seq: number;
  receivedAt: string;
  observedGeneration: number | null;
  failing: number;
  workloads: number;
}

export type PutDocumentResult =
  | { ok: true; etag: string; unchanged: boolean }
  | { ok: false; reason: 'generation'; storedGeneration: number };

export type PutReportResult = { stored: true } | { stored: false; storedSeq: number };

export interface FleetStore {
  /** Reads everything needed to serve (documents into the cache) and starts watching. */
  open(): Promise<void>;
  close(): Promise<void>;
  /** The cached document of a node, or undefined. */
  document(nodeId: string): StoredDocument | undefined;
  /** Node ids that have a document. */
  documentNodeIds(): string[];
  /**
   * Stores a document unless its generation is lower than the stored one (rollback guard; equal is
   * allowed, as the agent allows it). Wakes long-polls on every instance.
   */
  putDocument(nodeId: string, body: Buffer, generation: number): Promise<PutDocumentResult>;
  /** Stores a report unless its seq is not above the stored one. */
  putReport(nodeId: string, report: StatusReport, receivedAt: string): Promise<PutReportResult>;
  /** Latest report per node. */
  latestReports(): Promise<Map<string, StoredReport>>;
  history(nodeId: string): Promise<HistoryEntry[]>;
  /** Called with a node id whenever its document's ETag changed (from any instance or a file edit). */
  onDocumentChanged(listener: (nodeId: string) => void): void;
}

/**
 * The in-memory documents both stores serve from, and the change listeners: a listener hears a
 * node only when its ETag really changed (or its document went away).
 */
export class DocumentCache {
  readonly #docs = new Map<string, StoredDocument>();
  readonly #listeners: Array<(nodeId: string) => void> = [];

  get(nodeId: string): StoredDocument | undefined {
    return this.#docs.get(nodeId);
  }

  ids(): string[] {
    return [...this.#docs.keys()];
  }

  onChanged(listener: (nodeId: string) => void): void {
    this.#listeners.push(listener);
  }

  set(nodeId: string, doc: StoredDocument): void {
    const before = this.#docs.get(nodeId)?.etag;
    this.#docs.set(nodeId, doc);
    if (before !== doc.etag) this.#notify(nodeId);
  }

  delete(nodeId: string): void {
    if (this.#docs.delete(nodeId)) this.#notify(nodeId);
  }

  #notify(nodeId: string): void {
    for (const l of this.#listeners) l(nodeId);
  }
}

export function strongEtag(body: Buffer): string {
  return `"sha256-${createHash('sha256').update(body).digest('hex')}"`;
}

/** The generation of a served body: a document's own, or the one inside a DSSE envelope's payload. */
export function generationOf(body: Buffer): number | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  if (isObject(parsed) && typeof parsed.payload === 'string' && typeof parsed.payloadType === 'string') {
    try {
      parsed = JSON.parse(Buffer.from(parsed.payload, 'base64').toString('utf8'));
    } catch {
      return null;
    }
  }
  return isObject(parsed) && typeof parsed.generation === 'number' ? parsed.generation : null;
}

export function historyEntry(report: StatusReport, receivedAt: string): HistoryEntry {
  return {
    seq: report.seq,
    receivedAt,
    observedGeneration: report.observedGeneration,
    failing: report.workloads.filter((w) => w.error !== undefined && w.error !== null).length,
    workloads: report.workloads.length,
  };
}

function isObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** Default number of history entries kept per node. */
export const DEFAULT_HISTORY = 20;
