/**
 * The agent's reconcile machinery built in-process the way src/agent.ts wires it (Store +
 * DockerRuntime + Executor + ReconcileLoop), for the benches that time one cycle or one apply.
 */
import * as v from 'valibot';

import type { Logger } from 'pino';
import { configSchema } from '../src/config/schema.js';
import { Executor } from '../src/reconcile/executor.js';
import { ReconcileLoop } from '../src/reconcile/loop.js';
import { DockerRuntime } from '../src/runtimes/docker/docker-runtime.js';
import type { Runtime } from '../src/runtimes/runtime.js';
import type { DesiredStateDocument } from '../src/spec/desired-state.js';
import { Store } from '../src/store/store.js';
import { DOCKER_SOCKET } from './lib.js';

export interface AgentParts {
  store: Store;
  runtime: DockerRuntime;
  executor: Executor;
  loop: ReconcileLoop;
  close(): Promise<void>;
}

export interface PartsOptions {
  nodeId: string;
  stateDir: string;
  namePrefix: string;
  logger: Logger;
  /** reconcile.concurrency; undefined: the config default. */
  concurrency?: number;
  /** Stored as the desired state (as a pull would) before anything runs; undefined: keep what the store has. */
  desired?: DesiredStateDocument;
}

export async function openAgentParts(o: PartsOptions): Promise<AgentParts> {
  const config = v.parse(configSchema, {
    nodeId: o.nodeId,
    stateDir: o.stateDir,
    docker: { socketPath: DOCKER_SOCKET, namePrefix: o.namePrefix },
    ...(o.concurrency !== undefined ? { reconcile: { concurrency: o.concurrency } } : {}),
  });
  // fsync stays on, as in the agent.
  const store = await Store.open(o.stateDir, o.logger);
  if (store.data.nodeId !== o.nodeId) store.update((d) => void (d.nodeId = o.nodeId));
  if (o.desired) {
    const document = o.desired;
    await store.setDesired({ document, etag: null, receivedAt: new Date().toISOString(), source: 'bench' });
  }
  await store.flush();
  const runtime = new DockerRuntime({ socketPath: config.docker.socketPath, nodeId: o.nodeId, namePrefix: config.docker.namePrefix, logger: o.logger });
  const runtimesByType = new Map(runtime.types.map((t) => [t.type, runtime] as const));
  const executor = new Executor({ nodeId: o.nodeId, runtimes: runtimesByType, store, config, logger: o.logger });
  const loop = new ReconcileLoop({ store, runtimes: [runtime], executor, logger: o.logger });
  return {
    store,
    runtime,
    executor,
    loop,
    async close() {
      await loop.idle();
      await store.close();
      const rt: Runtime = runtime;
      await rt.close?.();
    },
  };
}
