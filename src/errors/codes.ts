/**
 * The closed set of error codes. Each knows whether it is transient (retried with backoff)
 * or terminal (waits for a new revision, retryToken or `persys-agent retry`), and how to say
 * it to a person. Adding a code means adding it here, so the table stays exhaustive.
 */
export const ERROR_CODES = {
  INVALID_SPEC: { transient: false, user: 'The workload spec is not valid for this host.' },
  POLICY_DENIED: { transient: false, user: "The host's policy does not allow this workload." },
  // Transient as an engine reports it (a VM start refused for memory: retried, bounded by the budget).
  // Admission's own denials are terminal until the host changes (DenyStep.untilHostChanges, docs/resources.md).
  INSUFFICIENT_RESOURCES: { transient: true, user: 'The host does not have enough free CPU, memory or disk for this workload.' },
  STORAGE_QUOTA_EXCEEDED: { transient: false, user: 'The storage pool quota would be exceeded.' },
  IMAGE_NOT_FOUND: { transient: false, user: 'The image does not exist in its registry (check the name and tag).' },
  IMAGE_PULL_FAILED: { transient: true, user: 'The image could not be pulled (registry unreachable or slow).' },
  REGISTRY_AUTH_FAILED: { transient: false, user: 'The registry refused the credentials for this image.' },
  PORT_CONFLICT: { transient: true, user: 'A host port the workload needs is already in use.' },
  MOUNT_FAILED: { transient: false, user: 'A volume or host path could not be mounted.' },
  NO_SPACE: { transient: true, user: 'The host ran out of disk space.' },
  OUT_OF_MEMORY: { transient: true, user: 'The workload was killed for using more memory than its limit.' },
  RUNTIME_UNAVAILABLE: { transient: true, user: 'The runtime for this workload (Docker or libvirt) is not available on this host.' },
  CONTAINER_EXITED: { transient: true, user: 'The container exited.' },
  CRASH_LOOP: { transient: true, user: 'The workload keeps crashing after it starts.' },
  DEPENDENCY_FAILED: { transient: true, user: 'A service this compose service depends on did not become ready (started, healthy or completed).' },
  VM_DEFINE_FAILED: { transient: false, user: 'libvirt refused the virtual machine definition.' },
  VM_START_FAILED: { transient: true, user: 'The virtual machine could not be started.' },
  VM_NO_IP: { transient: true, user: 'The virtual machine has not obtained an IP address yet.' },
  DESIRED_STATE_INVALID: { transient: false, user: 'The desired-state document was rejected; the last good one stays in force.' },
  DESIRED_STATE_STALE: { transient: false, user: 'The desired-state document is older than the one already applied.' },
  DESIRED_STATE_UNAVAILABLE: { transient: true, user: 'The desired-state document could not be fetched; the last good one stays in force.' },
  DESIRED_STATE_EXPIRED: { transient: false, user: 'The desired-state document has expired (expiresAt); the last good one stays in force until the publisher signs a fresh one.' },
  SIGNATURE_INVALID: { transient: false, user: 'The desired-state document is not signed by a trusted key.' },
  UPDATE_LOCKED: { transient: false, user: 'An update lock held the update past update.lockTimeoutSeconds and the workload asked to fail (onLockTimeout: fail); the previous revision keeps running.' },
  STUCK: { transient: true, user: 'The workload stayed in a transitional phase too long.' },
  TIMEOUT: { transient: true, user: 'The runtime did not answer in time.' },
  INTERNAL: { transient: true, user: 'The agent hit an internal error.' },
} as const satisfies Record<string, { transient: boolean; user: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export const isErrorCode = (s: string): s is ErrorCode => Object.hasOwn(ERROR_CODES, s);
