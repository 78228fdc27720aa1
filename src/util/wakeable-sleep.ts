import { sleep } from './backoff.js';

/**
 * A sleep that another part of the program can cut short (the poller's triggerNow, the
 * reporter's markDirty), without aborting the caller's own signal.
 */
export class WakeableSleep {
  #wake: AbortController | null = null;

  async sleep(ms: number, signal: AbortSignal): Promise<void> {
    const wake = new AbortController();
    this.#wake = wake;
    const onAbort = () => wake.abort();
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      if (!signal.aborted) await sleep(ms, wake.signal);
    } finally {
      signal.removeEventListener('abort', onAbort);
      if (this.#wake === wake) this.#wake = null;
    }
  }

  /** Ends the current sleep, if any; returns whether one was cut short. */
  wake(): boolean {
    const w = this.#wake;
    w?.abort();
    return w !== null;
  }
}
