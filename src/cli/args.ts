/** Flags that take no value; every other `--name` takes one (`--name=v` or `--name v`). */
const BOOLEAN_FLAGS = new Set(['json', 'help', 'dry-run', 'version', 'once']);

export interface ParsedArgs {
  positionals: string[];
  /** Command options (config, desired, json, ...). */
  options: Record<string, string | boolean>;
  /** Dotted config keys given as flags (`--source.url=...`, `--nodeId x`), for the config loader. */
  configFlags: Record<string, string>;
}

/**
 * A small, strict parser: command options are named by the caller; any other flag must be a
 * config key (its validity is checked by the config loader, which names it when it is unknown).
 */
export function parseArgs(argv: readonly string[], commandOptions: readonly string[]): ParsedArgs {
  const out: ParsedArgs = { positionals: [], options: {}, configFlags: {} };
  const known = new Set(commandOptions);
  for (let i = 0; i < argv.length; i++) {
    const tok = argv[i]!;
    if (tok === '--') {
      out.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!tok.startsWith('--') || tok === '-') {
      if (tok === '-h') out.options.help = true;
      else out.positionals.push(tok);
      continue;
    }
    const eq = tok.indexOf('=');
    const name = eq === -1 ? tok.slice(2) : tok.slice(2, eq);
    let value: string | boolean;
    if (eq !== -1) value = tok.slice(eq + 1);
    else if (BOOLEAN_FLAGS.has(name)) value = true;
    else {
      const next = argv[i + 1];
      if (next === undefined || next.startsWith('--')) throw new UsageError(`option --${name} needs a value`);
      value = next;
      i++;
    }
    if (known.has(name) || BOOLEAN_FLAGS.has(name)) out.options[name] = value;
    else out.configFlags[name] = String(value);
  }
  return out;
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}
