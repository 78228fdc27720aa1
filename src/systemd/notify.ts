/**
 * sd_notify for a service run by systemd with `Type=notify`, without a native module.
 *
 * The protocol is one AF_UNIX datagram to $NOTIFY_SOCKET, and Node's `dgram` has no AF_UNIX
 * datagram sockets. So each message is handed to systemd's own `systemd-notify` (always present
 * where systemd is). It sends the datagram and then waits (sd_notify_barrier) until systemd has
 * processed it, so the message is attributed to this unit although the sender exits at once; the
 * unit sets `NotifyAccess=all` because the sender is a child of the main process. `--pid` names the
 * agent (our pid) as the main pid. Messages are rare (READY once, WATCHDOG every half interval),
 * so a process per message costs nothing that matters.
 */
import { execFile } from 'node:child_process';

import type { Logger } from '../log.js';

/** How a message is sent; a test passes its own. */
export type NotifySend = (fields: readonly string[]) => Promise<void>;

export interface SystemdEnv {
  NOTIFY_SOCKET?: string | undefined;
  WATCHDOG_USEC?: string | undefined;
  WATCHDOG_PID?: string | undefined;
}

const SEND_TIMEOUT_MS = 10_000;

/** True when systemd started us as Type=notify (it then sets NOTIFY_SOCKET). */
export const underSystemdNotify = (env: SystemdEnv): boolean => (env.NOTIFY_SOCKET ?? '') !== '';

/**
 * The interval at which WATCHDOG=1 must be sent, per sd_watchdog_enabled(3): half of
 * $WATCHDOG_USEC, and only when $WATCHDOG_PID is unset or names this process. Null: no watchdog.
 */
export function watchdogPingIntervalMs(env: SystemdEnv, pid: number): number | null {
  const raw = env.WATCHDOG_USEC?.trim();
  if (!raw || !/^\d+$/.test(raw)) return null;
  const usec = Number(raw);
  if (!Number.isSafeInteger(usec) || usec <= 0) return null;
  const forPid = env.WATCHDOG_PID?.trim();
  if (forPid && forPid !== String(pid)) return null;
  return Math.max(1, Math.floor(usec / 1000 / 2));
}

/** A STATUS= value must be one line (the datagram is newline-separated fields). */
export const statusField = (text: string): string => `STATUS=${text.replace(/[\r\n]+/g, ' ').slice(0, 200)}`;

/** `systemd-notify --pid=<agent pid> FIELD...` (it waits for systemd to process the message). */
export function systemdNotifySend(pid: number = process.pid): NotifySend {
  return (fields) =>
    new Promise<void>((resolve, reject) => {
      execFile('systemd-notify', [`--pid=${pid}`, ...fields], { timeout: SEND_TIMEOUT_MS }, (err, _stdout, stderr) => {
        if (err) reject(new Error(`systemd-notify ${fields.join(' ')} failed: ${stderr.trim() || err.message}`));
        else resolve();
      });
    });
}

export interface SystemdNotifierOptions {
  env: SystemdEnv;
  logger: Logger;
  pid?: number;
  send?: NotifySend;
}

/**
 * The agent's side of Type=notify: `ready()` after the first reconcile, WATCHDOG=1 from a timer on
 * the event loop while the agent runs (a blocked event loop stops the pings and systemd restarts
 * the agent), `stopping()` on shutdown. Outside systemd every call does nothing.
 */
export class SystemdNotifier {
  private readonly send: NotifySend | null;
  private readonly intervalMs: number | null;
  private timer: NodeJS.Timeout | undefined;
  private isReady = false;
  private lastStatus = '';
  private readyTimer: NodeJS.Timeout | undefined;
  /** Messages go out one at a time and in order. */
  private chain: Promise<void> = Promise.resolve();
  sent: string[][] = [];

  constructor(private readonly opts: SystemdNotifierOptions) {
    const pid = opts.pid ?? process.pid;
    this.send = underSystemdNotify(opts.env) ? (opts.send ?? systemdNotifySend(pid)) : null;
    this.intervalMs = this.send ? watchdogPingIntervalMs(opts.env, pid) : null;
  }

  get active(): boolean {
    return this.send !== null;
  }

  get watchdogIntervalMs(): number | null {
    return this.intervalMs;
  }

  /** Starts the watchdog pings (if systemd asked for them); they stop when `signal` aborts. */
  startWatchdog(signal: AbortSignal): void {
    if (this.intervalMs === null || this.timer) return;
    this.timer = setInterval(() => void this.notify(['WATCHDOG=1']), this.intervalMs);
    this.timer.unref();
    signal.addEventListener('abort', () => clearInterval(this.timer), { once: true });
  }

  /** READY=1 once; later calls only update the status text, and only when it changed. */
  ready(status: string): Promise<void> {
    if (this.isReady && status === this.lastStatus) return this.chain;
    const fields = this.isReady ? [statusField(status)] : ['READY=1', statusField(status)];
    this.isReady = true;
    this.lastStatus = status;
    clearTimeout(this.readyTimer);
    return this.notify(fields);
  }

  /**
   * READY=1 after `ms` even if the first reconcile has not finished (a long image pull), so a slow
   * first cycle is not taken for a failed start and killed by TimeoutStartSec.
   */
  readyAtLatest(ms: number, status: string): void {
    if (!this.send || this.isReady) return;
    this.readyTimer = setTimeout(() => void this.ready(status), ms);
    this.readyTimer.unref();
  }

  status(text: string): Promise<void> {
    return this.notify([statusField(text)]);
  }

  stopping(): Promise<void> {
    clearInterval(this.timer);
    clearTimeout(this.readyTimer);
    return this.notify(['STOPPING=1', statusField('shutting down')]);
  }

  private notify(fields: string[]): Promise<void> {
    const send = this.send;
    if (!send) return Promise.resolve();
    this.chain = this.chain.then(async () => {
      try {
        await send(fields);
        this.sent.push(fields);
      } catch (err) {
        // Never fatal: a lost READY shows as a start timeout in systemctl, a lost WATCHDOG as a restart.
        this.opts.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'sd_notify failed');
      }
    });
    return this.chain;
  }
}
