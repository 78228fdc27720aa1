/** Moved to src/runtimes/docker/spec.ts (the runtime owns its type's schema); re-exported for existing imports. */
export * from '../runtimes/docker/spec.js';
