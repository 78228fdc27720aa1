/**
 * Config keys the schema knows (they are part of the documented contract) but this version does
 * not implement. "A key that is accepted is honoured": setting one refuses to start (exit 2) with
 * this reason, instead of being silently ignored. A key leaves this list with its implementation.
 */
export const UNSUPPORTED_CONFIG_KEYS: readonly { key: string; reason: string }[] = [
];

/** Every leaf path under `raw` (the config as given, before defaults) that falls under an unsupported key. */
export function unsupportedConfigKeys(raw: Record<string, unknown>): { path: string; reason: string }[] {
  const out: { path: string; reason: string }[] = [];
  for (const { key, reason } of UNSUPPORTED_CONFIG_KEYS) {
    let node: unknown = raw;
    for (const k of key.split('.')) node = node !== null && typeof node === 'object' && !Array.isArray(node) ? (node as Record<string, unknown>)[k] : undefined;
    if (node === undefined) continue;
    const leaves: string[] = [];
    const walk = (n: unknown, path: string): void => {
      // An empty object sets nothing; a value of any other kind is refused where it stands.
      if (n !== null && typeof n === 'object' && !Array.isArray(n)) {
        for (const [k, child] of Object.entries(n)) walk(child, `${path}.${k}`);
      } else leaves.push(path);
    };
    walk(node, key);
    for (const path of leaves) out.push({ path, reason });
  }
  return out;
}
