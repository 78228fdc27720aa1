/**
 * The `host_id` label of persys_node_info: tells apart two agents that report the same node id
 * (a cloned disk image, a copied config with a fixed nodeId, two state dirs on one host), in scrape
 * and push mode alike, without publishing the machine id. It is the first 12 hex of a sha256 over
 * the machine id, the kernel's boot id and the state dir, so it changes on reboot (clones share a
 * machine id but never a boot id) and stays the same across agent restarts within one boot.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { resolve } from 'node:path';

/** Where Linux keeps the machine id (systemd, then the older D-Bus location) and the boot id. */
export const MACHINE_ID_FILES = ['/etc/machine-id', '/var/lib/dbus/machine-id'];
export const BOOT_ID_FILE = '/proc/sys/kernel/random/boot_id';

export interface HostIdInputs {
  machineId: string | null;
  bootId: string | null;
  stateDir: string;
}

/** Pure: 12 hex of sha256("persys-host-id", machine id, boot id, state dir), NUL-separated. */
export function hostIdOf(i: HostIdInputs): string {
  return createHash('sha256')
    .update(['persys-host-id', i.machineId ?? '', i.bootId ?? '', resolve(i.stateDir)].join('\0'))
    .digest('hex')
    .slice(0, 12);
}

async function firstReadable(files: readonly string[]): Promise<string | null> {
  for (const f of files) {
    try {
      const s = (await readFile(f, 'utf8')).trim();
      if (s !== '') return s;
    } catch {
      // Absent in minimal containers and on non-Linux hosts: try the next, else go without.
    }
  }
  return null;
}

/** Reads the inputs from the host; a missing file counts as empty (the state dir still differs). */
export async function readHostId(stateDir: string, files = { machineId: MACHINE_ID_FILES, bootId: [BOOT_ID_FILE] }): Promise<string> {
  const [machineId, bootId] = await Promise.all([firstReadable(files.machineId), firstReadable(files.bootId)]);
  return hostIdOf({ machineId, bootId, stateDir });
}
