/**
 * Publisher tools: `keygen`, `sign` and `verify` (DSSE v1 over ed25519). `verify` runs the same
 * checks the agent runs on a pulled document, so a publisher sees a refusal before the fleet does.
 */
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ConfigError, SourceError } from '../errors/index.js';
import { formatIssues, validateDesiredState } from '../spec/validate.js';
import { checkFreshness, openSigned } from '../trust/desired-state-trust.js';
import { DESIRED_STATE_PAYLOAD_TYPE, keyIdOf, loadPrivateKey, loadPublicKeys, signEnvelope } from '../trust/dsse.js';
import { parseArgs, UsageError } from './args.js';

type Io = { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };

const KEYGEN_HELP = `Usage: persys-agent keygen --out DIR [--name NAME]

Writes an ed25519 key pair: DIR/NAME.key (private, mode 0600) and DIR/NAME.pub (public),
NAME defaulting to "signing". Prints the public key and its id. Never overwrites a key.
Put the .pub file (or its PEM text) in the agents' trust.publicKeys.
`;

const SIGN_HELP = `Usage: persys-agent sign --key KEY[,KEY...] [--expires DURATION] [--out FILE] FILE

Validates the desired-state document FILE and writes a DSSE envelope signed with each KEY
(several keys for a rotation or a threshold) to --out, or to stdout. --expires (e.g. 90m,
24h, 7d) sets the payload's expiresAt that far from now. An invalid document is not signed.
`;

const VERIFY_HELP = `Usage: persys-agent verify --key PUB[,PUB...] [--threshold N] FILE

Checks the envelope FILE as the agent would: the signatures (N distinct trusted keys, default 1),
the payload type, the document's schema and its expiresAt. Exit 0 when the agent would accept it.
`;

/** "90s", "30m", "24h", "7d" -> milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+)(s|m|h|d)$/.exec(text.trim());
  if (!m) throw new UsageError(`--expires: ${JSON.stringify(text)} is not a duration like 90m, 24h or 7d`);
  const n = Number(m[1]);
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's' | 'm' | 'h' | 'd'];
  if (n <= 0) throw new UsageError('--expires must be positive');
  return n * unit;
}

const list = (v: string | boolean | undefined, flag: string): string[] => {
  if (typeof v !== 'string' || v.trim() === '') throw new UsageError(`${flag} is required`);
  return v.split(',').map((s) => s.trim()).filter((s) => s !== '');
};

async function readJson(file: string): Promise<unknown> {
  return JSON.parse(await readFile(file, 'utf8')) as unknown;
}

export async function keygenCommand(argv: string[], io: Io): Promise<number> {
  const args = parseArgs(argv, ['out', 'name']);
  if (args.options.help) {
    io.stdout.write(KEYGEN_HELP);
    return 0;
  }
  const out = args.options.out;
  if (typeof out !== 'string') throw new UsageError('--out DIR is required');
  const name = typeof args.options.name === 'string' ? args.options.name : 'signing';
  if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new UsageError('--name must be a plain file name');
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const dir = resolve(out);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const keyFile = join(dir, `${name}.key`);
  const pubFile = join(dir, `${name}.pub`);
  const pubPem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  try {
    // 'wx': never replace an existing key, which would orphan every host trusting it.
    await writeFile(keyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), { mode: 0o600, flag: 'wx' });
    await writeFile(pubFile, pubPem, { mode: 0o644, flag: 'wx' });
  } catch (err) {
    io.stderr.write(`persys-agent keygen: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  io.stdout.write(`private key: ${keyFile} (mode 0600, keep it off the hosts)\npublic key:  ${pubFile}\nkey id:      ${keyIdOf(publicKey)}\n\n${pubPem}`);
  return 0;
}

export async function signCommand(argv: string[], io: Io): Promise<number> {
  const args = parseArgs(argv, ['key', 'expires', 'out']);
  if (args.options.help) {
    io.stdout.write(SIGN_HELP);
    return 0;
  }
  const keyFiles = list(args.options.key, '--key KEY');
  const file = args.positionals[0];
  if (file === undefined || args.positionals.length > 1) throw new UsageError('exactly one FILE is required');
  const expiresMs = typeof args.options.expires === 'string' ? parseDuration(args.options.expires) : undefined;
  let doc: unknown;
  try {
    doc = await readJson(file);
  } catch (err) {
    io.stderr.write(`${file}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  if (expiresMs !== undefined && typeof doc === 'object' && doc !== null && !Array.isArray(doc)) {
    doc = { ...doc, expiresAt: new Date(Date.now() + expiresMs).toISOString() };
  }
  const checked = validateDesiredState(doc);
  if (!checked.ok) {
    io.stderr.write(`${file}: not signed: invalid desired state:\n${formatIssues(checked.issues)}\n`);
    return 1;
  }
  let keys;
  try {
    keys = keyFiles.map((f) => ({ privateKey: loadPrivateKey(f) }));
  } catch (err) {
    io.stderr.write(`persys-agent sign: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  // The payload is the document as given (plus expiresAt), not the validator's output: what the
  // publisher wrote is what is signed.
  const envelope = signEnvelope(Buffer.from(JSON.stringify(doc)), DESIRED_STATE_PAYLOAD_TYPE, keys);
  const text = `${JSON.stringify(envelope, null, 2)}\n`;
  if (typeof args.options.out === 'string') {
    await writeFile(args.options.out, text, { mode: 0o644 });
    const ids = keys.map((k) => keyIdOf(createPublicKey(k.privateKey)));
    io.stderr.write(`signed generation ${checked.value.generation} with ${ids.join(', ')}${checked.value.expiresAt ? `, expires ${checked.value.expiresAt}` : ''}: ${args.options.out}\n`);
  } else io.stdout.write(text);
  return 0;
}

export async function verifyCommand(argv: string[], io: Io): Promise<number> {
  const args = parseArgs(argv, ['key', 'threshold']);
  if (args.options.help) {
    io.stdout.write(VERIFY_HELP);
    return 0;
  }
  const pubs = list(args.options.key, '--key PUB');
  const file = args.positionals[0];
  if (file === undefined || args.positionals.length > 1) throw new UsageError('exactly one FILE is required');
  const threshold = typeof args.options.threshold === 'string' ? Number(args.options.threshold) : 1;
  if (!Number.isInteger(threshold) || threshold < 1) throw new UsageError('--threshold must be a positive integer');
  try {
    const keys = loadPublicKeys(pubs, '--key');
    if (threshold > keys.length) throw new UsageError(`--threshold ${threshold} is more than the ${keys.length} distinct keys given`);
    const opened = openSigned(await readJson(file), { keys, threshold, allowWildcardNode: true });
    const checked = validateDesiredState(opened.payload);
    if (!checked.ok) throw new SourceError('DESIRED_STATE_INVALID', `schema:\n${formatIssues(checked.issues)}`);
    checkFreshness(checked.value, null, true, Date.now());
    const d = checked.value;
    io.stdout.write(
      `${file}: OK: node ${d.nodeId}, generation ${d.generation}, ${d.workloads.length} workload${d.workloads.length === 1 ? '' : 's'}, ` +
        `signed by ${opened.signedBy.join(', ')}${d.expiresAt ? `, expires ${d.expiresAt}` : ''}\n`,
    );
    return 0;
  } catch (err) {
    if (err instanceof UsageError) throw err;
    const code = err instanceof SourceError ? `${err.code}: ` : '';
    const msg = err instanceof ConfigError ? err.issues.join('; ') : err instanceof Error ? err.message : String(err);
    io.stderr.write(`${file}: refused: ${code}${msg}\n`);
    return 1;
  }
}
