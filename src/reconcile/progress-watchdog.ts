/**
 * The stuck watchdog watches progress, not a wall-clock deadline: its signal aborts only once
 * nothing was reported for `seconds`. A pull that keeps receiving bytes (the runtime calls touch()
 * per progress event) or a step that keeps changing phase is never stuck, however long it takes.
 *
 * One timer per step, re-armed only when it fires: touch() is a field write, so a pull reporting
 * hundreds of progress events costs no timer churn.
 */
export class ProgressWatchdog {
  private readonly controller = new AbortController();
  private readonly ms: number;
  private last: number;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    readonly seconds: number,
    private readonly reason: () => Error,
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.ms = seconds * 1000;
    this.last = clock();
    this.arm(this.ms);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Something moved (bytes arrived, a phase changed): the no-progress clock starts again. */
  touch(): void {
    this.last = this.clock();
  }

  dispose(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(delay: number): void {
    this.timer = setTimeout(() => this.check(), Math.max(1, delay));
    this.timer.unref?.();
  }

  private check(): void {
    this.timer = null;
    const idle = this.clock() - this.last;
    if (idle >= this.ms) this.controller.abort(this.reason());
    else this.arm(this.ms - idle);
  }
}
