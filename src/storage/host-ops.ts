/**
 * The host side of storage: files, mkfs, losetup, resize2fs, the Docker volume and virsh, each
 * through execFile (never a shell) with a timeout. volumes.ts decides the order; this only acts.
 */
import { constants, promises as fsp } from 'node:fs';
import { dirname } from 'node:path';
import DockerClient from '../runtimes/docker/dockerode.js';
import { runTool, ToolError } from '../runtimes/libvirt/exec.js';
import { LABELS } from '../runtimes/runtime.js';

export interface EngineVolumeSpec {
  name: string;
  /** Docker local-driver options: type, device, o. */
  options: Record<string, string>;
  labels: Record<string, string>;
}

/** What volumes.ts needs from the host; tests of the step order give a recorder instead. */
export interface VolumeOps {
  mkdir(path: string, mode: number, uid?: number, gid?: number): Promise<void>;
  removePath(path: string): Promise<void>;
  /** A sparse file of `sizeBytes`, mode 0600, created exclusively (an old one is removed first by the caller). */
  createImage(path: string, sizeBytes: number): Promise<void>;
  growImage(path: string, sizeBytes: number): Promise<void>;
  mkfs(path: string): Promise<void>;
  /** The loop device the image is attached to, attaching it when none is. */
  attach(image: string): Promise<string>;
  /** Detaches every loop device backed by the image. */
  detachAll(image: string): Promise<void>;
  /** Points the stable device path at the loop device. */
  link(devicePath: string, loopDevice: string): Promise<void>;
  /** losetup -c and an online (or offline, after e2fsck) resize2fs. */
  resizeFs(loopDevice: string): Promise<void>;
  engineCreate(v: EngineVolumeSpec): Promise<void>;
  engineRemove(name: string): Promise<void>;
  libvirtPoolEnsure(name: string, path: string): Promise<void>;
  libvirtVolCreate(pool: string, vol: string, sizeBytes: number): Promise<string>;
  libvirtVolResize(pool: string, vol: string, sizeBytes: number): Promise<void>;
  libvirtVolDelete(pool: string, vol: string): Promise<void>;
}

export interface HostOpsOptions {
  dockerSocket: string;
  libvirtUri: string;
  timeoutMs: number;
}

/** The host ops of an agent's config: the Docker socket and libvirt URI its runtimes use. */
export function hostVolumeOpsFor(config: { docker: { socketPath: string }; libvirt: { uri: string; commandTimeoutSeconds: number } }): ReturnType<typeof hostVolumeOps> {
  return hostVolumeOps({ dockerSocket: config.docker.socketPath, libvirtUri: config.libvirt.uri, timeoutMs: config.libvirt.commandTimeoutSeconds * 1000 });
}

export const volumeLabels = (nodeId: string, volume: string, pool: string): Record<string, string> => ({
  [LABELS.managed]: 'true',
  [LABELS.nodeId]: nodeId,
  'dev.persys.volume': volume,
  'dev.persys.pool': pool,
});

export function hostVolumeOps(o: HostOpsOptions): VolumeOps & { loopDevicesOf(image: string): Promise<string[]> } {
  const docker = new DockerClient({ socketPath: o.dockerSocket });
  const run = (tool: string, args: string[]) => runTool(tool, args, { timeoutMs: o.timeoutMs, label: `${tool} ${args[0] ?? ''}`.trim() });
  const virsh = (args: string[]) => runTool('virsh', ['-c', o.libvirtUri, ...args], { timeoutMs: o.timeoutMs, label: `virsh ${args[0] ?? ''}` });
  const loopDevicesOf = async (image: string): Promise<string[]> => {
    // "/dev/loop3: [2049]:1234 (/path/img)" per device backed by the file.
    const { stdout } = await run('losetup', ['-j', image]);
    return stdout.split('\n').map((l) => l.split(':')[0]?.trim() ?? '').filter((d) => d.startsWith('/dev/'));
  };
  /** Domains (running ones, or all) that have `path` as a disk: `virsh domblklist --details` of each. */
  const domainsUsing = async (path: string, all: boolean): Promise<string[]> => {
    const names = (await virsh(['list', '--name', ...(all ? ['--all'] : [])])).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    const out: string[] = [];
    for (const n of names) {
      const blk = await virsh(['domblklist', n, '--details']).catch(() => null);
      // " file   disk     vda      /path/x.qcow2" per disk.
      if (blk?.stdout.split('\n').some((l) => l.trim().split(/\s+/).slice(3).join(' ') === path)) out.push(n);
    }
    return out;
  };
  return {
    loopDevicesOf,
    async mkdir(path, mode, uid, gid) {
      await fsp.mkdir(path, { recursive: true, mode });
      await fsp.chmod(path, mode);
      if (uid !== undefined || gid !== undefined) await fsp.chown(path, uid ?? -1, gid ?? -1);
    },
    async removePath(path) {
      await fsp.rm(path, { recursive: true, force: true });
    },
    async createImage(path, sizeBytes) {
      await fsp.mkdir(dirname(path), { recursive: true, mode: 0o700 });
      const fh = await fsp.open(path, constants.O_CREAT | constants.O_EXCL | constants.O_RDWR, 0o600);
      try {
        await fh.chmod(0o600);
        await fh.truncate(sizeBytes);
        await fh.sync();
      } finally {
        await fh.close();
      }
    },
    async growImage(path, sizeBytes) {
      const st = await fsp.stat(path);
      if (st.size < sizeBytes) await fsp.truncate(path, sizeBytes);
    },
    async mkfs(path) {
      // -m 0: no blocks reserved for root; 4 KiB blocks and an inode per 64 KiB keep metadata small, so
      // most of the size is the container's (32 MiB gives about 27.8 MiB); -F: a file, not a device.
      await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-b', '4096', '-i', '65536', '-E', 'lazy_itable_init=0,lazy_journal_init=0', path]);
    },
    async attach(image) {
      const have = await loopDevicesOf(image);
      if (have[0] !== undefined) return have[0];
      const { stdout } = await run('losetup', ['--find', '--show', image]);
      return stdout.trim();
    },
    async detachAll(image) {
      let devs: string[];
      try {
        devs = await loopDevicesOf(image);
      } catch {
        return;
      }
      for (const d of devs) await run('losetup', ['-d', d]);
    },
    async link(devicePath, loopDevice) {
      const tmp = `${devicePath}.tmp-${process.pid}`;
      await fsp.rm(tmp, { force: true });
      await fsp.symlink(loopDevice, tmp);
      await fsp.rename(tmp, devicePath);
    },
    async resizeFs(loopDevice) {
      await run('losetup', ['-c', loopDevice]);
      try {
        await run('resize2fs', [loopDevice]);
      } catch (err) {
        // Not mounted: resize2fs wants a forced check first.
        if (!(err instanceof ToolError) || !/e2fsck/.test(err.stderr)) throw err;
        await runTool('e2fsck', ['-f', '-y', loopDevice], { timeoutMs: o.timeoutMs }).catch((e: unknown) => {
          // Exit 1: errors corrected, which is success here.
          if (!(e instanceof ToolError) || e.exitCode !== 1) throw e;
        });
        await run('resize2fs', [loopDevice]);
      }
    },
    async engineCreate(v) {
      await docker.createVolume({ Name: v.name, Driver: 'local', DriverOpts: v.options, Labels: v.labels });
    },
    async engineRemove(name) {
      try {
        await docker.getVolume(name).remove();
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode === 404) return;
        throw err;
      }
    },
    async libvirtPoolEnsure(name, path) {
      await fsp.mkdir(path, { recursive: true, mode: 0o711 });
      const info = await virsh(['pool-info', name]).catch(() => null);
      if (!info) {
        await virsh(['pool-define-as', name, 'dir', '--target', path]);
        await virsh(['pool-autostart', name]);
      }
      const again = await virsh(['pool-info', name]);
      if (!/State:\s+running/.test(again.stdout)) await virsh(['pool-start', name]);
    },
    async libvirtVolCreate(pool, vol, sizeBytes) {
      const existing = await virsh(['vol-path', '--pool', pool, vol]).catch(() => null);
      if (!existing) await virsh(['vol-create-as', pool, vol, `${sizeBytes}b`, '--format', 'qcow2']);
      return (await virsh(['vol-path', '--pool', pool, vol])).stdout.trim();
    },
    async libvirtVolResize(pool, vol, sizeBytes) {
      const path = (await virsh(['vol-path', '--pool', pool, vol])).stdout.trim();
      // A running domain holds QEMU's write lock on its disk, so qemu-img (vol-resize) cannot open
      // it: QEMU itself grows it then (blockresize), and the guest sees the new size at once.
      const running = await domainsUsing(path, false);
      if (running[0] !== undefined) await virsh(['blockresize', running[0], path, `${sizeBytes}B`]);
      else await virsh(['vol-resize', '--pool', pool, vol, `${sizeBytes}b`]);
    },
    async libvirtVolDelete(pool, vol) {
      const existing = await virsh(['vol-path', '--pool', pool, vol]).catch(() => null);
      if (!existing) return;
      // libvirt deletes a volume a domain still names; never do that (a failed VM removal is retried first).
      const users = await domainsUsing(existing.stdout.trim(), true);
      if (users.length > 0) throw new Error(`volume ${vol} in pool ${pool} is still a disk of domain ${users.join(', ')}; it is deleted once the domain is gone`);
      await virsh(['vol-delete', '--pool', pool, vol]);
    },
  };
}
