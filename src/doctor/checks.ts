/**
 * `persys-agent doctor`: the pure half. Each check turns what a probe saw into ok / fail / skip, a
 * one-line detail and, when it fails, the fix a person would apply. The probes (probes.ts) only
 * gather facts; everything decided here is unit-tested.
 */

export type CheckStatus = 'ok' | 'fail' | 'skip';

export interface CheckResult {
  name: string;
  status: CheckStatus;
  detail: string;
  /** What to do about a failure (absent when ok). */
  fix?: string;
}

export const ok = (name: string, detail: string): CheckResult => ({ name, status: 'ok', detail });
export const fail = (name: string, detail: string, fix: string): CheckResult => ({ name, status: 'fail', detail, fix });
export const skip = (name: string, detail: string): CheckResult => ({ name, status: 'skip', detail });

/** Largest clock difference against the server's Date header that is still fine (TLS, signature expiry). */
export const MAX_CLOCK_SKEW_SECONDS = 60;
/** Below this much free space in the state dir's file system, writes (store, VM disks, images) are at risk. */
export const MIN_FREE_BYTES = 512 * 1024 * 1024;
export const MIN_FREE_RATIO = 0.05;

export interface StateDirFacts {
  path: string;
  /** null: the directory does not exist. */
  stat: { isDirectory: boolean; mode: number; uid: number } | null;
  /** The uid the agent runs as (doctor is run as that user). */
  uid: number;
  writable: boolean;
}

export function checkStateDir(f: StateDirFacts): CheckResult {
  const name = 'state dir';
  if (f.stat === null) return ok(name, `${f.path} does not exist yet; the agent creates it (mode 0700) at start`);
  if (!f.stat.isDirectory) return fail(name, `${f.path} is not a directory`, `move it away; the agent needs a directory there (or set stateDir)`);
  const mode = f.stat.mode & 0o777;
  const octal = `0${mode.toString(8)}`;
  if (f.stat.uid !== f.uid) return fail(name, `${f.path} is owned by uid ${f.stat.uid}, the agent runs as uid ${f.uid}`, `chown ${f.uid} ${f.path}`);
  // 0711 is what the libvirt runtime sets on purpose (QEMU must traverse to VM disks, not list).
  if ((mode & 0o066) !== 0 || (mode & 0o700) !== 0o700) {
    return fail(name, `${f.path} has mode ${octal}: group/others can read or write the agent's store and socket`, `chmod 700 ${f.path}`);
  }
  if (!f.writable) return fail(name, `${f.path} is not writable`, `check the mount (read-only?) and permissions of ${f.path}`);
  return ok(name, `${f.path} (mode ${octal}, owner uid ${f.stat.uid})`);
}

export interface DiskFacts {
  path: string;
  freeBytes: number;
  totalBytes: number;
}

const gib = (n: number) => `${(n / 1024 ** 3).toFixed(1)} GiB`;

export function checkDisk(f: DiskFacts): CheckResult {
  const name = 'disk space';
  const ratio = f.totalBytes > 0 ? f.freeBytes / f.totalBytes : 0;
  const detail = `${gib(f.freeBytes)} free of ${gib(f.totalBytes)} (${(ratio * 100).toFixed(1)}%) at ${f.path}`;
  if (f.freeBytes < MIN_FREE_BYTES || ratio < MIN_FREE_RATIO) {
    return fail(name, detail, `free space on the file system of ${f.path} (at least ${gib(MIN_FREE_BYTES)} and ${MIN_FREE_RATIO * 100}%): docker image prune, old VM disks, logs`);
  }
  return ok(name, detail);
}

/** Clock skew from the server's `Date` header (second precision), against our clock at the response. */
export function checkClock(dateHeader: string | undefined, nowMs: number, server: string): CheckResult {
  const name = 'clock';
  if (!dateHeader) return skip(name, `${server} sent no Date header to compare against`);
  const serverMs = Date.parse(dateHeader);
  if (Number.isNaN(serverMs)) return skip(name, `${server} sent an unreadable Date header (${dateHeader})`);
  // The header has whole seconds: up to 1 s of "skew" is rounding.
  const skewS = Math.round((nowMs - serverMs) / 1000);
  const detail = `${Math.abs(skewS)} s ${skewS >= 0 ? 'ahead of' : 'behind'} ${server}`;
  if (Math.abs(skewS) > MAX_CLOCK_SKEW_SECONDS) {
    return fail(name, detail, 'synchronise the clock: timedatectl set-ntp true (or chrony / systemd-timesyncd); TLS and signature expiry depend on it');
  }
  return ok(name, detail);
}

/** What an HTTP answer of the desired-state source means for a person. */
export function checkSourceAnswer(status: number, url: string, nodeId: string, hasToken: boolean): CheckResult {
  const name = 'source';
  if (status === 200 || status === 304) return ok(name, `${url} answered ${status}`);
  if (status === 401 || status === 403) {
    return fail(name, `${url} answered ${status}: the server refused our credentials`, hasToken ? 'check source.tokenFile holds this node\'s current token' : 'the server wants a token: set source.tokenFile (or mTLS: source.certFile/keyFile)');
  }
  if (status === 404) return fail(name, `${url} answered 404`, `publish a desired state for node ${nodeId}, or fix source.url`);
  return fail(name, `${url} answered ${status}`, 'see the server\'s logs; the agent keeps the last good desired state meanwhile');
}

/** A network error of the source request, with the likely fix. */
export function checkSourceError(message: string, url: string): CheckResult {
  const name = 'source';
  if (/certificate|self.signed|unable to verify|CERT_|UNABLE_TO_GET_ISSUER/i.test(message)) {
    return fail(name, `${url}: TLS: ${message}`, 'set source.caFile to the CA that signed the server\'s certificate (or fix the server\'s chain)');
  }
  if (/ENOTFOUND|EAI_AGAIN/.test(message)) return fail(name, `${url}: ${message}`, 'check the host name in source.url and the DNS resolver');
  if (/ECONNREFUSED|EHOSTUNREACH|ENETUNREACH|ETIMEDOUT|timed? ?out|deadline/i.test(message)) {
    return fail(name, `${url}: ${message}`, 'check that the server runs and that a firewall or proxy lets this host reach it');
  }
  return fail(name, `${url}: ${message}`, 'check source.url and the source.* credentials');
}

export interface DoctorReport {
  ok: boolean;
  checks: CheckResult[];
}

export const summarize = (checks: CheckResult[]): DoctorReport => ({ ok: checks.every((c) => c.status !== 'fail'), checks });

/** One line per check, the fix indented under a failure. */
export function formatReport(r: DoctorReport): string {
  const width = Math.max(...r.checks.map((c) => c.name.length), 4);
  const lines: string[] = [];
  for (const c of r.checks) {
    lines.push(`${c.status.padEnd(4)}  ${c.name.padEnd(width)}  ${c.detail}`);
    if (c.fix) lines.push(`${' '.repeat(6 + width)}  fix: ${c.fix}`);
  }
  const failed = r.checks.filter((c) => c.status === 'fail').length;
  lines.push(failed === 0 ? 'all checks passed' : `${failed} check(s) failed`);
  return `${lines.join('\n')}\n`;
}
