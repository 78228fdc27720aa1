/**
 * persys_storage_* metrics, read at scrape time from the storage manager's last report (a scrape
 * runs no engine call and reads no file).
 */
import { Gauge, type Registry } from 'prom-client';
import type { StorageReport } from './manager.js';

export function registerStorageMetrics(registry: Registry, report: () => StorageReport): void {
  const registers = [registry];
  const pool = (name: string, help: string, pick: (p: StorageReport['pools'][number]) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['pool', 'type', 'enforcement'],
      registers,
      collect() {
        this.reset();
        for (const p of report().pools) this.set({ pool: p.name, type: p.type, enforcement: p.enforcement }, pick(p));
      },
    });
  };
  pool('persys_storage_pool_capacity_bytes', 'Storage pool quota (storagePools[].capacityBytes), bytes.', (p) => p.capacityBytes);
  pool('persys_storage_pool_allocated_bytes', 'Sum of the sizes of the volumes in the pool, retained ones included, bytes.', (p) => p.allocatedBytes);
  pool('persys_storage_pool_used_bytes', 'Bytes the pool\'s volumes occupy on the host, bytes.', (p) => p.usedBytes);
  const volume = (name: string, help: string, pick: (v: StorageReport['volumes'][number]) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['volume', 'pool'],
      registers,
      collect() {
        this.reset();
        for (const v of report().volumes) this.set({ volume: v.name, pool: v.pool }, pick(v));
      },
    });
  };
  volume('persys_storage_volume_size_bytes', 'Declared size of the volume, bytes.', (v) => v.sizeBytes);
  volume('persys_storage_volume_used_bytes', 'Bytes the volume occupies on the host, bytes.', (v) => v.usedBytes);
  new Gauge({
    name: 'persys_storage_volume_ready',
    help: 'Whether the volume is Ready (1) or not (0: creating, growing, retained, refused or failed).',
    labelNames: ['volume', 'pool', 'phase'],
    registers,
    collect() {
      this.reset();
      for (const v of report().volumes) this.set({ volume: v.name, pool: v.pool, phase: v.phase }, v.phase === 'Ready' ? 1 : 0);
    },
  });
}
