export { ERROR_CODES, isErrorCode, type ErrorCode } from './codes.js';
export { WorkloadError, SourceError, ConfigError, toWorkloadError, type ErrorSummary } from './workload-error.js';
