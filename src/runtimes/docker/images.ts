import type Dockerode from 'dockerode';

import type { Logger } from '../../log.js';
import { abortReason, raceAbort } from '../../util/abort.js';
import type { ApplyContext } from '../runtime.js';
import { normalizeImageRef } from './canonical.js';
import { dockerErrorMessage, dockerStatusCode, translateDockerError } from './translate-error.js';

/*
 * Image presence and pulls on dockerode, shared by the docker (container) and compose runtimes.
 */

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An error in the shape dockerode gives, so translateDockerError reads stream errors like HTTP ones. */
function engineError(message: string): Error {
  return Object.assign(new Error(message), { json: { message } });
}

/** `{ present: true }`, or the engine's exact "No such image" message. */
export async function imagePresent(docker: Dockerode, ref: string, signal: AbortSignal): Promise<{ present: true } | { present: false; message: string }> {
  try {
    // dockerode's Image.inspect takes no abortSignal: the caller stops waiting, the short GET finishes alone.
    await raceAbort(docker.getImage(ref).inspect(), signal);
    return { present: true };
  } catch (err) {
    if (dockerStatusCode(err) === 404) return { present: false, message: dockerErrorMessage(err) };
    throw translateDockerError(err, 'inspect');
  }
}

/** Pulls `ref`, following the progress stream to its end; errors leave as WorkloadErrors. */
export async function pullImage(docker: Dockerode, ref: string, ctx: Pick<ApplyContext, 'signal' | 'progress' | 'heartbeat'>, logger: Logger): Promise<void> {
  ctx.progress?.('Pulling');
  const image = normalizeImageRef(ref);
  logger.info({ image }, 'pulling image');
  const started = Date.now();
  let stream: NodeJS.ReadableStream;
  try {
    stream = await docker.pull(ref, { abortSignal: ctx.signal });
    await followPull(docker, stream, ctx.signal, ctx.heartbeat);
  } catch (err) {
    throw translateDockerError(err, 'pull');
  }
  logger.info({ image, ms: Date.now() - started }, 'pulled image');
}

/**
 * Reads a pull's progress stream to its end. The HTTP status is 200 as soon as the pull starts, so a
 * failure half-way (manifest unknown, auth, network) arrives as an `{"error": ...}` line in the stream;
 * followProgress does not treat that as an error, we do. An abort destroys the stream, and a stream
 * that merely closes after an abort still counts as aborted.
 */
export function followPull(docker: Dockerode, stream: NodeJS.ReadableStream, signal: AbortSignal, heartbeat?: () => void): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let streamError: string | undefined;
    const moved = pullProgress();
    const onAbort = (): void => {
      const destroyable: unknown = stream;
      if (isRecord(destroyable) && typeof destroyable.destroy === 'function') {
        // Kept listening for 'error' after followProgress lets go, so a late one cannot crash the process.
        stream.on('error', () => undefined);
        (stream as NodeJS.ReadableStream & { destroy(err?: Error): void }).destroy(abortReason(signal));
      }
    };
    if (signal.aborted) {
      onAbort();
      reject(abortReason(signal));
      return;
    }
    signal.addEventListener('abort', onAbort, { once: true });
    docker.modem.followProgress(
      stream,
      (err: Error | null) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) reject(abortReason(signal));
        else if (err) reject(err);
        else if (streamError !== undefined) reject(engineError(streamError));
        else resolve();
      },
      (event: unknown) => {
        if (streamError !== undefined || !isRecord(event)) return;
        if (moved(event)) heartbeat?.();
        if (event.error !== undefined || event.errorDetail !== undefined) streamError = dockerErrorMessage({ json: event });
      },
    );
  });
}

/**
 * Whether a pull progress event says something moved: a layer's status changed or its byte count
 * grew. dockerd repeats nothing while a registry stalls, but a repeated line must not count either.
 */
export function pullProgress(): (event: Record<string, unknown>) => boolean {
  const seen = new Map<string, string>();
  return (event) => {
    const id = typeof event.id === 'string' ? event.id : '';
    const detail = isRecord(event.progressDetail) ? event.progressDetail : {};
    const key = `${String(event.status ?? '')}|${String(detail.current ?? '')}`;
    if (seen.get(id) === key) return false;
    seen.set(id, key);
    return true;
  };
}
