/**
 * At most one run at a time; requests during a run coalesce into exactly one more run. Each
 * request's promise settles after a run that *started after* the request has ended, so a caller
 * (`retry`, `/v1/sync`) gets an answer that reflects what it asked for, never the end of a run that
 * was already under way.
 *
 * Requests are counted: a run covers every request made before it started. The loop checks for
 * uncovered requests and marks itself idle in one synchronous step, so no request can fall between
 * "nothing left to do" and "not running" (the gap the first loop had).
 */
export class SingleFlight {
  private active: Promise<void> | null = null;
  /** Number of the newest request. */
  private requested = 0;
  /** Newest request covered by a run that has started. */
  private covered = 0;
  private waiters: { seq: number; resolve: () => void }[] = [];

  /** `stop` aborted: no run starts any more and waiting requests are released. */
  constructor(
    private readonly run: () => Promise<void>,
    private readonly stop?: AbortSignal,
  ) {}

  get busy(): boolean {
    return this.active !== null;
  }

  /** Asks for a run; settles after a run that started after this call has ended (or at stop). */
  request(): Promise<void> {
    const seq = ++this.requested;
    const answered = new Promise<void>((resolve) => this.waiters.push({ seq, resolve }));
    this.active ??= this.loop();
    return answered;
  }

  /** Settles once no run is going. */
  async idle(): Promise<void> {
    while (this.active) await this.active;
  }

  private async loop(): Promise<void> {
    try {
      while (this.covered < this.requested && !this.stop?.aborted) {
        const covers = this.requested;
        this.covered = covers;
        try {
          await this.run();
        } catch {
          // The run logs its own failures; one that throws must not wedge the flight.
        }
        this.release(covers);
      }
    } finally {
      // Synchronous with the loop's last check above: nothing can slip in between.
      this.active = null;
      this.release(this.requested);
    }
  }

  private release(upTo: number): void {
    const keep: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (w.seq <= upTo) w.resolve();
      else keep.push(w);
    }
    this.waiters = keep;
  }
}
