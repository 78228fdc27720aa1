import { resolve } from 'node:path';
import type { Config } from '../config/schema.js';
import type { Logger } from '../log.js';
import { configurePolicyContext } from '../policy/container-policy.js';
import { ComposeRuntime } from './compose/compose-runtime.js';
import { DockerRuntime } from './docker/docker-runtime.js';
import { LibvirtRuntime, type StorageVolumeLookup } from './libvirt/libvirt-runtime.js';
import type { Runtime } from './runtime.js';

/*
 * The runtime half of the registry: which runtimes exist, how the config enables them, how each is
 * built. The only place (with registry.ts) that names runtimes; the agent and `plan` only see Runtime.
 */

export interface RuntimeContext {
  nodeId: string;
  stateDir: string;
  logger: Logger;
  /** A workload's report-relevant facts changed outside a reconcile (e.g. a VM got an address). */
  onChange?: (workloadId: string) => void;
  /** A document volume as the storage layer made it (its pool and whether it is Ready), for a VM disk that attaches it. */
  storageVolume?: StorageVolumeLookup;
}

export interface RuntimeSet {
  runtimes: Runtime[];
  /** Runtimes this agent knows but did not build, and why ("disabled by config"). */
  absent: { name: string; reason: string }[];
}

interface RuntimeFactory {
  name: string;
  enabled(config: Config): boolean;
  create(config: Config, ctx: RuntimeContext): Runtime;
}

const FACTORIES: readonly RuntimeFactory[] = [
  {
    name: 'docker',
    enabled: (c) => c.docker.enabled,
    create: (c, ctx) => new DockerRuntime({ socketPath: c.docker.socketPath, nodeId: ctx.nodeId, namePrefix: c.docker.namePrefix, logger: ctx.logger }),
  },
  {
    // Native compose on the same Docker Engine: on wherever docker is (the YAML parser loads on first use).
    name: 'compose',
    enabled: (c) => c.docker.enabled,
    create: (c, ctx) => new ComposeRuntime({ socketPath: c.docker.socketPath, nodeId: ctx.nodeId, logger: ctx.logger }),
  },
  {
    name: 'libvirt',
    enabled: (c) => c.libvirt.enabled,
    create: (c, ctx) =>
      new LibvirtRuntime({
        ...c.libvirt,
        storageDir: c.libvirt.storageDir === undefined ? undefined : resolve(c.libvirt.storageDir),
        nodeId: ctx.nodeId,
        stateDir: ctx.stateDir,
        logger: ctx.logger,
        ...(ctx.onChange ? { onVmChange: ctx.onChange } : {}),
        ...(ctx.storageVolume ? { storageVolume: ctx.storageVolume } : {}),
      }),
  },
];

/** The runtimes the config enables, built the same way for `run` and for `plan`. */
export function createRuntimes(config: Config, ctx: RuntimeContext): RuntimeSet {
  // The docker type's policy rules judge host paths against this host's state dir and engine socket.
  configurePolicyContext(config);
  const out: RuntimeSet = { runtimes: [], absent: [] };
  for (const f of FACTORIES) {
    if (f.enabled(config)) out.runtimes.push(f.create(config, ctx));
    else out.absent.push({ name: f.name, reason: 'disabled by config' });
  }
  return out;
}
