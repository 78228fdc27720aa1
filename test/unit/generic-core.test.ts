import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';

/*
 * The core is generic: no runtime name and no workload type is named in the planner, executor,
 * records, store, status report or agent wiring. Each type's knowledge lives in its runtime folder
 * (src/runtimes/<name>/) and reaches the core through the registry (src/runtimes/registry.ts).
 */

const ROOT = join(import.meta.dirname, '..', '..');
const DIRS = ['src/reconcile', 'src/store', 'src/status'];
const FILES = ['src/agent.ts'];
const NAMES = /\b(docker|libvirt|container|vm|compose)\b/i;

/** The code without its comments (comments may explain in these words; code may not use them). */
function code(text: string): string {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1');
}

async function files(): Promise<string[]> {
  const out = [...FILES];
  for (const d of DIRS) for (const f of await readdir(join(ROOT, d))) if (f.endsWith('.ts')) out.push(`${d}/${f}`);
  return out;
}

describe('generic core', () => {
  it('names no runtime and no workload type in src/reconcile, src/store, src/status and src/agent.ts', async () => {
    const found: string[] = [];
    const list = await files();
    assert.ok(list.length >= 10, `found the files (${list.length})`);
    for (const f of list) {
      code(await readFile(join(ROOT, f), 'utf8'))
        .split('\n')
        .forEach((line, i) => {
          if (NAMES.test(line)) found.push(`${f}:${i + 1}: ${line.trim()}`);
        });
    }
    assert.deepEqual(found, []);
  });

  it('the check finds a name when there is one', () => {
    assert.ok(NAMES.test(code("const t = 'container';")));
    assert.ok(NAMES.test(code('if (rt.name === "libvirt") x();')));
    assert.ok(!NAMES.test(code('// a container comment\nconst x = 1; /* vm */')));
  });
});
