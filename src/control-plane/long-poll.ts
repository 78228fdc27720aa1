/**
 * Held desired-state GETs, per node, with a global bound. A held request is answered when its
 * node's document changes (wake) or its wait ends (timeout), whichever comes first, exactly once.
 */

export interface Held {
  nodeId: string;
  /** Answers the request; `woken` says whether a change (not the timeout) ended the wait. */
  finish(woken: boolean): void;
}

export class HeldRequests {
  readonly #byNode = new Map<string, Set<Held>>();
  readonly #max: number;
  #count = 0;

  constructor(max: number) {
    this.#max = max;
  }

  get count(): number {
    return this.#count;
  }

  get max(): number {
    return this.#max;
  }

  /**
   * Holds `respond` for up to `waitMs`. Returns false (and holds nothing) when the bound is reached:
   * the caller then answers at once without Preference-Applied, so that agent sleeps its poll
   * interval instead, which is how the server sheds load gracefully.
   * `onClose` registers the caller's "client went away" hook; the hold is dropped then.
   */
  hold(nodeId: string, waitMs: number, respond: (woken: boolean) => void, onClose: (drop: () => void) => void): boolean {
    if (this.#count >= this.#max) return false;
    let done = false;
    const held: Held = {
      nodeId,
      finish: (woken) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.#remove(held);
        respond(woken);
      },
    };
    const timer = setTimeout(() => held.finish(false), waitMs);
    let set = this.#byNode.get(nodeId);
    if (set === undefined) this.#byNode.set(nodeId, (set = new Set()));
    set.add(held);
    this.#count++;
    onClose(() => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.#remove(held);
    });
    return true;
  }

  /** Wakes every request held for `nodeId`; returns how many. */
  wake(nodeId: string): number {
    const set = this.#byNode.get(nodeId);
    if (set === undefined) return 0;
    const all = [...set];
    for (const h of all) h.finish(true);
    return all.length;
  }

  /** Ends every hold as if its wait had passed (shutdown). */
  releaseAll(): void {
    for (const set of [...this.#byNode.values()]) for (const h of [...set]) h.finish(false);
  }

  #remove(h: Held): void {
    const set = this.#byNode.get(h.nodeId);
    if (set?.delete(h) === true) {
      this.#count--;
      if (set.size === 0) this.#byNode.delete(h.nodeId);
    }
  }
}

/** `Prefer: wait=N` (RFC 7240), possibly among other preferences; 0 when absent. */
export function preferWaitSeconds(prefer: string | undefined): number {
  if (prefer === undefined) return 0;
  const m = /(?:^|[,;\s])wait\s*=\s*"?(\d{1,7})"?/i.exec(prefer);
  return m?.[1] === undefined ? 0 : Number(m[1]);
}

/** RFC 9110 If-None-Match: `*` or a list of tags, weak comparison. */
export function etagMatches(ifNoneMatch: string | undefined, etag: string): boolean {
  if (ifNoneMatch === undefined) return false;
  const trimmed = ifNoneMatch.trim();
  if (trimmed === '*') return true;
  const strip = (t: string) => t.trim().replace(/^W\//, '');
  return trimmed.split(',').some((t) => strip(t) === strip(etag));
}
