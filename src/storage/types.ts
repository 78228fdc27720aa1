/**
 * What the storage layer keeps about pools and volumes, in its own small durable file
 * (<stateDir>/storage.json, written atomically). The file is the truth for what was intended and
 * how far a volume's creation got, so a crash at any point is completed or undone on the next pass.
 */

export type PoolType = 'dir' | 'loop' | 'libvirt';
export const POOL_TYPES: readonly PoolType[] = ['dir', 'loop', 'libvirt'];

/** dir: accounted at admission only; loop and libvirt: the volume's own image is its size (kernel/qemu enforce). */
export type Enforcement = 'accounted' | 'hard';
export const enforcementOf = (t: PoolType): Enforcement => (t === 'dir' ? 'accounted' : 'hard');

export type ReclaimPolicy = 'retain' | 'delete';

/**
 * How far a volume's creation got. Written BEFORE the action it names is started is `intent`; each
 * later one is written after its action succeeded. Resuming from a step <= `image` throws the image
 * away and starts over (a half-formatted image is never used); from `formatted` on it is kept.
 */
export const CREATE_STEPS = ['intent', 'image', 'formatted', 'attached', 'engine'] as const;
export type CreateStep = (typeof CREATE_STEPS)[number];

export type VolumePhase = 'Creating' | 'Ready' | 'Growing' | 'Retained' | 'Deleting' | 'Failed';

export interface VolumeState {
  name: string;
  pool: string;
  poolType: PoolType;
  sizeBytes: number;
  reclaimPolicy: ReclaimPolicy;
  phase: VolumePhase;
  /** The last create step that completed (or `intent`, written before the first). */
  step: CreateStep;
  /** dir: the directory; loop: the image file; libvirt: the volume's file in the pool. */
  path: string;
  /** loop: the stable device path handed to Docker (a symlink to the current /dev/loopN). */
  devicePath?: string;
  /** loop: the loop device the image was last attached to. */
  loopDevice?: string;
  /** A grow in progress: the size being grown to (the image may already have it). */
  growingTo?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  createdAt: string;
  error?: string;
}

export interface PoolState {
  name: string;
  type: PoolType;
  path: string;
  capacityBytes: number;
  /** libvirt: the pool was defined and started. */
  defined?: boolean;
}

export interface StorageState {
  version: 1;
  pools: Record<string, PoolState>;
  volumes: Record<string, VolumeState>;
}

export const emptyStorageState = (): StorageState => ({ version: 1, pools: {}, volumes: {} });

/** The document's declarations, as the storage layer reads them. */
export interface PoolDecl {
  name: string;
  type: PoolType;
  path: string;
  capacityBytes: number;
}
export interface VolumeDecl {
  name: string;
  pool: string;
  sizeBytes: number;
  reclaimPolicy?: ReclaimPolicy;
  mode?: number;
  uid?: number;
  gid?: number;
}
