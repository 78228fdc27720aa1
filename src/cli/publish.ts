/** `persys-agent publish --server URL --token F [--ca F] FILE`: PUTs a document (or DSSE envelope) to `serve`. */
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { checkUrlAllowed, UrlNotAllowedError } from '../sync/http-client.js';
import { UsageError } from './args.js';
import type { CommandIo } from './validate.js';

export const PUBLISH_USAGE = `usage: persys-agent publish --server URL --token FILE [--ca FILE] FILE

Publishes a desired-state document (or a signed DSSE envelope) for the node it names, with
PUT URL/v1/nodes/{nodeId}/desired. The server validates it and refuses a generation lower than
the published one. FILE "-" reads stdin.

options:
  --server URL   the serve instance, e.g. https://fleet.example:8443
  --token FILE   file holding the admin token (persys-agent token --admin)
  --ca FILE      PEM CA bundle to trust for the server
  -h, --help     print this help

exit status: 0 published (or unchanged), 1 refused or failed, 2 usage error
`;

function nodeIdOf(raw: unknown): string | undefined {
  if (typeof raw !== 'object' || raw === null) return undefined;
  let o = raw as Record<string, unknown>;
  if (typeof o.payload === 'string' && typeof o.payloadType === 'string') {
    try {
      o = JSON.parse(Buffer.from(o.payload, 'base64').toString('utf8')) as Record<string, unknown>;
    } catch {
      return undefined;
    }
  }
  return typeof o.nodeId === 'string' ? o.nodeId : undefined;
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

export async function publishCommand(args: string[], io: CommandIo): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { server: { type: 'string' }, token: { type: 'string' }, ca: { type: 'string' }, help: { type: 'boolean', short: 'h', default: false } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err));
  }
  const { values, positionals } = parsed;
  if (values.help) {
    io.stdout.write(PUBLISH_USAGE);
    return 0;
  }
  if (values.server === undefined) throw new UsageError('--server URL is required');
  if (values.token === undefined) throw new UsageError('--token FILE is required (the admin token)');
  if (positionals.length !== 1) throw new UsageError('exactly one FILE is required');
  const file = positionals[0] as string;
  let base: URL;
  try {
    base = new URL(values.server);
    checkUrlAllowed(base, false);
    if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new UrlNotAllowedError(`${base.href}: --server must be https:// (or http:// to loopback)`);
  } catch (err) {
    throw new UsageError(`--server: ${err instanceof Error ? err.message : String(err)}`);
  }
  let body: Buffer;
  let token: string;
  let ca: Buffer | undefined;
  try {
    body = file === '-' ? await readStdin() : await readFile(file);
    token = (await readFile(values.token, 'utf8')).trim();
    if (values.ca !== undefined) ca = await readFile(values.ca);
  } catch (err) {
    io.stderr.write(`persys-agent publish: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString('utf8'));
  } catch (err) {
    io.stderr.write(`${file}: not JSON: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const nodeId = nodeIdOf(raw);
  if (nodeId === undefined) {
    io.stderr.write(`${file}: nodeId: missing (the document must name its node)\n`);
    return 1;
  }
  const target = new URL(`${base.pathname.replace(/\/$/, '')}/v1/nodes/${encodeURIComponent(nodeId)}/desired`, base);
  const dispatcher = new Agent({ connect: { ...(ca !== undefined ? { ca } : {}), timeout: 30_000 } });
  try {
    const res = await request(target, {
      method: 'PUT',
      dispatcher,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body,
      headersTimeout: 30_000,
      bodyTimeout: 30_000,
    });
    const text = await res.body.text();
    let answer: { error?: string; issues?: Array<{ path: string; message: string }>; generation?: number; etag?: string; unchanged?: boolean } = {};
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      answer = { error: text.slice(0, 512) };
    }
    if (res.statusCode === 200) {
      io.stdout.write(`${answer.unchanged === true ? 'unchanged' : 'published'}: node ${nodeId} generation ${answer.generation} etag ${answer.etag}\n`);
      return 0;
    }
    io.stderr.write(`persys-agent publish: refused (${res.statusCode}): ${answer.error ?? ''}\n`);
    for (const i of answer.issues ?? []) io.stderr.write(`  ${i.path}: ${i.message}\n`);
    return 1;
  } catch (err) {
    io.stderr.write(`persys-agent publish: PUT ${target.origin}${target.pathname}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  } finally {
    await dispatcher.close();
  }
}
