import type { ComposeApp, ServiceSpec } from './model.js';

/*
 * Secrets and configs of a service, as a tar archive the engine unpacks into the created container
 * before it starts (PUT /containers/{id}/archive), the way docker compose v2 does without swarm. The
 * files get their mode (default 0400) and owner; their content never reaches a log, a label or a report.
 */

interface Entry {
  path: string;
  mode: number;
  uid: number;
  gid: number;
  content?: Buffer;
}

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, '0')}\0`;
}

function header(e: Entry, type: '0' | '5'): Buffer {
  const h = Buffer.alloc(512, 0);
  const name = type === '5' && !e.path.endsWith('/') ? `${e.path}/` : e.path;
  if (Buffer.byteLength(name) > 100) throw new Error(`path too long for a secret or config: ${name.slice(0, 40)}…`);
  h.write(name, 0, 100, 'utf8');
  h.write(octal(e.mode, 8), 100, 8, 'ascii');
  h.write(octal(e.uid, 8), 108, 8, 'ascii');
  h.write(octal(e.gid, 8), 116, 8, 'ascii');
  h.write(octal(e.content?.length ?? 0, 12), 124, 12, 'ascii');
  h.write(octal(Math.floor(Date.now() / 1000), 12), 136, 12, 'ascii');
  h.write('        ', 148, 8, 'ascii');
  h.write(type, 156, 1, 'ascii');
  h.write('ustar\u000000', 257, 8, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return h;
}

/** A POSIX ustar archive of the given files (parent directories included, 0755). */
export function tarOf(files: readonly Entry[]): Buffer {
  const parts: Buffer[] = [];
  const dirs = new Set<string>();
  for (const f of files) {
    const segs = f.path.split('/').slice(0, -1);
    for (let i = 1; i <= segs.length; i++) {
      const d = segs.slice(0, i).join('/');
      if (d === '' || dirs.has(d)) continue;
      dirs.add(d);
      parts.push(header({ path: d, mode: 0o755, uid: 0, gid: 0 }, '5'));
    }
    const content = f.content ?? Buffer.alloc(0);
    parts.push(header({ ...f, content }, '0'), content, Buffer.alloc((512 - (content.length % 512)) % 512, 0));
  }
  parts.push(Buffer.alloc(1024, 0));
  return Buffer.concat(parts);
}

const numericId = (s: string | undefined): number => {
  const n = s === undefined ? 0 : Number(s);
  return Number.isInteger(n) && n >= 0 ? n : 0;
};

/** The archive of a service's secrets and configs, or undefined when it has none. */
export function fileObjectsArchive(app: ComposeApp, s: ServiceSpec): Buffer | undefined {
  const entries: Entry[] = [];
  for (const [refs, objs] of [[s.secrets, app.secrets], [s.configs, app.configs]] as const) {
    for (const r of refs) {
      const obj = objs.get(r.source);
      if (!obj) continue;
      entries.push({ path: r.target.replace(/^\/+/, ''), mode: r.mode, uid: numericId(r.uid), gid: numericId(r.gid), content: Buffer.from(obj.content, 'utf8') });
    }
  }
  return entries.length > 0 ? tarOf(entries) : undefined;
}
