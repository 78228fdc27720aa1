/**
 * `npm run bench`: runs every benchmark and prints one table (figure, baseline measured in the same
 * run, ratio, the issue's target and ok/MISS). A number never makes it exit non-zero; a bench that
 * cannot run (no dockerd, no image) says why and the others go on.
 *
 *   npm run bench                 all of them (about 4-6 minutes)
 *   npm run bench -- plan store   only the named sections (writes, rss, cycle, plan, store, apply, scrape, trust, gc, compose)
 *
 * BENCH_WRITES_IDLE_SECONDS=60 shortens the idle-writes window (default 300 s, the issue's figure).
 *
 * BENCH_AGENT_NODE_OPTIONS=... passes Node flags to the agent process of the RSS bench only (the bare
 * node baseline never gets them), to size a fix such as --max-semi-space-size=2.
 * Needs dockerd and persys-test/busybox:1 (scripts/testbed/docker.sh) for rss, cycle and apply.
 * Everything it creates is labelled dev.persys.node-id=bench-<pid>-<rand> and removed at the end,
 * also after a failure or Ctrl-C; leftovers of earlier runs whose process is gone are removed first.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { benchApply } from './apply.js';
import { benchCompose } from './compose.js';
import { benchNoChangeCycle } from './cycle.js';
import { benchGc } from './gc.js';
import { dockerUnavailableReason, progress, removeBenchContainers, removeNode, stopAllChildren, type Row, type Section, type Target } from './lib.js';
import { benchPlan } from './plan.js';
import { benchIdleRssEmpty, benchIdleRssFleet, type Fleet } from './rss.js';
import { benchStore } from './store.js';
import { benchTrust } from './trust.js';
import { benchIdleWrites } from './writes.js';

const FLEET_SIZE = 200;
const SECTIONS = ['writes', 'rss', 'cycle', 'plan', 'store', 'apply', 'scrape', 'trust', 'gc', 'compose'] as const;
type SectionName = (typeof SECTIONS)[number];

interface Outcome {
  title: string;
  section?: Section;
  /** Why it did not run. */
  skipped?: string;
  failed?: string;
}

/** Targets for rows of benches that do not state their own (bench/plan.ts, bench/store.ts). */
function targetFor(row: Row): Target | undefined {
  if (row.target) return row.target;
  if (row.name.startsWith('plan()')) return { on: 'value', max: 50, text: '<= 50 ms' };
  if (row.name.startsWith('store write')) return { on: 'value', max: 20, text: '<= 20 ms' };
  return undefined;
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function verdict(row: Row, t: Target | undefined): { ratio: string; target: string; result: string } {
  const ratio = row.baseline && row.baseline.value > 0 ? row.value / row.baseline.value : undefined;
  const ratioText = ratio === undefined ? '' : `${ratio.toFixed(2)}x`;
  if (!t) return { ratio: ratioText, target: '', result: '' };
  const measured = t.on === 'ratio' ? ratio : row.value;
  if (measured === undefined) return { ratio: ratioText, target: t.text, result: 'n/a' };
  return { ratio: ratioText, target: t.text, result: measured <= t.max ? 'ok' : 'MISS' };
}

function printTable(outcomes: Outcome[]): void {
  const header = ['benchmark', 'value', 'unit', 'baseline', 'baseline value', 'ratio', 'target', 'result'];
  const lines: string[][] = [];
  for (const o of outcomes) {
    for (const row of o.section?.rows ?? []) {
      const t = targetFor(row);
      const v = verdict(row, t);
      lines.push([row.name, fmt(row.value), row.unit, row.baseline?.name ?? '', row.baseline ? fmt(row.baseline.value) : '', v.ratio, v.target, v.result]);
    }
  }
  const numeric = new Set([1, 4, 5]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] ?? '').length)));
  const fmtLine = (cells: string[]) =>
    cells
      .map((c, i) => (numeric.has(i) ? c.padStart(widths[i] ?? 0) : c.padEnd(widths[i] ?? 0)))
      .join(' | ')
      .trimEnd();
  const out: string[] = ['', fmtLine(header), widths.map((w) => '-'.repeat(w)).join('-|-')];
  for (const l of lines) out.push(fmtLine(l));
  const extra: string[] = [];
  for (const o of outcomes) {
    if (o.skipped) extra.push(`NOT RUN  ${o.title}: ${o.skipped}`);
    if (o.failed) extra.push(`FAILED   ${o.title}: ${o.failed}`);
    for (const n of o.section?.notes ?? []) extra.push(`note     ${n}`);
  }
  if (extra.length > 0) out.push('', ...extra);
  const misses = lines.filter((l) => l[7] === 'MISS').length;
  const checked = lines.filter((l) => l[7] === 'ok' || l[7] === 'MISS').length;
  out.push('', `${checked - misses}/${checked} targets met${misses > 0 ? ` (${misses} MISS)` : ''}; node ${process.version}, ${new Date().toISOString()}`, '');
  process.stdout.write(out.join('\n'));
}

/** Set once SIGINT/SIGTERM arrived: the remaining sections are not started. */
let interrupted: string | undefined;

async function runSection(title: string, fn: () => Promise<Section>, skipReason?: string): Promise<Outcome> {
  if (interrupted) return { title, skipped: interrupted };
  if (skipReason) {
    progress(`${title}: not run: ${skipReason}`);
    return { title, skipped: skipReason };
  }
  const t0 = Date.now();
  try {
    const section = await fn();
    progress(`${title}: done in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    return { title, section };
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    progress(`${title}: FAILED: ${msg}`);
    return { title, failed: msg };
  }
}

/** bench/scrape.ts is another engineer's; it is run when it has been built. */
async function loadScrape(): Promise<(() => Promise<Row[]>) | string> {
  const file = fileURLToPath(new URL('./scrape.js', import.meta.url));
  if (!existsSync(file)) return 'bench/scrape.ts does not exist yet';
  const mod = (await import(file)) as { benchScrape?: unknown };
  if (typeof mod.benchScrape !== 'function') return 'bench/scrape.ts exports no benchScrape()';
  const fn = mod.benchScrape as () => Promise<Row[]>;
  return fn;
}

function selected(argv: string[]): Set<SectionName> {
  const names = argv.filter((a) => !a.startsWith('-'));
  if (names.length === 0) return new Set(SECTIONS);
  const unknown = names.filter((n) => !(SECTIONS as readonly string[]).includes(n));
  if (unknown.length > 0) throw new Error(`unknown bench section(s) ${unknown.join(', ')}; known: ${SECTIONS.join(', ')}`);
  return new Set(names as SectionName[]);
}

async function main(): Promise<void> {
  const want = selected(process.argv.slice(2));
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    progress(`${sig}: stopping and cleaning up`);
    interrupted = `interrupted by ${sig}`;
    abort.abort(new Error(interrupted));
    process.exitCode = 130;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const signal = abort.signal;

  const workDir = await mkdtemp(join(tmpdir(), 'persys-bench-'));
  const needsDocker = want.has('rss') || want.has('cycle') || want.has('apply') || want.has('writes') || want.has('gc') || want.has('compose');
  const dockerDown = needsDocker ? await dockerUnavailableReason() : undefined;
  const outcomes: Outcome[] = [];
  const started = Date.now();
  let fleet: Fleet | undefined;
  try {
    if (!dockerDown && needsDocker) {
      const stale = await removeBenchContainers('stale').catch((err: unknown) => {
        progress(`could not remove leftovers of earlier bench runs: ${err instanceof Error ? err.message : String(err)}`);
        return 0;
      });
      if (stale > 0) progress(`removed ${stale} container(s) left by earlier bench runs`);
    }
    if (want.has('plan')) outcomes.push(await runSection('plan', async () => ({ rows: await benchPlan(), notes: [] })));
    if (want.has('trust')) outcomes.push(await runSection('trust', async () => ({ rows: await benchTrust(), notes: [] })));
    if (want.has('store')) outcomes.push(await runSection('store', async () => ({ rows: await benchStore(), notes: [] })));
    if (want.has('writes')) outcomes.push(await runSection(`idle disk writes, ${FLEET_SIZE} workloads`, () => benchIdleWrites(FLEET_SIZE, signal), dockerDown));
    if (want.has('rss')) {
      outcomes.push(await runSection('idle RSS, 0 workloads', () => benchIdleRssEmpty(workDir, signal)));
      outcomes.push(
        await runSection(
          `idle RSS, ${FLEET_SIZE} workloads`,
          async () => {
            const r = await benchIdleRssFleet(workDir, FLEET_SIZE, signal);
            fleet = r.fleet;
            return r.section;
          },
          dockerDown,
        ),
      );
    }
    if (want.has('cycle')) {
      outcomes.push(
        await runSection(
          'no-change reconcile cycle',
          async () => {
            const r = await benchNoChangeCycle(fleet, FLEET_SIZE, workDir, signal);
            fleet = r.fleet;
            return r.section;
          },
          dockerDown,
        ),
      );
    }
    // The 200 containers are done with; the apply bench should not share the engine with them.
    if (fleet) {
      progress(`removing the ${fleet.size} containers of ${fleet.nodeId}`);
      await removeNode(fleet.nodeId).catch((err: unknown) => progress(`removal failed (retried at the end): ${String(err)}`));
    }
    if (want.has('apply')) outcomes.push(await runSection('apply', () => benchApply(workDir, signal), dockerDown));
    if (want.has('gc')) outcomes.push(await runSection('gc, 200 workloads + 50 orphans', () => benchGc(signal), dockerDown));
    if (want.has('compose')) outcomes.push(await runSection('compose app, 10 services', () => benchCompose(signal), dockerDown));
    if (want.has('scrape')) {
      const scrape = await loadScrape().catch((err: unknown) => `cannot load bench/scrape.js: ${err instanceof Error ? err.message : String(err)}`);
      if (typeof scrape === 'string') outcomes.push({ title: 'scrape', skipped: scrape });
      else outcomes.push(await runSection('scrape', async () => ({ rows: await scrape(), notes: [] })));
    }
  } finally {
    await stopAllChildren();
    if (!dockerDown && needsDocker) {
      await removeBenchContainers('own').then(
        (n) => n > 0 && progress(`removed ${n} remaining bench container(s)`),
        (err: unknown) => progress(`CLEANUP FAILED: ${err instanceof Error ? err.message : String(err)}`),
      );
    }
    await rm(workDir, { recursive: true, force: true });
  }
  progress(`all benches took ${((Date.now() - started) / 1000).toFixed(0)} s`);
  printTable(outcomes);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
