/**
 * Per-node auth for `serve`. A caller is a node (by bearer token, or by an mTLS client certificate
 * whose CN or a SAN names it) or the admin (by the admin token). Tokens are stored only as
 * HMAC-SHA256(server secret, token) in `DIR/tokens.json`; the secret is `DIR/server-secret`.
 * Both files are owner-only. A stolen tokens.json without the secret gives nothing to replay.
 *
 * `authorize` is a pure table: a node may read its own document and post its own status; the
 * admin may do everything; nobody else anything.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmod, mkdir, open, readFile, rename, stat } from 'node:fs/promises';
import { join } from 'node:path';

export type Principal = { kind: 'admin' } | { kind: 'node'; nodeId: string };

export type Action = 'read-desired' | 'write-desired' | 'write-status' | 'read-fleet';

export interface TokensFile {
  version: 1;
  /** nodeId -> hex HMAC of that node's token. */
  nodes: Record<string, string>;
  /** hex HMAC of the admin token, or null. */
  admin: string | null;
}

/** The decision table. `nodeId` is the node named in the path (undefined for fleet-wide routes). */
export function authorize(principal: Principal | null, action: Action, nodeId?: string): 'allow' | 'unauthenticated' | 'forbidden' {
  if (principal === null) return 'unauthenticated';
  if (principal.kind === 'admin') return 'allow';
  switch (action) {
    case 'read-desired':
    case 'write-status':
      return nodeId !== undefined && principal.nodeId === nodeId ? 'allow' : 'forbidden';
    case 'write-desired':
    case 'read-fleet':
      return 'forbidden';
  }
}

export function hashToken(secret: Buffer, token: string): string {
  return createHmac('sha256', secret).update(token, 'utf8').digest('hex');
}

export function newToken(): string {
  return `pst_${randomBytes(32).toString('base64url')}`;
}

export function secretPath(dir: string): string {
  return join(dir, 'server-secret');
}

export function tokensPath(dir: string): string {
  return join(dir, 'tokens.json');
}

/** Reads the server secret, creating it (32 random bytes, mode 0600) when absent. */
export async function loadOrCreateSecret(dir: string): Promise<Buffer> {
  const path = secretPath(dir);
  try {
    return await readSecret(path);
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'ENOENT') throw err;
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  try {
    const fh = await open(path, 'wx', 0o600);
    try {
      await fh.writeFile(randomBytes(32).toString('hex'));
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch (err) {
    // Another `token` call created it first: use theirs.
    if ((err as { code?: unknown }).code !== 'EEXIST') throw err;
  }
  return readSecret(path);
}

async function readSecret(path: string): Promise<Buffer> {
  const text = (await readFile(path, 'utf8')).trim();
  if (!/^[0-9a-f]{64}$/.test(text)) throw new Error(`${path}: not a server secret (64 hex digits expected)`);
  return Buffer.from(text, 'hex');
}

export async function readTokensFile(dir: string): Promise<TokensFile> {
  let text: string;
  try {
    text = await readFile(tokensPath(dir), 'utf8');
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return { version: 1, nodes: {}, admin: null };
    throw err;
  }
  const parsed = JSON.parse(text) as Partial<TokensFile>;
  const nodes = typeof parsed.nodes === 'object' && parsed.nodes !== null ? parsed.nodes : {};
  return { version: 1, nodes, admin: typeof parsed.admin === 'string' ? parsed.admin : null };
}

/** Makes a new token for a node (or the admin), replacing any old one; returns it (the only time it exists in clear). */
export async function issueToken(dir: string, who: { admin: true } | { nodeId: string }): Promise<string> {
  const secret = await loadOrCreateSecret(dir);
  const tokens = await readTokensFile(dir);
  const token = newToken();
  const hash = hashToken(secret, token);
  if ('admin' in who) tokens.admin = hash;
  else tokens.nodes[who.nodeId] = hash;
  const path = tokensPath(dir);
  const tmp = `${path}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(`${JSON.stringify(tokens, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await chmod(path, 0o600);
  return token;
}

/**
 * Resolves bearer tokens against tokens.json, re-reading the file when it changed (checked at most
 * once a second), so a `persys-agent token` call takes effect without a restart.
 */
export class TokenTable {
  readonly #dir: string;
  readonly #secret: Buffer;
  #byHash = new Map<string, Principal>();
  #checkedAt = 0;
  #mtimeMs = -1;

  private constructor(dir: string, secret: Buffer) {
    this.#dir = dir;
    this.#secret = secret;
  }

  static async open(dir: string): Promise<TokenTable> {
    const table = new TokenTable(dir, await loadOrCreateSecret(dir));
    await table.#reload();
    return table;
  }

  /** The principal a bearer token stands for, or null. */
  async resolve(token: string): Promise<Principal | null> {
    if (Date.now() - this.#checkedAt >= 1000) await this.#reload();
    const presented = Buffer.from(hashToken(this.#secret, token), 'hex');
    // The map lookup is on an HMAC the caller cannot predict; the constant-time compare is belt and braces.
    for (const [hash, principal] of this.#byHash) {
      const known = Buffer.from(hash, 'hex');
      if (known.length === presented.length && timingSafeEqual(known, presented)) return principal;
    }
    return null;
  }

  async #reload(): Promise<void> {
    this.#checkedAt = Date.now();
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(tokensPath(this.#dir))).mtimeMs;
    } catch {
      mtimeMs = 0;
    }
    if (mtimeMs === this.#mtimeMs) return;
    const file = await readTokensFile(this.#dir);
    const next = new Map<string, Principal>();
    for (const [nodeId, hash] of Object.entries(file.nodes)) next.set(hash, { kind: 'node', nodeId });
    if (file.admin !== null) next.set(file.admin, { kind: 'admin' });
    this.#byHash = next;
    this.#mtimeMs = mtimeMs;
  }
}

/** The node an mTLS client certificate names: the first DNS SAN that is a node id, else the CN. */
export function nodeIdFromCertificate(cert: { subject?: { CN?: string | string[] }; subjectaltname?: string } | null | undefined, isNodeId: (s: string) => boolean): string | null {
  if (cert === null || cert === undefined) return null;
  const sans = (cert.subjectaltname ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.startsWith('DNS:'))
    .map((s) => s.slice(4));
  for (const san of sans) if (isNodeId(san)) return san;
  const cn = Array.isArray(cert.subject?.CN) ? cert.subject?.CN[0] : cert.subject?.CN;
  return cn !== undefined && isNodeId(cn) ? cn : null;
}
