import { Agent } from '../agent.js';
import { SocketInUseError } from '../api/server.js';
import { ConfigError } from '../errors/index.js';
import { NodeIdError } from '../identity/node-id.js';
import { StateDirLockedError } from '../store/lock.js';
import { StoreVersionError } from '../store/store.js';
import { createLogger } from '../log.js';
import { ListenError } from '../util/listen-error.js';
import { parseArgs } from './args.js';
import { configFromArgs } from './config-args.js';

const HELP = `Usage: persys-agent run [--config FILE] [--desired FILE] [--<config.key>=VALUE ...]

Runs the agent. Without a config it runs on embedded defaults: desired state from
--desired (default ./desired-state.json, watched; while it is absent nothing is managed
and nothing removed), state in ./.persys-agent/, metrics on 127.0.0.1:9464.
Every config key can also be set as PERSYS_<UPPER_SNAKE> or as a flag (--source.url=...).
`;

/** Start-up failures that are the operator's to fix, reported without a stack trace. */
export const isUsageProblem = (err: unknown): err is Error =>
  err instanceof ConfigError || err instanceof StateDirLockedError || err instanceof ListenError || err instanceof SocketInUseError || err instanceof NodeIdError || err instanceof StoreVersionError;

export async function runCommand(argv: string[], io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  const args = parseArgs(argv, ['config', 'desired']);
  if (args.options.help) {
    io.stdout.write(HELP);
    return 0;
  }
  const config = configFromArgs(args, io.stderr);
  if (!config) return 2;
  const logger = createLogger(config.logLevel);
  const desiredPath = typeof args.options.desired === 'string' ? args.options.desired : './desired-state.json';
  let agent: Agent;
  try {
    agent = await Agent.start({ config, desiredPath, logger });
  } catch (err) {
    // A second agent on the same state dir: a usage problem, not a crash; the first one is untouched.
    // A setting that passed the schema but cannot be used (an unreadable key file, a trust
    // threshold above the number of keys) is still a configuration error. A metrics address or
    // socket that cannot be opened (a port in use), a node-id file that is not a file, a store
    // written by a newer agent, are the host's setup. All: exit 2, one message, no stack.
    if (!isUsageProblem(err)) throw err;
    io.stderr.write(`persys-agent run: ${err.message}\n`);
    return 2;
  }

  return await new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (stopping) {
        logger.warn({ signal: sig }, 'second signal: exiting now');
        process.exit(1);
      }
      stopping = true;
      logger.info({ signal: sig }, 'shutting down');
      agent.stop().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error({ err: err instanceof Error ? err.message : String(err) }, 'shutdown failed');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
}
