/**
 * Writes schemas/<name>.schema.json from the valibot schemas (`npm run schemas`).
 * test/unit/schemas.test.ts fails when the checked-in files differ from what this writes.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildJsonSchemas, renderJsonSchema, SCHEMA_NAMES, schemaFileName } from '../src/spec/json-schema.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = path.join(root, 'schemas');

async function main(): Promise<void> {
  const schemas = buildJsonSchemas();
  await mkdir(dir, { recursive: true });
  for (const name of SCHEMA_NAMES) {
    const file = path.join(dir, schemaFileName(name));
    const text = renderJsonSchema(schemas[name]);
    const before = await readFile(file, 'utf8').catch(() => null);
    if (before === text) {
      console.log(`unchanged ${path.relative(root, file)}`);
      continue;
    }
    await writeFile(file, text);
    console.log(`wrote ${path.relative(root, file)}`);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
