import type { Config } from '../config/schema.js';
import { createHttpClient, type HttpClient } from './http-client.js';

const originOf = (url: string): string | undefined => {
  try {
    return new URL(url).origin;
  } catch {
    return undefined;
  }
};

/**
 * One HTTP client for the desired-state source and one for status reports, each with its own
 * credentials. status.* falls back to source.* for the CA always (a trust anchor is not a
 * secret), and for the client certificate and token only when both URLs have the same origin:
 * a source token is never sent to a different status host.
 */
export function createSyncClients(config: Pick<Config, 'source' | 'status'>, sourceUrl: string, statusUrl: string): { source: HttpClient; status: HttpClient } {
  const src = config.source;
  const st = config.status;
  const timeoutMs = src.timeoutSeconds * 1000;
  const source = createHttpClient({
    ...(src.caFile ? { caFile: src.caFile } : {}),
    ...(src.certFile ? { certFile: src.certFile } : {}),
    ...(src.keyFile ? { keyFile: src.keyFile } : {}),
    ...(src.tokenFile ? { tokenFile: src.tokenFile } : {}),
    allowInsecureHttp: src.allowInsecureHttp,
    timeoutMs,
    keyPrefix: 'source',
  });
  const sameOrigin = originOf(sourceUrl) !== undefined && originOf(sourceUrl) === originOf(statusUrl);
  const inherit = sameOrigin && st.certFile === undefined && st.keyFile === undefined;
  const caFile = st.caFile ?? src.caFile;
  const certFile = st.certFile ?? (inherit ? src.certFile : undefined);
  const keyFile = st.keyFile ?? (inherit ? src.keyFile : undefined);
  const tokenFile = st.tokenFile ?? (sameOrigin ? src.tokenFile : undefined);
  const status = createHttpClient({
    ...(caFile ? { caFile } : {}),
    ...(certFile ? { certFile } : {}),
    ...(keyFile ? { keyFile } : {}),
    ...(tokenFile ? { tokenFile } : {}),
    allowInsecureHttp: src.allowInsecureHttp,
    timeoutMs,
    keyPrefix: st.caFile || st.certFile || st.keyFile || st.tokenFile ? 'status' : 'source',
  });
  return { source, status };
}
