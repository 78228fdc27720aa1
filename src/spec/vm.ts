/** Moved to src/runtimes/libvirt/spec.ts (the runtime owns its type's schema); re-exported for existing imports. */
export * from '../runtimes/libvirt/spec.js';
