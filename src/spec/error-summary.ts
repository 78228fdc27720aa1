import * as v from 'valibot';
import { ERROR_CODES, type ErrorCode } from '../errors/codes.js';

const d = v.description;

export const errorCode = v.picklist(Object.keys(ERROR_CODES) as ErrorCode[]);

/** An error as the status report carries it (also inside runtime report blocks). */
export const errorSummarySchema = v.object({
  code: v.pipe(errorCode, d('Error code from the closed set.')),
  message: v.pipe(v.string(), d('The exact runtime message.')),
  userMessage: v.pipe(v.string(), d('What it means for a person.')),
  transient: v.pipe(v.boolean(), d('Retried with backoff when true.')),
  details: v.pipe(
    v.optional(v.record(v.string(), v.union([v.string(), v.number(), v.boolean()]))),
    d('Extra facts about the error (e.g. the port in conflict); never secrets.'),
  ),
});
