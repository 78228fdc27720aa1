import type { Config } from '../config/schema.js';
import { ConfigError } from '../errors/index.js';
import type { TrustSettings } from './desired-state-trust.js';
import { loadPublicKeys } from './dsse.js';

/**
 * trust.* as the source uses it, or undefined when no key is configured (documents are then
 * accepted unsigned). A threshold no set of the configured keys can reach is a start-up error.
 */
export function trustSettingsFrom(config: Pick<Config, 'trust'>): TrustSettings | undefined {
  const t = config.trust;
  if (t.publicKeys.length === 0) {
    if (t.threshold !== 1) throw new ConfigError([`trust.threshold: ${t.threshold} is set but trust.publicKeys is empty`]);
    if (t.allowWildcardNode) throw new ConfigError(['trust.allowWildcardNode: set but trust.publicKeys is empty (it only applies to signed documents)']);
    return undefined;
  }
  const keys = loadPublicKeys(t.publicKeys);
  if (t.threshold > keys.length) {
    throw new ConfigError([`trust.threshold: ${t.threshold} is more than the ${keys.length} distinct key${keys.length === 1 ? '' : 's'} in trust.publicKeys`]);
  }
  return { keys, threshold: t.threshold, allowWildcardNode: t.allowWildcardNode };
}
