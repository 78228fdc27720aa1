import { AgentUnreachableError, callAgent } from '../api/client.js';
import type { GcPassResult } from '../gc/collector.js';
import { parseArgs, UsageError } from './args.js';
import { socketFromArgs } from './status.js';

type Io = { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };

const HELP = `Usage: persys-agent gc [--dry-run] [--json] [--config FILE] [--stateDir DIR]

Asks the running agent to run a garbage-collection pass now and prints what it removed
and why: orphans (objects with this node's label that no record and no desired workload
claims, past gc.orphanGraceSeconds), zombies (exited containers of workloads no longer
desired), records of failed workloads the desired state dropped (past
gc.failedRetentionSeconds), images no desired workload references (only over
gc.imageHighThresholdPercent), and VM leftovers. Named volumes are never removed.
--dry-run prints what a pass would remove now, and removes nothing.
--json prints the pass as JSON. Pass the --config (or --stateDir) the agent runs with.
`;

const human = (n: number): string => (n >= 1 << 30 ? `${(n / (1 << 30)).toFixed(1)} GiB` : n >= 1 << 20 ? `${(n / (1 << 20)).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);

/** What a person reads: one line per removal with its reason, then the totals and notes. */
export function formatGcPass(r: GcPassResult): string {
  const verb = r.dryRun ? 'would remove' : 'removed';
  const lines: string[] = [];
  for (const e of r.removed) lines.push(`${verb} ${e.kind} ${e.name && e.kind !== 'image' ? `${e.name} (${e.id.slice(0, 12)})` : e.id}: ${e.reason}`);
  for (const e of r.failed) lines.push(`could not remove ${e.kind} ${e.id}: ${e.error}`);
  lines.push(`${r.dryRun ? 'dry run: ' : ''}${r.removed.length} ${r.dryRun ? 'to remove' : 'removed'}, ${human(r.freedBytes)} ${r.dryRun ? 'to free' : 'freed'}${r.failed.length ? `, ${r.failed.length} failed` : ''}${r.deferred ? `, ${r.deferred} left for the next pass` : ''} (${r.engineCalls} engine calls, ${Math.round(r.durationMs)} ms)`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  return `${lines.join('\n')}\n`;
}

export async function gcCommand(argv: string[], io: Io): Promise<number> {
  const args = parseArgs(argv, ['config']);
  if (args.options.help) {
    io.stdout.write(HELP);
    return 0;
  }
  if (args.positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args.positionals[0])}`);
  const dryRun = args.options['dry-run'] === true;
  const socketPath = socketFromArgs(args, io);
  if (!socketPath) return 2;
  try {
    const res = await callAgent(socketPath, 'POST', `/v1/gc?dryRun=${dryRun}`, 120_000);
    if (res.status !== 200) {
      io.stderr.write(`persys-agent gc: the agent answered ${res.status}: ${JSON.stringify(res.body)}\n`);
      return 1;
    }
    const r = res.body as GcPassResult;
    io.stdout.write(args.options.json ? `${JSON.stringify(r, null, 2)}\n` : formatGcPass(r));
    return r.failed.length > 0 ? 1 : 0;
  } catch (err) {
    if (err instanceof AgentUnreachableError) {
      io.stderr.write(`persys-agent gc: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
