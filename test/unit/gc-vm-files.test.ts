/** The libvirt storage layout as GC reads it (src/gc/vm-files.ts): qcow2 backing files from the header, files by place. */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import { qcow2BackingFile, readVmFiles } from '../../src/gc/vm-files.js';
import { findExecutable } from '../helpers/engines.js';

const exec = promisify(execFile);
const noQemuImg = (await findExecutable('qemu-img')) ? false : 'qemu-img not installed';

/** A qcow2 header (version 3) naming `backing`, as qemu-img writes it: magic, version, offset, size. */
function qcow2Header(backing: string | undefined): Buffer {
  const b = Buffer.alloc(512);
  b.writeUInt32BE(0x514649fb, 0);
  b.writeUInt32BE(3, 4);
  if (backing !== undefined) {
    b.writeBigUInt64BE(200n, 8);
    b.writeUInt32BE(Buffer.byteLength(backing), 16);
    b.write(backing, 200, 'utf8');
  }
  return b;
}

describe('gc: VM files', () => {
  let dir: string;
  const hex = 'c'.repeat(64);
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-gc-vm-'));
    await mkdir(join(dir, 'root', 'vms', 'persys-a'), { recursive: true });
    await mkdir(join(dir, 'root', 'images'), { recursive: true });
    await mkdir(join(dir, 'console'), { recursive: true });
    await writeFile(join(dir, 'root', 'images', `sha256-${hex}.qcow2`), qcow2Header(undefined));
    await writeFile(join(dir, 'root', 'images', 'not-a-cache-entry'), 'x');
    await writeFile(join(dir, 'root', 'vms', 'persys-a', 'disk-root.qcow2'), qcow2Header(`../../images/sha256-${hex}.qcow2`));
    await writeFile(join(dir, 'root', 'vms', 'persys-a', 'seed.iso'), 'iso');
    await writeFile(join(dir, 'console', 'persys-a.log'), 'boot');
  });
  after(async () => rm(dir, { recursive: true, force: true }));

  it('reads the backing file of a qcow2 (relative to the image), none for a base or a non-qcow2 file', async () => {
    assert.equal(await qcow2BackingFile(join(dir, 'root', 'vms', 'persys-a', 'disk-root.qcow2')), join(dir, 'root', 'images', `sha256-${hex}.qcow2`));
    assert.equal(await qcow2BackingFile(join(dir, 'root', 'images', `sha256-${hex}.qcow2`)), undefined);
    assert.equal(await qcow2BackingFile(join(dir, 'root', 'vms', 'persys-a', 'seed.iso')), undefined);
    assert.equal(await qcow2BackingFile(join(dir, 'missing')), undefined);
  });

  it('a real qemu-img overlay names its base', { skip: noQemuImg }, async () => {
    const base = join(dir, 'base.qcow2');
    const overlay = join(dir, 'overlay.qcow2');
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', base, '1M']);
    await exec('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base, overlay]);
    assert.equal(await qcow2BackingFile(overlay), base);
    assert.equal(await qcow2BackingFile(base), undefined);
  });

  it('lists domains with their files, cache entries by digest, console logs by domain, and the backing set', async () => {
    const f = await readVmFiles(join(dir, 'root'), join(dir, 'console'), 'persys-');
    assert.deepEqual(f.domains.map((d) => [d.domain, d.files.map((x) => x.path.slice(dir.length)).sort()]), [['persys-a', ['/root/vms/persys-a/disk-root.qcow2', '/root/vms/persys-a/seed.iso']]]);
    assert.deepEqual(f.cache.map((c) => c.hex), [hex]);
    assert.deepEqual(f.consoleLogs.map((c) => c.domain), ['persys-a']);
    assert.deepEqual([...f.backing], [join(dir, 'root', 'images', `sha256-${hex}.qcow2`)]);
    const none = await readVmFiles(join(dir, 'nothing'), join(dir, 'nothing'), 'persys-');
    assert.deepEqual(none.domains, []);
  });
});
