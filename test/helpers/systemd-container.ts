/**
 * A real systemd for the install tests: a container of the local dockerd whose PID 1 is systemd
 * (image built by scripts/testbed/systemd.sh), plus the agent tarball as a fleet host gets it.
 *
 *   const box = await SystemdContainer.start(runId, { '/mnt/install': dir });
 *   await box.exec(['systemctl', 'is-active', 'persys-agent']);
 *   await box.remove();                       // also: removeTestContainers(runId) in after()
 *
 * Every container carries the label dev.persys.test-run=<runId>, so a test removes exactly its own.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import type { EngineStatus } from './engines.js';

const run = promisify(execFile);
export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const INSTALL_SH = join(REPO, 'install.sh');
export const UNIT_FILE = join(REPO, 'systemd', 'persys-agent.service');
const TESTBED_SCRIPT = join(REPO, 'scripts', 'testbed', 'systemd.sh');
const DOCKER = '/usr/bin/docker';
export const RUN_LABEL = 'dev.persys.test-run';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command; never throws on a non-zero exit (the result carries it). */
export async function sh(file: string, args: readonly string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; uid?: number; gid?: number; cwd?: string } = {}): Promise<ExecResult> {
  try {
    const { stdout, stderr } = await run(file, [...args], {
      timeout: opts.timeoutMs ?? 120_000,
      maxBuffer: 64 * 1024 * 1024,
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string; message?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: `${e.stderr ?? ''}${typeof e.code === 'number' ? '' : (e.message ?? '')}` };
  }
}

const printed = async (flag: string): Promise<string> => {
  const r = await sh('bash', [TESTBED_SCRIPT, flag]);
  if (r.code !== 0) throw new Error(`scripts/testbed/systemd.sh ${flag}: ${r.stderr.trim()}`);
  return r.stdout.trim();
};
export const systemdImage = (): Promise<string> => printed('--print-image');
export const nodeTarball = (): Promise<string> => printed('--print-node-tarball');

/** The 'systemd' engine of the test suites: the image, the Node tarball, shellcheck and systemd-analyze. */
export async function systemdTestbedAvailable(): Promise<EngineStatus> {
  const hint = 'run scripts/testbed/systemd.sh as root';
  for (const bin of ['shellcheck', 'systemd-analyze']) {
    if ((await sh('sh', ['-c', `command -v ${bin}`])).code !== 0) return { ok: false, reason: `${bin} not found (${hint})` };
  }
  try {
    const image = await systemdImage();
    const inspect = await sh(DOCKER, ['image', 'inspect', image]);
    if (inspect.code !== 0) return { ok: false, reason: `image ${image} not built (${hint})` };
    await nodeTarball();
    return { ok: true, reason: `image ${image}` };
  } catch (err) {
    return { ok: false, reason: `${err instanceof Error ? err.message : String(err)} (${hint})` };
  }
}

/** `npm pack` of this checkout (its dist/ must be built): the tarball a fleet host installs. */
export async function packAgent(destDir: string): Promise<string> {
  const r = await sh('npm', ['pack', '--silent', '--pack-destination', destDir], { cwd: REPO, timeoutMs: 180_000 });
  if (r.code !== 0) throw new Error(`npm pack failed: ${r.stderr}`);
  const name = r.stdout.trim().split('\n').pop() ?? '';
  return join(destDir, name);
}

/** The same package under another version (an "upgrade" tarball), built with tar like npm's. */
export async function repackWithVersion(tarball: string, version: string, destDir: string): Promise<string> {
  const work = await mkdtemp(join(destDir, 'repack-'));
  try {
    await sh('tar', ['-xzf', tarball, '-C', work]);
    const pkgFile = join(work, 'package', 'package.json');
    const pkg = JSON.parse(await readFile(pkgFile, 'utf8')) as Record<string, unknown>;
    pkg.version = version;
    await writeFile(pkgFile, `${JSON.stringify(pkg, null, 2)}\n`);
    const out = join(destDir, `persys-agent-${version}.tgz`);
    const r = await sh('tar', ['-czf', out, '-C', work, 'package']);
    if (r.code !== 0) throw new Error(`tar failed: ${r.stderr}`);
    return out;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Removes every container of this test run (by its run label), even after a failed run. */
export async function removeTestContainers(runId: string): Promise<number> {
  const ls = await sh(DOCKER, ['ps', '-aq', '--filter', `label=${RUN_LABEL}=${runId}`]);
  const ids = ls.stdout.split('\n').filter((x) => x.trim() !== '');
  if (ids.length > 0) await sh(DOCKER, ['rm', '-f', '-v', ...ids]);
  return ids.length;
}

export class SystemdContainer {
  private constructor(readonly id: string, readonly runId: string) {}

  /** Starts a container whose PID 1 is systemd and waits until `systemctl is-system-running` settles. */
  static async start(runId: string, mounts: Record<string, string>): Promise<SystemdContainer> {
    const image = await systemdImage();
    const args = [
      'run', '-d', '--name', `persys-install-${runId}`, '--label', `${RUN_LABEL}=${runId}`,
      '--network', 'none',
      // What runs systemd in a container here (testbed.md): not --privileged, which runc refuses.
      '--cap-add', 'SYS_ADMIN', '--security-opt', 'seccomp=unconfined', '--cgroupns=host',
      '-v', '/sys/fs/cgroup:/sys/fs/cgroup:rw', '--tmpfs', '/run', '--tmpfs', '/run/lock', '--tmpfs', '/tmp',
      '-e', 'container=docker',
    ];
    for (const [inside, outside] of Object.entries(mounts)) args.push('-v', `${outside}:${inside}:ro`);
    args.push(image, '/lib/systemd/systemd');
    const r = await sh(DOCKER, args);
    if (r.code !== 0) throw new Error(`docker run ${image}: ${r.stderr.trim()}`);
    const box = new SystemdContainer(r.stdout.trim(), runId);
    const deadline = Date.now() + 90_000;
    let state = '';
    while (Date.now() < deadline) {
      state = (await box.exec(['systemctl', 'is-system-running'])).stdout.trim();
      if (state === 'running' || state === 'degraded') return box;
      await new Promise((res) => setTimeout(res, 500));
    }
    const failed = await box.exec(['systemctl', '--failed', '--no-pager']);
    await box.remove();
    throw new Error(`systemd in the container did not come up within 90 s (state '${state}'): ${failed.stdout}`);
  }

  exec(cmd: readonly string[], timeoutMs = 120_000): Promise<ExecResult> {
    return sh(DOCKER, ['exec', this.id, ...cmd], { timeoutMs });
  }

  /** `systemctl show -p A,B,...` as a map. */
  async show(unit: string, props: readonly string[]): Promise<Record<string, string>> {
    const r = await this.exec(['systemctl', 'show', unit, '-p', props.join(',')]);
    const out: Record<string, string> = {};
    for (const line of r.stdout.split('\n')) {
      const eq = line.indexOf('=');
      if (eq > 0) out[line.slice(0, eq)] = line.slice(eq + 1);
    }
    return out;
  }

  async remove(): Promise<void> {
    await sh(DOCKER, ['rm', '-f', '-v', this.id]);
  }
}
