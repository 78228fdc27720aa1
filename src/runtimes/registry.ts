import { hashCanonical } from './canonical-json.js';
import { composeWorkload } from './compose/spec.js';
import { composeType } from './compose/type.js';
import { containerWorkload } from './docker/spec.js';
import { containerType } from './docker/type.js';
import { vmWorkload } from './libvirt/spec.js';
import { vmType } from './libvirt/type.js';
import type { TypeDescriptor, WorkloadBase } from './runtime.js';

/*
 * The one registry of workload types. It is the only module outside src/runtimes/<name>/ that names
 * them; everything else (planner, executor, records, status report, agent) asks it. A test (or a
 * later runtime) adds types with `with(...)`, without editing anything else.
 */

interface Memo {
  descriptor: TypeDescriptor;
  canonical: object;
  hash: string;
}

const BY_CONTENT_MAX_CHARS = 16 * 1024 * 1024;
const BY_CONTENT_MAX_KEY = 64 * 1024;

export class TypeRegistry {
  private readonly byName = new Map<string, TypeDescriptor>();
  /**
   * Two caches, because the planner hashes every desired workload on every pass (5,000 workloads
   * must plan well under 50 ms):
   *  - by object: the desired document is immutable once loaded, so identity is a safe key, and a
   *    WeakMap lets an old document's entries go with it;
   *  - by content: a store that hands out a fresh copy of the same document, or a new generation
   *    that changed only a few workloads, costs one JSON.stringify per spec instead of a
   *    canonicalisation and a sha256. Bounded in characters (a compose file may be 1 MiB), and
   *    cleared when full: simple, and always correct.
   */
  private readonly byObject = new WeakMap<WorkloadBase, Memo>();
  private readonly byContent = new Map<string, Memo>();
  private byContentChars = 0;
  /** Hashes under older versions (objects labelled by older agents): rare, so by object only. */
  private readonly olderByObject = new WeakMap<WorkloadBase, Map<number, string | undefined>>();

  constructor(types: readonly TypeDescriptor[]) {
    for (const t of types) {
      if (this.byName.has(t.type)) throw new Error(`registry: workload type ${t.type} registered twice`);
      if (!Number.isInteger(t.hashVersion) || t.hashVersion < 1) throw new Error(`registry: ${t.type} has no valid hash version`);
      this.byName.set(t.type, t);
    }
  }

  /** This registry plus more types (a runtime's, or a test's). */
  with(...types: readonly TypeDescriptor[]): TypeRegistry {
    return new TypeRegistry([...this.byName.values(), ...types]);
  }

  get(type: string): TypeDescriptor | undefined {
    return this.byName.get(type);
  }

  /** The descriptor of a workload's type; a type the registry does not know is a programming error. */
  of(w: Pick<WorkloadBase, 'type'>): TypeDescriptor {
    const d = this.byName.get(w.type);
    if (!d) throw new Error(`registry: unknown workload type ${w.type}`);
    return d;
  }

  all(): TypeDescriptor[] {
    return [...this.byName.values()];
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  private memo(w: WorkloadBase): Memo {
    const d = this.of(w);
    const hit = this.byObject.get(w);
    if (hit && hit.descriptor === d) return hit;
    const key = `${w.type}\u0000${JSON.stringify(w.spec)}`;
    let m = this.byContent.get(key);
    if (!m) {
      // Frozen because it is shared between callers (planner, executor, records) and workloads.
      // The top level only: a deep freeze of 5,000 specs was a tenth of a cold plan, and no caller
      // reaches below the top level to write.
      const canonical = Object.freeze(d.canonical(w, d.hashVersion) ?? {});
      m = { descriptor: d, canonical, hash: hashCanonical(w.type, canonical) };
      if (key.length <= BY_CONTENT_MAX_KEY) {
        if (this.byContentChars + key.length > BY_CONTENT_MAX_CHARS) {
          this.byContent.clear();
          this.byContentChars = 0;
        }
        this.byContent.set(key, m);
        this.byContentChars += key.length;
      }
    }
    this.byObject.set(w, m);
    return m;
  }

  /** The canonical spec under the type's current hash version (memoised and frozen: do not mutate). */
  canonical(w: WorkloadBase): object {
    return this.memo(w).canonical;
  }

  /** `sha256:<hex>` of the canonical spec under the current hash version. */
  hash(w: WorkloadBase): string {
    return this.memo(w).hash;
  }

  /** The current hash version of the workload's type. */
  version(w: Pick<WorkloadBase, 'type'>): number {
    return this.of(w).hashVersion;
  }

  /** The hash under an older (or the current) version's rules; undefined for a version this agent does not know. */
  hashAt(w: WorkloadBase, version: number): string | undefined {
    const d = this.of(w);
    if (version === d.hashVersion) return this.hash(w);
    let m = this.olderByObject.get(w);
    if (!m) {
      m = new Map();
      this.olderByObject.set(w, m);
    }
    if (m.has(version)) return m.get(version);
    const c = version >= 1 && version < d.hashVersion ? d.canonical(w, version) : undefined;
    const h = c === undefined ? undefined : hashCanonical(w.type, c);
    m.set(version, h);
    return h;
  }
}

/** The schemas of the built-in workload types, for the desired-state document's variant. */
export const WORKLOAD_SCHEMAS = [containerWorkload, composeWorkload, vmWorkload] as const;
export const BUILTIN_TYPE_NAMES = ['container', 'compose', 'vm'] as const;

/** The built-in workload types: containers (docker), VMs (libvirt), compose apps (native compose on docker). */
export const BUILTIN_TYPES = new TypeRegistry([containerType, composeType, vmType]);
