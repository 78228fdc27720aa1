/** A process that creates one volume and is SIGKILLed by the test while it does (crash safety). */
import { storageManager } from './storage.js';

const [stateDir, nodeId, prefix, pool, size] = process.argv.slice(2) as [string, string, string, string, string];
const m = storageManager({ stateDir, nodeId, prefix });
await m.start();
for (;;) {
  await m.beforeWorkloads({
    workloads: [],
    storagePools: [{ name: 'p', type: 'loop', path: pool, capacityBytes: 1024 * 1024 * 1024 }],
    volumes: [{ name: `${nodeId}-crash`, pool: 'p', sizeBytes: Number(size), reclaimPolicy: 'delete' }],
  });
  // Created: delete and create again, so the kill can land on any step.
  await m.beforeWorkloads({ workloads: [], storagePools: [{ name: 'p', type: 'loop', path: pool, capacityBytes: 1024 * 1024 * 1024 }], volumes: [] });
  await m.afterWorkloads();
}
