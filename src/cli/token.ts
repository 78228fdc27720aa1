/** `persys-agent token --dir DIR NODE_ID | --admin`: prints a new token; only its HMAC is stored. */
import { parseArgs } from 'node:util';
import { issueToken } from '../control-plane/auth.js';
import { NODE_ID_PATTERN } from '../spec/desired-state.js';
import { UsageError } from './args.js';
import type { CommandIo } from './validate.js';

export const TOKEN_USAGE = `usage: persys-agent token --dir DIR NODE_ID
       persys-agent token --dir DIR --admin

Prints a new bearer token for the node (or the admin) on stdout and stores only its HMAC (keyed
with DIR/server-secret) in DIR/tokens.json. A second call replaces the old token at once.
Give the node's token to its agent as source.tokenFile; the admin token to publish and the page.
`;

export async function tokenCommand(args: string[], io: CommandIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { dir: { type: 'string' }, admin: { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h', default: false } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(TOKEN_USAGE);
    return 0;
  }
  if (values.dir === undefined) throw new UsageError('--dir DIR is required');
  if (values.admin && positionals.length > 0) throw new UsageError('give either NODE_ID or --admin, not both');
  if (!values.admin && positionals.length !== 1) throw new UsageError('NODE_ID (or --admin) is required, exactly one');
  const nodeId = positionals[0];
  if (nodeId !== undefined && (!NODE_ID_PATTERN.test(nodeId) || nodeId === '*')) {
    throw new UsageError(`NODE_ID must be 1-253 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit; got ${JSON.stringify(nodeId)}`);
  }
  const token = await issueToken(values.dir, nodeId === undefined ? { admin: true } : { nodeId });
  io.stdout.write(`${token}\n`);
  return 0;
}
