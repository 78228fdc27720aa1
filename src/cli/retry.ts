import { AgentUnreachableError, callAgent } from '../api/client.js';
import type { WorkloadStatus } from '../spec/status-report.js';
import { parseArgs, UsageError } from './args.js';
import { socketFromArgs, workloadMessage } from './status.js';

type Io = { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };

const HELP = `Usage: persys-agent retry ID [--json] [--config FILE] [--stateDir DIR]

Asks the running agent to retry workload ID now: its failed attempts are reset to zero
and it is applied again, also when it gave up or failed terminally (fix the cause first:
a missing host path, a port in use, ...). A container that exited under restart policy
"no" is started again. Prints the workload's state after that attempt.
Pass the --config (or --stateDir) the agent runs with to find its socket.
`;

export async function retryCommand(argv: string[], io: Io): Promise<number> {
  const args = parseArgs(argv, ['config']);
  if (args.options.help) {
    io.stdout.write(HELP);
    return 0;
  }
  const id = args.positionals[0];
  if (id === undefined || args.positionals.length > 1) throw new UsageError('exactly one workload ID is required');
  const socketPath = socketFromArgs(args, io);
  if (!socketPath) return 2;
  try {
    const res = await callAgent(socketPath, 'POST', `/v1/workloads/${encodeURIComponent(id)}/retry`, 120_000);
    if (res.status === 404) {
      io.stderr.write(`persys-agent retry: the agent knows no workload ${JSON.stringify(id)}\n`);
      return 1;
    }
    if (res.status !== 200) {
      io.stderr.write(`persys-agent retry: the agent answered ${res.status}: ${JSON.stringify(res.body)}\n`);
      return 1;
    }
    const w = res.body as WorkloadStatus;
    if (args.options.json) io.stdout.write(`${JSON.stringify(w, null, 2)}\n`);
    else {
      const msg = workloadMessage(w);
      io.stdout.write(`retried ${w.id}: attempts reset; now ${w.phase} (${w.actualState})${msg ? `: ${msg}` : ''}\n`);
    }
    return 0;
  } catch (err) {
    if (err instanceof AgentUnreachableError) {
      io.stderr.write(`persys-agent retry: ${err.message}\n`);
      return 1;
    }
    throw err;
  }
}
