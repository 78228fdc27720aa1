import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { resolveNodeIdReadOnly } from '../identity/node-id.js';
import { silentLogger } from '../log.js';
import { observeRuntimes } from '../reconcile/loop.js';
import { plan, type PlanGate } from '../reconcile/planner.js';
import { createRuntimes } from '../runtimes/create-runtimes.js';
import { BUILTIN_TYPES } from '../runtimes/registry.js';
import { admissionGate } from '../resources/admission.js';
import { ConditionTracker } from '../resources/conditions.js';
import { sampleNodeResources } from '../resources/monitor.js';
import { formatBytes, formatCpus } from '../resources/units.js';
import { SourceError } from '../errors/index.js';
import { formatIssues, validateDesiredState } from '../spec/validate.js';
import { openSigned } from '../trust/desired-state-trust.js';
import { trustSettingsFrom } from '../trust/settings.js';
import type { StoreData } from '../store/types.js';
import { storageGate } from '../storage/gate.js';
import { readStorageState } from '../storage/manager.js';
import { documentVolumes, planStorage } from '../storage/plan.js';
import type { StorageState } from '../storage/types.js';
import { namedVolumeDir, updateGates } from '../updates/gates.js';
import { UpdateState } from '../updates/state.js';
import { parseArgs, UsageError } from './args.js';
import { configFromArgs } from './config-args.js';

const HELP = `Usage: persys-agent plan --desired FILE [--config FILE] [--json]

Prints what the agent would do now with FILE as its desired state, and why. Reads the
agent's store and asks the runtimes what exists; changes nothing.
`;

/** Reads the store without opening it for writing: plan must change nothing, not even move a corrupt file. */
async function readStoreReadOnly(stateDir: string): Promise<StoreData['records']> {
  try {
    const data = JSON.parse(await readFile(join(stateDir, 'state.json'), 'utf8')) as Partial<StoreData>;
    return data.records ?? {};
  } catch {
    return {};
  }
}

export async function planCommand(argv: string[], io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  const args = parseArgs(argv, ['config', 'desired']);
  if (args.options.help) {
    io.stdout.write(HELP);
    return 0;
  }
  const desiredPath = args.options.desired ?? args.positionals[0];
  if (typeof desiredPath !== 'string') throw new UsageError('--desired FILE is required');
  const config = configFromArgs(args, io.stderr);
  if (!config) return 2;

  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(desiredPath, 'utf8'));
  } catch (err) {
    io.stderr.write(`${desiredPath}: ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  // Signatures are checked as the agent would (trust.* of the config): a signed document is planned
  // from its payload; an unsigned one on a host that requires signatures is refused, as the agent would.
  try {
    raw = openSigned(raw, trustSettingsFrom(config)).payload;
  } catch (err) {
    io.stderr.write(`${desiredPath}: the agent would refuse it: ${err instanceof SourceError ? `${err.code}: ` : ''}${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
  const v = validateDesiredState(raw);
  if (!v.ok) {
    io.stderr.write(`${desiredPath}: invalid desired state:\n${formatIssues(v.issues)}\n`);
    return 1;
  }
  const stateDir = resolve(config.stateDir);
  const { nodeId } = await resolveNodeIdReadOnly({ ...(config.nodeId ? { override: config.nodeId } : {}), stateDir });
  // Only health() and observe() are called: neither writes anything.
  const { runtimes } = createRuntimes(config, { nodeId, stateDir, logger: silentLogger() });
  const view = await observeRuntimes(runtimes, AbortSignal.timeout(30_000));
  for (const rt of runtimes) await rt.close?.();
  const records = await readStoreReadOnly(stateDir);
  // The agent's admission gate, on one sample of the host taken now (a condition is on when this
  // sample is over a threshold: plan keeps no history for the transition period).
  const now = new Date();
  const paths = [{ role: 'state', path: stateDir }];
  for (const h of view.health.values()) if (h.dataRoot) paths.push({ role: 'imagefs', path: h.dataRoot });
  for (const pool of (v.value as { storagePools?: { path?: unknown }[] }).storagePools ?? []) if (typeof pool.path === 'string') paths.push({ role: 'storage', path: pool.path });
  const host = await sampleNodeResources({ settings: config.resources, paths }, now);
  const tracker = new ConditionTracker(config.resources.pressure);
  tracker.observe({ memoryAvailableBytes: host.memoryAvailableBytes, filesystems: host.filesystems, pids: host.pids }, now.getTime());
  const gates: PlanGate[] = [
    admissionGate(
      { allocatable: host.allocatable, overcommit: config.resources.overcommit, requireRequests: config.policy.requireResourceRequests, pressure: tracker.active(now.getTime()) },
      { desired: v.value.workloads, observed: view.observed, records, types: BUILTIN_TYPES },
    ),
  ];
  // Maintenance windows, update locks, update.maxParallel, as the agent would apply them now (updates.json read, never written).
  const stale: string[] = [];
  gates.push(
    ...updateGates({
      config,
      desired: v.value,
      stateDir,
      volumeDir: namedVolumeDir((rt) => view.health.get(rt)?.dataRoot),
      state: new UpdateState(stateDir, true),
      warn: (_f, m) => void stale.push(m),
    }),
  );
  // Storage: what the agent would do to pools and volumes; a workload whose volume is refused is denied the same way.
  const storageState = await readStorageState(stateDir).catch((): StorageState => ({ version: 1, pools: {}, volumes: {} }));
  const volumes = documentVolumes(v.value, BUILTIN_TYPES);
  const sp = planStorage({ pools: v.value.storagePools ?? [], volumes, state: storageState, allowedPrefixes: config.policy.allowedStoragePrefixes });
  // As the agent would see it once this pass's volume steps are applied: created ones are Ready.
  const afterStorage: StorageState = { ...storageState, volumes: { ...storageState.volumes } };
  for (const a of sp.volumes) {
    if (a.kind === 'create' || a.kind === 'resume' || a.kind === 'grow' || a.kind === 'update') {
      afterStorage.volumes[a.name] = { name: a.name, pool: 'pool' in a ? a.pool.name : a.state.pool, poolType: 'pool' in a ? a.pool.type : a.state.poolType, sizeBytes: 0, reclaimPolicy: 'retain', phase: 'Ready', step: 'engine', path: '', createdAt: now.toISOString() };
    }
  }
  gates.push(storageGate(BUILTIN_TYPES, new Set(volumes.map((x) => x.name)), sp, afterStorage));
  const p = plan({ desired: v.value, records, observed: view.observed, runtimeUp: view.runtimeUp, downReason: view.downReason, policy: config.policy, now, gates });
  const storageSteps = [
    ...sp.pools.map((a) => (a.kind === 'deny' ? { kind: 'deny', target: 'pool', name: a.name, reason: `${a.code}: ${a.message}`, code: a.code } : { kind: a.kind, target: 'pool', name: a.pool.name, reason: a.reason })),
    ...sp.volumes.map((a) => ({ kind: a.kind, target: 'volume', name: a.name, reason: a.reason, ...(a.kind === 'deny' ? { code: a.code } : {}) })),
  ];

  const nodeWarning = v.value.nodeId !== nodeId && v.value.nodeId !== '*' ? `document is for node ${v.value.nodeId}, this node is ${nodeId}` : null;
  const warnings = [...(nodeWarning ? [nodeWarning] : []), ...stale];
  if (args.options.json) {
    const steps = p.steps.map((s) => ({
      kind: s.kind,
      target: s.target,
      workloadId: s.workloadId,
      reason: s.reason,
      ...(s.kind === 'wait' ? { until: s.until, ...(s.hold ? { hold: s.hold.waiting } : {}) } : {}),
      ...(s.kind === 'deny' ? { code: s.code, violations: s.violations } : {}),
    }));
    io.stdout.write(
      JSON.stringify({ nodeId, generation: v.value.generation, runtimes: view.status, node: { capacity: host.capacity, allocatable: host.allocatable, conditions: tracker.conditions(now.getTime()) }, storage: { steps: storageSteps, pools: sp.accounts }, steps, unavailable: p.unavailable, forget: p.forget, warnings }, null, 2) + '\n',
    );
    return 0;
  }
  const out: string[] = [`Plan for node ${nodeId} (generation ${v.value.generation}, ${v.value.workloads.length} workloads)`];
  if (nodeWarning) out.push(`warning: ${nodeWarning}; the agent would reject it`);
  for (const w of stale) out.push(`warning: ${w}`);
  for (const [name, s] of Object.entries(view.status)) out.push(`runtime ${name}: ${s}`);
  const alloc = host.allocatable;
  out.push(`node: allocatable ${formatCpus(alloc.cpus ?? 0)}, ${formatBytes(alloc.memoryBytes ?? 0)} memory${alloc.diskBytes !== undefined ? `, ${formatBytes(alloc.diskBytes)} disk` : ''}`);
  for (const c of tracker.active(now.getTime())) out.push(`node: ${c.type}: ${c.reason}; no new workloads are admitted`);
  const width = Math.max(8, ...p.steps.map((s) => s.workloadId.length));
  for (const a of sp.accounts) out.push(`pool ${a.name} (${a.type}, ${a.enforcement}): ${formatBytes(a.capacityBytes)} capacity, ${formatBytes(a.allocatedBytes)} allocated after this plan`);
  for (const s of storageSteps) if (s.kind !== 'noop') out.push(`  ${s.kind.padEnd(9)} ${`${s.target} ${s.name}`.padEnd(width)}  ${s.reason}`);
  for (const s of p.steps) out.push(`  ${s.kind.padEnd(9)} ${s.workloadId.padEnd(width)}  ${s.reason}`);
  for (const u of p.unavailable) out.push(`  ${'blocked'.padEnd(9)} ${u.workloadId.padEnd(width)}  RUNTIME_UNAVAILABLE: ${u.reason}`);
  const counts = new Map<string, number>();
  for (const s of p.steps) counts.set(s.kind, (counts.get(s.kind) ?? 0) + 1);
  const summary = [...counts].filter(([k]) => k !== 'noop').map(([k, n]) => `${n} ${k}`);
  out.push(summary.length ? `${summary.join(', ')}; ${counts.get('noop') ?? 0} unchanged` : 'Nothing to do.');
  io.stdout.write(out.join('\n') + '\n');
  return 0;
}
