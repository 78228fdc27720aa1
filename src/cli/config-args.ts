import { loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors/index.js';
import type { ParsedArgs } from './args.js';

/** Loads the config from --config, PERSYS_* env and config flags; a bad config is reported and exits 2. */
export function configFromArgs(args: ParsedArgs, stderr: NodeJS.WritableStream): Config | null {
  try {
    const file = typeof args.options.config === 'string' ? args.options.config : undefined;
    return loadConfig({ ...(file ? { file } : {}), env: process.env, flags: args.configFlags });
  } catch (err) {
    if (err instanceof ConfigError) {
      stderr.write(`persys-agent: ${err.message}\n`);
      return null;
    }
    throw err;
  }
}
