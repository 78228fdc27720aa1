import { resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { DockerRuntime } from './docker/docker-runtime.js';
import { LibvirtRuntime, type LibvirtRuntimeOptions } from './libvirt/libvirt-runtime.js';
import type { Runtime } from './runtime.js';

/** The runtimes the config enables, built the same way for `run` and for `plan`. */
export function createRuntimes(
  config: Config,
  ctx: { nodeId: string; stateDir: string; logger: Logger; libvirt?: Pick<LibvirtRuntimeOptions, 'secrets' | 'onVmChange'> },
): { runtimes: Runtime[]; libvirt: LibvirtRuntime | undefined } {
  const runtimes: Runtime[] = [];
  const { nodeId, stateDir, logger } = ctx;
  if (config.docker.enabled) {
    runtimes.push(new DockerRuntime({ socketPath: config.docker.socketPath, nodeId, namePrefix: config.docker.namePrefix, logger }));
  }
  let libvirt: LibvirtRuntime | undefined;
  if (config.libvirt.enabled) {
    const lv = config.libvirt;
    libvirt = new LibvirtRuntime({
      ...lv,
      storageDir: lv.storageDir === undefined ? undefined : resolve(lv.storageDir),
      nodeId,
      stateDir,
      logger,
      ...ctx.libvirt,
    });
    runtimes.push(libvirt);
  }
  return { runtimes, libvirt };
}
