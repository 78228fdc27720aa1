#!/usr/bin/env node
import { UsageError } from './args.js';
import { AGENT_VERSION } from '../version.js';

type Io = { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
type Command = { summary: string; run: (args: string[], io: Io) => Promise<number> };

/** Commands load lazily so `validate` and `version` do not pay for dockerode and undici. */
const COMMANDS: Record<string, Command> = {
  run: { summary: 'run the agent (the daemon)', run: async (a, io) => (await import('./run.js')).runCommand(a, io) },
  plan: { summary: 'print what the agent would do now, and why, changing nothing', run: async (a, io) => (await import('./plan.js')).planCommand(a, io) },
  validate: { summary: 'check a desired-state document', run: async (a, io) => (await import('./validate.js')).validateCommand(a, io) },
  status: { summary: 'show the running agent\'s workloads (phase, attempts, errors)', run: async (a, io) => (await import('./status.js')).statusCommand(a, io) },
  doctor: { summary: 'check this host: config, node id, source, clock, engines, state dir, disk', run: async (a, io) => (await import('./doctor.js')).doctorCommand(a, io) },
  retry: { summary: 'retry a failed workload now (resets its attempts)', run: async (a, io) => (await import('./retry.js')).retryCommand(a, io) },
  gc: { summary: 'run a garbage-collection pass now, or --dry-run: what it would remove and why', run: async (a, io) => (await import('./gc.js')).gcCommand(a, io) },
  serve: { summary: 'run the central side: desired state, long-poll, status intake, fleet page', run: async (a, io) => (await import('./serve.js')).serveCommand(a, io) },
  token: { summary: 'make a node (or admin) token for serve; prints it, stores only its hash', run: async (a, io) => (await import('./token.js')).tokenCommand(a, io) },
  publish: { summary: 'publish a desired-state document to serve', run: async (a, io) => (await import('./publish.js')).publishCommand(a, io) },
  keygen: { summary: 'write an ed25519 key pair for signing desired state', run: async (a, io) => (await import('./trust-commands.js')).keygenCommand(a, io) },
  sign: { summary: 'validate a desired-state document and sign it (DSSE envelope)', run: async (a, io) => (await import('./trust-commands.js')).signCommand(a, io) },
  verify: { summary: 'check a signed desired-state document as the agent would', run: async (a, io) => (await import('./trust-commands.js')).verifyCommand(a, io) },
  version: {
    summary: 'print the version',
    run: async (_a, io) => {
      io.stdout.write(`persys-agent ${AGENT_VERSION} (node ${process.version})\n`);
      return 0;
    },
  },
};

export function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `Usage: persys-agent <command> [options]\n\nCommands:\n${lines.join('\n')}\n\nRun 'persys-agent <command> --help' for a command's options.\n`;
}

export async function main(argv: string[], io: Io = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || name === '--help' || name === '-h') {
    io.stdout.write(usage());
    return 0;
  }
  if (name === '--version') return COMMANDS.version!.run([], io);
  const cmd = COMMANDS[name];
  if (!cmd) {
    io.stderr.write(`persys-agent: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return await cmd.run(rest, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`persys-agent ${name}: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`persys-agent: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
