import { apiSocketPath, AgentUnreachableError, callAgent } from '../api/client.js';
import type { StatusReport, WorkloadStatus } from '../spec/status-report.js';
import { parseArgs } from './args.js';
import { formatBytes, formatCpus } from '../resources/units.js';
import { configFromArgs } from './config-args.js';

type Io = { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };

const HELP = `Usage: persys-agent status [--json] [--config FILE] [--stateDir DIR]

Asks the running agent (over its control socket, <stateDir>/agent.sock) for its status:
one line per workload with its phase, what the runtime reports, failed attempts and the
last message or error. --json prints the full status report the agent sends upstream.
Pass the --config (or --stateDir) the agent runs with to find its socket.
`;

/** The socket of the agent the given --config / --stateDir / PERSYS_* describe; null after a config error. */
export function socketFromArgs(args: ReturnType<typeof parseArgs>, io: Io): string | null {
  const config = configFromArgs(args, io.stderr);
  return config ? apiSocketPath(config.stateDir) : null;
}

function cell(s: string, width: number): string {
  return s.length > width ? `${s.slice(0, width - 1)}…` : s.padEnd(width);
}

/** One line a person reads: the error (code and the engine's words) or the message, and what happens next. */
export function workloadMessage(w: WorkloadStatus): string {
  const parts: string[] = [w.error ? `${w.error.code}: ${w.error.message}` : w.message];
  if (w.retry?.nextRetryAt) parts.push(`next attempt ${w.retry.nextRetryAt}`);
  if (w.retry?.gaveUp) parts.push('gave up (persys-agent retry ID, or a new retryToken/revision)');
  return parts.filter((p) => p !== '').join('; ').replace(/\s+/g, ' ');
}

/** The human table: id, type, phase, actual, attempts, message. */
export function formatStatus(r: StatusReport): string {
  const lines: string[] = [];
  lines.push(`node ${r.nodeId}  agent ${r.agentVersion}  generation ${r.observedGeneration ?? 'none'}  ${r.workloads.length} workload(s)`);
  for (const [name, s] of Object.entries(r.node.runtimes)) lines.push(`runtime ${name}: ${s}`);
  const { allocatable: alloc, committed } = r.node;
  if (alloc?.memoryBytes !== undefined || alloc?.cpus !== undefined) {
    const fig = (k: 'cpus' | 'memoryBytes', f: (n: number) => string) => (alloc[k] !== undefined ? `${f(committed?.[k] ?? 0)} of ${f(alloc[k])}` : undefined);
    lines.push(`committed: ${[fig('cpus', formatCpus), fig('memoryBytes', formatBytes) && `${fig('memoryBytes', formatBytes)} memory`].filter(Boolean).join(', ')} allocatable`);
  }
  for (const c of r.node.conditions ?? []) if (c.status) lines.push(`node condition ${c.type}: ${c.reason}; new workloads are not admitted`);
  if (r.sync.lastError) lines.push(`desired state: ${r.sync.lastError.code}: ${r.sync.lastError.message}`);
  if (r.sync.desiredExpired) lines.push(`desired state: EXPIRED at ${r.sync.desiredExpiresAt ?? '?'}: its workloads keep running, but no fresh document has arrived`);
  if (r.sync.signedBy && r.sync.signedBy.length > 0) lines.push(`signed by: ${r.sync.signedBy.join(', ')}`);
  if (r.workloads.length === 0) {
    lines.push('no workloads');
    return lines.join('\n') + '\n';
  }
  const idW = Math.min(32, Math.max(2, ...r.workloads.map((w) => w.id.length)));
  const header = `${cell('ID', idW)}  ${cell('TYPE', 9)}  ${cell('PHASE', 10)}  ${cell('ACTUAL', 10)}  ${cell('ATTEMPTS', 8)}  MESSAGE`;
  lines.push('', header);
  for (const w of r.workloads) {
    const msg = workloadMessage(w);
    lines.push(
      `${cell(w.id, idW)}  ${cell(w.type, 9)}  ${cell(w.phase, 10)}  ${cell(w.actualState, 10)}  ${cell(String(w.retry?.attempts ?? 0), 8)}  ${msg.length > 160 ? `${msg.slice(0, 159)}…` : msg}`,
    );
  }
  return lines.join('\n') + '\n';
}

export async function statusCommand(argv: string[], io: Io): Promise<number> {
  const args = parseArgs(argv, ['config']);
  if (args.options.help) {
    io.stdout.write(HELP);
    return 0;
  }
  const socketPath = socketFromArgs(args, io);
  if (!socketPath) return 2;
  try {
    const res = await callAgent(socketPath, 'GET', '/v1/status', 30_000);
    if (res.status !== 200) {
      io.stderr.write(`persys-agent status: the agent answered ${res.status}: ${JSON.stringify(res.body)}\n`);
      return 1;
    }
    const report = res.body as StatusReport;
    io.stdout.write(args.options.json ? `${JSON.stringify(report, null, 2)}\n` : formatStatus(report));
    return 0;
  } catch (err) {
    if (err instanceof AgentUnreachableError) {
      io.stderr.write(`persys-agent status: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
