/** Moved to src/runtimes/compose/spec.ts (the runtime owns its type's schema); re-exported for existing imports. */
export * from '../runtimes/compose/spec.js';
