import { existsSync } from 'node:fs';

import { formatReport } from '../doctor/checks.js';
import { runDoctor } from '../doctor/probes.js';
import { parseArgs } from './args.js';

/** Where install.sh puts the config; doctor uses it when no --config is given and it exists. */
export const INSTALLED_CONFIG = '/etc/persys-agent/config.json';

const HELP = `Usage: persys-agent doctor [--config FILE] [--json] [--<config.key>=VALUE ...]

Checks this host as a person would before filing a bug: the config is valid, the node id, the
desired-state source answers with the configured credentials (and its document is valid), the
clock against the server's Date header, docker and libvirt answer, the state dir's owner and mode,
and free disk space. Prints each check with ok / fail / skip and, for a failure, the fix.
Without --config it uses ${INSTALLED_CONFIG} when that exists. Exit 0 when nothing failed, else 1.
`;

export async function doctorCommand(argv: string[], io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  const args = parseArgs(argv, ['config']);
  if (args.options.help) {
    io.stdout.write(HELP);
    return 0;
  }
  const given = typeof args.options.config === 'string' ? args.options.config : undefined;
  const configFile = given ?? (existsSync(INSTALLED_CONFIG) ? INSTALLED_CONFIG : undefined);
  const report = await runDoctor({ ...(configFile ? { configFile } : {}), env: process.env, flags: args.configFlags });
  io.stdout.write(args.options.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  return report.ok ? 0 : 1;
}
