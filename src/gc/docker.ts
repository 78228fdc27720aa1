import { statfs } from 'node:fs/promises';

import Dockerode from '../runtimes/docker/dockerode.js';
import { LABELS } from '../runtimes/runtime.js';
import type { EngineImage, StrayObject } from './select.js';

/**
 * What GC asks of Docker beyond the runtime contract: the labelled containers observe() skips (no
 * workload id), the image list, and removals. Each method is one engine call (the collector counts them).
 */
export interface DockerGc {
  strays(signal: AbortSignal): Promise<StrayObject[]>;
  images(signal: AbortSignal): Promise<EngineImage[]>;
  removeContainer(id: string, signal: AbortSignal): Promise<void>;
  /** Removes one reference (untag); true when the image itself went (its last reference). */
  removeImage(ref: string, signal: AbortSignal): Promise<boolean>;
}

/** Docker's "No such ..." (already gone) and "conflict" (in use: Docker keeps it) answers. */
export const statusOf = (err: unknown): number | undefined => {
  const s = (err as { statusCode?: unknown }).statusCode;
  return typeof s === 'number' ? s : undefined;
};

export function dockerGc(socketPath: string, nodeId: string): DockerGc {
  const docker = new Dockerode({ socketPath });
  return {
    async strays(signal) {
      const list = await docker.listContainers({ all: true, filters: { label: [`${LABELS.managed}=true`, `${LABELS.nodeId}=${nodeId}`] }, abortSignal: signal });
      return list
        .filter((c) => (c.Labels?.[LABELS.workloadId] ?? '') === '')
        .map((c) => ({ runtime: 'docker', kind: 'container' as const, id: c.Id, name: (c.Names[0] ?? c.Id.slice(0, 12)).replace(/^\//, ''), state: c.State, createdAt: new Date(c.Created * 1000).toISOString() }));
    },
    async images(signal) {
      const list = await docker.listImages({ abortSignal: signal } as Parameters<typeof docker.listImages>[0]);
      return list.map((i) => ({
        id: i.Id,
        tags: (i.RepoTags ?? []).filter((t) => t !== '<none>:<none>'),
        digests: (i.RepoDigests ?? []).filter((t) => !t.startsWith('<none>')),
        createdAt: new Date(i.Created * 1000).toISOString(),
        sizeBytes: i.Size,
        ...(i.ParentId ? { parentId: i.ParentId } : {}),
      }));
    },
    async removeContainer(id, signal) {
      try {
        // v: anonymous volumes (image VOLUMEs) go with the container; named volumes are never touched.
        await docker.getContainer(id).remove({ force: true, v: true, abortSignal: signal });
      } catch (err) {
        const status = statusOf(err);
        if (status === 404 || (status === 409 && /already in progress/i.test(String(err)))) return;
        throw err;
      }
    },
    async removeImage(ref, signal) {
      // Never forced: an image a container (ours or the host owner's) uses is refused by Docker (409).
      const res = (await docker.getImage(ref).remove({ abortSignal: signal } as object)) as unknown;
      return Array.isArray(res) && res.some((r) => typeof r === 'object' && r !== null && 'Deleted' in r);
    },
  };
}

/** Used and available bytes of the file system holding `path` (df's view: blocks reserved for root count as used). */
export async function diskUsage(path: string): Promise<{ usedBytes: number; availableBytes: number } | undefined> {
  try {
    const s = await statfs(path);
    const total = s.blocks * s.bsize;
    const available = s.bavail * s.bsize;
    const used = total - s.bfree * s.bsize;
    return { usedBytes: used, availableBytes: available };
  } catch {
    return undefined;
  }
}
