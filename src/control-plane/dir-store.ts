/**
 * The directory store (the default): `DIR/nodes/{nodeId}.json` holds each node's document (edit it
 * by hand, copy it in, or PUT it), `DIR/status/{nodeId}.json` the latest report plus a bounded
 * history. Everything is written to a temporary file and renamed, owner-only.
 *
 * fs.watch on `DIR/nodes` with a short debounce per file keeps the cache current: editors and
 * `cp` write a file in several steps, and a half-written document must not wake anyone. A changed
 * ETag is what counts, so a `touch` wakes nobody.
 */
import { watch, type FSWatcher } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { NODE_ID_PATTERN } from '../spec/desired-state.js';
import type { StatusReport } from '../spec/status-report.js';
import {
  DEFAULT_HISTORY,
  DocumentCache,
  generationOf,
  historyEntry,
  strongEtag,
  type FleetStore,
  type HistoryEntry,
  type PutDocumentResult,
  type PutReportResult,
  type StoredDocument,
  type StoredReport,
} from './store.js';

/** Quiet time after the last change of a file before it is read (editors write in steps). */
const WATCH_DEBOUNCE_MS = 30;

interface StatusFile {
  latest: StoredReport;
  history: HistoryEntry[];
}

export class DirStore implements FleetStore {
  readonly #dir: string;
  readonly #historyLimit: number;
  readonly #docs = new DocumentCache();
  readonly #reports = new Map<string, StatusFile>();
  readonly #pending = new Map<string, NodeJS.Timeout>();
  #watcher: FSWatcher | undefined;
  /** Writes to one node's status file are chained, so two reports never race on the rename. */
  readonly #statusWrites = new Map<string, Promise<unknown>>();

  constructor(dir: string, opts: { historyLimit?: number } = {}) {
    this.#dir = dir;
    this.#historyLimit = opts.historyLimit ?? DEFAULT_HISTORY;
  }

  get nodesDir(): string {
    return join(this.#dir, 'nodes');
  }

  get statusDir(): string {
    return join(this.#dir, 'status');
  }

  async open(): Promise<void> {
    await mkdir(this.nodesDir, { recursive: true, mode: 0o700 });
    await mkdir(this.statusDir, { recursive: true, mode: 0o700 });
    // Watch before the first read, so a file written in between is not missed.
    this.#watcher = watch(this.nodesDir, { persistent: false }, (_event, filename) => {
      if (typeof filename === 'string') this.#schedule(filename);
      else void this.#rescan();
    });
    this.#watcher.on('error', () => undefined);
    await this.#rescan();
    for (const name of await readdir(this.statusDir)) {
      const nodeId = nodeIdOfFile(name);
      if (nodeId === undefined) continue;
      try {
        const parsed = JSON.parse(await readFile(join(this.statusDir, name), 'utf8')) as StatusFile;
        if (parsed.latest?.report !== undefined) this.#reports.set(nodeId, parsed);
      } catch {
        // A broken status file is replaced by the node's next report; it is not worth refusing to start.
      }
    }
  }

  async close(): Promise<void> {
    this.#watcher?.close();
    for (const t of this.#pending.values()) clearTimeout(t);
    this.#pending.clear();
    await Promise.allSettled([...this.#statusWrites.values()]);
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
    const current = this.#docs.get(nodeId);
    if (current?.generation != null && generation < current.generation) {
      return { ok: false, reason: 'generation', storedGeneration: current.generation };
    }
    const etag = strongEtag(body);
    if (current?.etag === etag) return { ok: true, etag, unchanged: true };
    await writeAtomic(join(this.nodesDir, `${nodeId}.json`), body);
    this.#docs.set(nodeId, { body, etag, generation, updatedAt: new Date().toISOString() });
    return { ok: true, etag, unchanged: false };
  }

  async putReport(nodeId: string, report: StatusReport, receivedAt: string): Promise<PutReportResult> {
    const current = this.#reports.get(nodeId);
    if (current !== undefined && report.seq <= current.latest.report.seq) return { stored: false, storedSeq: current.latest.report.seq };
    const history = [...(current?.history ?? []), historyEntry(report, receivedAt)].slice(-this.#historyLimit);
    const next: StatusFile = { latest: { report, receivedAt }, history };
    this.#reports.set(nodeId, next);
    const previous = this.#statusWrites.get(nodeId) ?? Promise.resolve();
    const write = previous.then(() => writeAtomic(join(this.statusDir, `${nodeId}.json`), Buffer.from(JSON.stringify(next))));
    this.#statusWrites.set(nodeId, write.catch(() => undefined));
    await write;
    return { stored: true };
  }

  async latestReports(): Promise<Map<string, StoredReport>> {
    return new Map([...this.#reports].map(([id, f]) => [id, f.latest]));
  }

  async history(nodeId: string): Promise<HistoryEntry[]> {
    return this.#reports.get(nodeId)?.history ?? [];
  }

  #schedule(filename: string): void {
    const nodeId = nodeIdOfFile(filename);
    if (nodeId === undefined) return;
    const t = this.#pending.get(nodeId);
    if (t !== undefined) clearTimeout(t);
    this.#pending.set(
      nodeId,
      setTimeout(() => {
        this.#pending.delete(nodeId);
        void this.#reload(nodeId);
      }, WATCH_DEBOUNCE_MS),
    );
  }

  async #reload(nodeId: string): Promise<void> {
    let body: Buffer;
    try {
      body = await readFile(join(this.nodesDir, `${nodeId}.json`));
    } catch {
      // Removed: the node keeps getting 404; the agent keeps its last good state (never "delete all").
      this.#docs.delete(nodeId);
      return;
    }
    const etag = strongEtag(body);
    if (this.#docs.get(nodeId)?.etag === etag) return;
    this.#docs.set(nodeId, { body, etag, generation: generationOf(body), updatedAt: new Date().toISOString() });
  }

  async #rescan(): Promise<void> {
    const names = await readdir(this.nodesDir).catch(() => [] as string[]);
    await Promise.all(names.map(async (name) => {
      const nodeId = nodeIdOfFile(name);
      if (nodeId !== undefined) await this.#reload(nodeId);
    }));
  }
}

/** `edge-7.json` -> `edge-7`; undefined for temporary files and anything that is not a node id. */
function nodeIdOfFile(name: string): string | undefined {
  if (!name.endsWith('.json')) return undefined;
  const id = name.slice(0, -'.json'.length);
  return NODE_ID_PATTERN.test(id) && id !== '*' ? id : undefined;
}

/** Write to a temporary name (not `*.json`, so the watcher ignores it), fsync, rename over. */
async function writeAtomic(path: string, data: Buffer): Promise<void> {
  const tmp = `${path}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
