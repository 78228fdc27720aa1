import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { mapLimit, usageFromDockerStats } from '../../src/runtimes/docker/usage.js';

describe('usageFromDockerStats', () => {
  it('reads a cgroup v1 answer: CPU ns, working set, networks and block I/O summed', () => {
    const u = usageFromDockerStats({
      cpu_stats: { cpu_usage: { total_usage: 2_500_000_000 } },
      memory_stats: { usage: 10_000, stats: { total_inactive_file: 4_000, inactive_file: 1 } },
      networks: { eth0: { rx_bytes: 100, tx_bytes: 200 }, eth1: { rx_bytes: 1, tx_bytes: 2 } },
      blkio_stats: {
        io_service_bytes_recursive: [
          { major: 8, minor: 0, op: 'Read', value: 4096 },
          { major: 8, minor: 0, op: 'Write', value: 8192 },
          { major: 8, minor: 0, op: 'Sync', value: 1 },
          { major: 8, minor: 16, op: 'Read', value: 4 },
          { major: 8, minor: 0, op: 'Total', value: 12288 },
        ],
      },
    });
    assert.deepEqual(u, {
      cpuSeconds: 2.5,
      memoryBytes: 6_000,
      networkReceiveBytes: 101,
      networkTransmitBytes: 202,
      blockReadBytes: 4100,
      blockWriteBytes: 8192,
    });
  });

  it('reads a cgroup v2 answer (inactive_file, lower-case ops)', () => {
    const u = usageFromDockerStats({
      cpu_stats: { cpu_usage: { total_usage: 1e9 } },
      memory_stats: { usage: 5000, stats: { inactive_file: 1000 } },
      blkio_stats: { io_service_bytes_recursive: [{ op: 'read', value: 1 }, { op: 'write', value: 2 }] },
    });
    assert.deepEqual(u, { cpuSeconds: 1, memoryBytes: 4000, blockReadBytes: 1, blockWriteBytes: 2 });
  });

  it('leaves out what Docker does not say (network mode none), and reads null block I/O as none yet', () => {
    const u = usageFromDockerStats({ cpu_stats: { cpu_usage: { total_usage: 0 } }, memory_stats: { usage: 100, stats: {} }, blkio_stats: { io_service_bytes_recursive: null } });
    assert.deepEqual(u, { cpuSeconds: 0, memoryBytes: 100, blockReadBytes: 0, blockWriteBytes: 0 });
    assert.equal('networkReceiveBytes' in u, false);
  });

  it('never reports a negative working set, and survives garbage', () => {
    assert.equal(usageFromDockerStats({ memory_stats: { usage: 10, stats: { total_inactive_file: 50 } } }).memoryBytes, 10);
    assert.deepEqual(usageFromDockerStats(null), {});
    assert.deepEqual(usageFromDockerStats({ cpu_stats: 'x', memory_stats: { usage: -1 } }), {});
  });
});

describe('mapLimit', () => {
  it('keeps the order and never exceeds the limit', async () => {
    let inFlight = 0;
    let peak = 0;
    const out = await mapLimit([...Array(20).keys()], 4, async (n) => {
      inFlight++;
      peak = Math.max(peak, inFlight);
      await new Promise((r) => setTimeout(r, (n % 3) * 3));
      inFlight--;
      return n * 2;
    });
    assert.deepEqual(out, [...Array(20).keys()].map((n) => n * 2));
    assert.equal(peak, 4);
    assert.deepEqual(await mapLimit([], 4, () => Promise.resolve(1)), []);
  });
});
