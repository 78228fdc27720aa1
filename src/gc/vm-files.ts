import { open, readdir, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';

import type { FileFact, VmFiles } from './select.js';

/** Bound of the files one pass looks at (a pass is bounded; the rest waits for the next). */
const MAX_FILES = 2000;
const CACHE_ENTRY = /^sha256-([0-9a-f]{64})\.(qcow2|raw)$/;

async function fact(path: string): Promise<FileFact | undefined> {
  try {
    const s = await stat(path);
    return s.isFile() ? { path, mtime: s.mtime.toISOString(), sizeBytes: s.size } : undefined;
  } catch {
    return undefined;
  }
}

const list = (dir: string): Promise<string[]> => readdir(dir).catch(() => []);

/**
 * The backing file a qcow2 image names, read from its header (no qemu-img call): magic "QFI\xfb",
 * backing_file_offset (u64 BE at 8) and backing_file_size (u32 BE at 16). Relative names are
 * relative to the image's directory, as qemu resolves them.
 */
export async function qcow2BackingFile(path: string): Promise<string | undefined> {
  let fh;
  try {
    fh = await open(path, 'r');
    const head = Buffer.alloc(20);
    const { bytesRead } = await fh.read(head, 0, 20, 0);
    if (bytesRead < 20 || head.readUInt32BE(0) !== 0x514649fb) return undefined;
    const offset = Number(head.readBigUInt64BE(8));
    const size = head.readUInt32BE(16);
    if (offset === 0 || size === 0 || size > 1023) return undefined;
    const name = Buffer.alloc(size);
    await fh.read(name, 0, size, offset);
    const file = name.toString('utf8');
    return resolve(dirname(path), file);
  } catch {
    return undefined;
  } finally {
    await fh?.close();
  }
}

/** The libvirt runtime's files under its storage dir and console dir (src/runtimes/libvirt/storage.ts). */
export async function readVmFiles(root: string, consoleDir: string, namePrefix: string): Promise<VmFiles> {
  let budget = MAX_FILES;
  const out: VmFiles = { namePrefix, domains: [], cache: [], backing: new Set(), consoleLogs: [] };
  const backing = new Set<string>();
  for (const domain of await list(join(root, 'vms'))) {
    const files: FileFact[] = [];
    for (const name of await list(join(root, 'vms', domain))) {
      if (budget-- <= 0) break;
      const f = await fact(join(root, 'vms', domain, name));
      if (!f) continue;
      files.push(f);
      if (name.endsWith('.qcow2')) {
        const b = await qcow2BackingFile(f.path);
        if (b) backing.add(b);
      }
    }
    out.domains.push({ domain, files });
  }
  for (const name of await list(join(root, 'images'))) {
    const m = CACHE_ENTRY.exec(name);
    if (!m || budget-- <= 0) continue;
    const f = await fact(join(root, 'images', name));
    if (f) out.cache.push({ ...f, hex: m[1] as string });
  }
  for (const name of await list(consoleDir)) {
    if (!name.endsWith('.log') || budget-- <= 0) continue;
    const f = await fact(join(consoleDir, name));
    if (f) out.consoleLogs.push({ ...f, domain: name.slice(0, -'.log'.length) });
  }
  out.backing = backing;
  return out;
}
