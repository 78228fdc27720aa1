import * as v from 'valibot';
import { envName, safeName, workloadSchema } from '../../spec/common.js';
import { parseComposeCached } from './model.js';

const d = v.description;

/**
 * A compose app. The YAML is bounded in size, then parsed, interpolated and validated (model.ts): every
 * problem becomes an issue at `spec.composeYaml` naming the compose path, so `persys-agent validate`
 * and the loader reject the document before anything reaches an engine.
 */
const composeFields = v.strictObject({
  project: v.pipe(safeName('compose project'), d('Compose project name (com.docker.compose.project).')),
  composeYaml: v.pipe(
    v.string(),
    v.minLength(1, 'composeYaml must not be empty'),
    v.maxLength(1024 * 1024, 'composeYaml is larger than 1 MiB'),
    d('The compose file (Compose Specification YAML).'),
  ),
  env: v.pipe(v.optional(v.record(envName, v.string())), d('Variables for ${VAR} interpolation in the compose file.')),
  profiles: v.pipe(v.optional(v.array(safeName('compose profile'))), d('Compose profiles to enable.')),
  volumes: v.pipe(
    v.optional(v.picklist(['keep', 'delete'])),
    d('What removing the app does with its named volumes: keep (default; re-adding the app reuses them) or delete.'),
  ),
});

export const composeSpec = v.pipe(
  composeFields,
  v.rawCheck(({ dataset, addIssue }) => {
    // A file over the bound (or empty) already has its issue; it is not parsed.
    if (!dataset.typed || dataset.value.composeYaml.length === 0 || dataset.value.composeYaml.length > 1024 * 1024) return;
    const r = parseComposeCached(dataset.value);
    if (r.ok) return;
    for (const issue of r.issues) {
      addIssue({
        message: `${issue.path}: ${issue.message}`,
        path: [{ type: 'object', origin: 'value', input: dataset.value, key: 'composeYaml', value: dataset.value.composeYaml }],
      });
    }
  }),
);
export type ComposeSpec = v.InferOutput<typeof composeSpec>;

export const composeWorkload = workloadSchema('compose', composeSpec, {
  type: 'A compose app (native engine on the Docker API).',
  spec: 'The compose project and its file.',
});
export type ComposeWorkload = v.InferOutput<typeof composeWorkload>;
