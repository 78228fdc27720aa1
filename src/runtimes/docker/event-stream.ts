import { StringDecoder } from 'node:string_decoder';

import type Dockerode from 'dockerode';

import { WorkloadError } from '../../errors/index.js';
import type { Logger } from '../../log.js';
import type { RuntimeEvent } from '../runtime.js';
import { translateDockerError } from './translate-error.js';

const EVENT_LINE_MAX_BYTES = 1024 * 1024;

/**
 * Reads Docker's event stream (one JSON object per line) until the signal aborts, handing each line
 * that `parse` turns into an event to `onEvent`. Shared by every runtime on the Docker API, so a
 * stream ending, a destroyed response or a throwing consumer is handled in one place. An end the
 * caller did not ask for rejects with RUNTIME_UNAVAILABLE; reconnecting is the caller's job.
 */
export async function streamDockerEvents(
  docker: Dockerode,
  filters: Record<string, string[]>,
  parse: (line: string) => RuntimeEvent | undefined,
  onEvent: (e: RuntimeEvent) => void,
  signal: AbortSignal,
  logger: Logger,
): Promise<void> {
  if (signal.aborted) return;
  let stream: NodeJS.ReadableStream;
  try {
    stream = await docker.getEvents({ since: Math.floor(Date.now() / 1000), filters, abortSignal: signal });
  } catch (err) {
    if (signal.aborted) return;
    throw translateDockerError(err, 'events');
  }

  await new Promise<void>((resolve, reject) => {
    const decoder = new StringDecoder('utf8');
    let buf = '';
    let settled = false;

    const deliver = (line: string): void => {
      const event = parse(line);
      if (!event) return;
      try {
        onEvent(event);
      } catch (err) {
        // A failing consumer must not end the stream for every other event.
        logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'docker event handler threw');
      }
    };
    const onData = (chunk: Buffer | string): void => {
      buf += typeof chunk === 'string' ? chunk : decoder.write(chunk);
      let nl: number;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line !== '') deliver(line);
      }
      if (buf.length > EVENT_LINE_MAX_BYTES) buf = '';
    };
    const finish = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      signal.removeEventListener('abort', onAbort);
      stream.removeListener('data', onData);
      stream.removeListener('error', finish);
      stream.removeListener('end', onEnd);
      stream.removeListener('close', onEnd);
      // A destroyed response may still emit 'error' ("aborted"); without a listener that would crash the process.
      stream.on('error', () => undefined);
      if (signal.aborted) resolve();
      else if (err !== undefined) reject(translateDockerError(err, 'events'));
      else reject(new WorkloadError('RUNTIME_UNAVAILABLE', 'the Docker event stream ended', { details: { operation: 'events' } }));
    };
    const onEnd = (): void => finish();
    const onAbort = (): void => {
      const destroyable = stream as NodeJS.ReadableStream & { destroy?: () => void };
      if (typeof destroyable.destroy === 'function') destroyable.destroy();
      finish();
    };

    stream.on('data', onData);
    stream.on('error', finish);
    stream.on('end', onEnd);
    stream.on('close', onEnd);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
  });
}
