import * as v from 'valibot';
import type { ReportBlock } from '../runtime.js';

const d = v.description;

const shorten = (s: string, max: number) => (s.length > max ? `${s.slice(0, Math.floor(max / 2))} … ${s.slice(-Math.floor(max / 2))}` : s);

/** The status report's `container` block: the record's crash evidence, as Docker reported it. */
export const containerReportBlock: ReportBlock = {
  key: 'container',
  description: 'Container facts (container workloads).',
  schema: v.object({
    exitCode: v.pipe(v.optional(v.nullable(v.number())), d('Exit code of the last run; null while running.')),
    oomKilled: v.pipe(v.optional(v.boolean()), d('Whether the kernel killed it for exceeding its memory limit.')),
    restartCount: v.pipe(v.optional(v.number()), d('Restarts by the Docker restart policy.')),
    startedAt: v.pipe(v.optional(v.nullable(v.string())), d('When the container last started (as Docker reports it).')),
    finishedAt: v.pipe(v.optional(v.nullable(v.string())), d('When the container last stopped (as Docker reports it).')),
    logTail: v.pipe(v.optional(v.array(v.string())), d('Last log lines, included when the container failed.')),
  }),
  build: (f) => (f.evidence ? { ...f.evidence } : undefined),
  // Log tails are the bulkiest evidence: five lines of at most 200 characters stay.
  shrink(block) {
    const tail = block.logTail;
    if (!Array.isArray(tail)) return block;
    return { ...block, logTail: tail.slice(-5).map((l) => shorten(String(l), 200)) };
  },
};
