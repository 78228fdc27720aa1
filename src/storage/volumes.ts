/**
 * Applies one volume action, in the crash-safe order (docs/storage.md):
 *
 *   loop:    record intent -> sparse image 0600 -> mkfs -> record formatted -> losetup + stable
 *            device link -> record attached -> docker volume (type=ext4, device=link) -> Ready
 *   dir:     record intent -> directory -> record formatted -> docker volume (bind) -> Ready
 *   libvirt: record intent -> qcow2 volume in the libvirt pool -> Ready
 *
 * The record is written before the step it announces, so after a SIGKILL at any point the next pass
 * knows the image path and finds every loop device backed by it (`losetup -j`): an image that was
 * not formatted to the end is thrown away and made again, one that was is attached and used.
 */
import { join } from 'node:path';
import { libvirtVolName } from '../runtimes/libvirt/ids.js';
import { volumeLabels, type VolumeOps } from './host-ops.js';
import { CREATE_STEPS, type CreateStep, type PoolDecl, type VolumeDecl, type VolumeState } from './types.js';

/** Where storage.json lives and how it changes: every put/remove is durable before it resolves. */
export interface VolumeRecords {
  get(name: string): VolumeState | undefined;
  put(v: VolumeState): Promise<void>;
  remove(name: string): Promise<void>;
}

export interface VolumeContext {
  ops: VolumeOps;
  records: VolumeRecords;
  nodeId: string;
  now: () => Date;
}

const reached = (s: VolumeState, step: CreateStep): boolean => CREATE_STEPS.indexOf(s.step) >= CREATE_STEPS.indexOf(step);

/** The paths a new volume gets in its pool. */
export function volumePaths(pool: PoolDecl, name: string): { path: string; devicePath?: string } {
  switch (pool.type) {
    case 'loop':
      return { path: join(pool.path, `${name}.img`), devicePath: join(pool.path, '.dev', name) };
    case 'dir':
      return { path: join(pool.path, name) };
    case 'libvirt':
      return { path: join(pool.path, `${name}.qcow2`) };
  }
}

export { libvirtVolName };

/** A new volume: its intent is recorded first, then it is built. */
export async function createVolume(ctx: VolumeContext, pool: PoolDecl, decl: VolumeDecl): Promise<VolumeState> {
  const paths = volumePaths(pool, decl.name);
  const intent: VolumeState = {
    name: decl.name,
    pool: pool.name,
    poolType: pool.type,
    sizeBytes: decl.sizeBytes,
    reclaimPolicy: decl.reclaimPolicy ?? 'retain',
    phase: 'Creating',
    step: 'intent',
    ...paths,
    ...(decl.mode !== undefined ? { mode: decl.mode } : {}),
    ...(decl.uid !== undefined ? { uid: decl.uid } : {}),
    ...(decl.gid !== undefined ? { gid: decl.gid } : {}),
    createdAt: ctx.now().toISOString(),
  };
  await ctx.records.put(intent);
  return resumeVolume(ctx, pool, intent);
}

/** Completes a creation that stopped (crash, failure) after `s.step`. */
export async function resumeVolume(ctx: VolumeContext, pool: PoolDecl, start: VolumeState): Promise<VolumeState> {
  const { ops, records } = ctx;
  let s: VolumeState = { ...start, phase: 'Creating' };
  delete s.error;
  const advance = async (step: CreateStep, extra: Partial<VolumeState> = {}): Promise<void> => {
    s = { ...s, ...extra, step };
    await records.put(s);
  };
  switch (s.poolType) {
    case 'loop': {
      if (!reached(s, 'formatted')) {
        // Never use an image whose mkfs may not have finished: detach whatever holds it, start over.
        await ops.detachAll(s.path);
        await ops.removePath(s.path);
        await ops.createImage(s.path, s.sizeBytes);
        await advance('image');
        await ops.mkfs(s.path);
        await advance('formatted');
      }
      const dev = await ops.attach(s.path);
      const link = s.devicePath ?? volumePaths(pool, s.name).devicePath ?? `${s.path}.dev`;
      await ops.mkdir(join(link, '..'), 0o700);
      await ops.link(link, dev);
      if (!reached(s, 'attached') || s.loopDevice !== dev) await advance('attached', { loopDevice: dev, devicePath: link });
      await ops.engineCreate({ name: s.name, options: { type: 'ext4', device: link }, labels: volumeLabels(ctx.nodeId, s.name, s.pool) });
      break;
    }
    case 'dir': {
      await ops.mkdir(s.path, s.mode ?? 0o755, s.uid, s.gid);
      if (!reached(s, 'formatted')) await advance('formatted');
      await ops.engineCreate({ name: s.name, options: { type: 'none', o: 'bind', device: s.path }, labels: volumeLabels(ctx.nodeId, s.name, s.pool) });
      break;
    }
    case 'libvirt': {
      if (!reached(s, 'formatted')) await ops.libvirtVolDelete(pool.name, libvirtVolName(s.name));
      const path = await ops.libvirtVolCreate(pool.name, libvirtVolName(s.name), s.sizeBytes);
      if (!reached(s, 'formatted')) await advance('formatted', { path });
      break;
    }
  }
  s = { ...s, step: 'engine', phase: 'Ready' };
  await records.put(s);
  return s;
}

/** Grows a volume: the intent (growingTo) first, then the image, then the filesystem; never shrinks. */
export async function growVolume(ctx: VolumeContext, pool: PoolDecl, start: VolumeState, toBytes: number): Promise<VolumeState> {
  if (toBytes < start.sizeBytes) throw new Error(`volume ${start.name}: refusing to shrink from ${start.sizeBytes} to ${toBytes} bytes`);
  const { ops, records } = ctx;
  let s: VolumeState = { ...start, phase: 'Growing', growingTo: toBytes };
  delete s.error;
  await records.put(s);
  switch (s.poolType) {
    case 'loop': {
      await ops.growImage(s.path, toBytes);
      const dev = await ops.attach(s.path);
      await ops.resizeFs(dev);
      s = { ...s, loopDevice: dev };
      break;
    }
    case 'dir':
      break; // Accounted only: the new size is the new quota.
    case 'libvirt':
      await ops.libvirtVolResize(pool.name, libvirtVolName(s.name), toBytes);
      break;
  }
  s = { ...s, sizeBytes: toBytes, phase: 'Ready' };
  delete s.growingTo;
  await records.put(s);
  return s;
}

/** Removes a volume and its data: marked Deleting first, so an interrupted delete is finished, never forgotten. */
export async function deleteVolume(ctx: VolumeContext, poolName: string, start: VolumeState): Promise<void> {
  const { ops, records } = ctx;
  const s: VolumeState = { ...start, phase: 'Deleting' };
  await records.put(s);
  switch (s.poolType) {
    case 'loop':
      await ops.engineRemove(s.name);
      await ops.detachAll(s.path);
      await ops.removePath(s.path);
      if (s.devicePath) await ops.removePath(s.devicePath);
      break;
    case 'dir':
      await ops.engineRemove(s.name);
      await ops.removePath(s.path);
      break;
    case 'libvirt':
      await ops.libvirtVolDelete(poolName, libvirtVolName(s.name));
      break;
  }
  await records.remove(s.name);
}

/**
 * At agent start, before any container is started: every loop volume that was attached is attached
 * again (after a reboot its /dev/loopN is gone) and its stable device link repointed.
 */
export async function reattachVolume(ctx: VolumeContext, s: VolumeState): Promise<VolumeState> {
  if (s.poolType !== 'loop' || !reached(s, 'formatted') || s.phase === 'Deleting') return s;
  const dev = await ctx.ops.attach(s.path);
  if (s.devicePath) await ctx.ops.link(s.devicePath, dev);
  if (dev === s.loopDevice) return s;
  const next = { ...s, loopDevice: dev };
  await ctx.records.put(next);
  return next;
}
