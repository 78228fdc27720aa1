import * as v from 'valibot';
import { envName, safeName, workloadSchema } from '../../spec/common.js';

const d = v.description;

/**
 * A compose app. The YAML is parsed and validated by the compose runtime (its own issue);
 * here it is only bounded in size so a document cannot carry an unbounded blob.
 */
export const composeSpec = v.strictObject({
  project: v.pipe(safeName('compose project'), d('Compose project name (com.docker.compose.project).')),
  composeYaml: v.pipe(
    v.string(),
    v.minLength(1, 'composeYaml must not be empty'),
    v.maxLength(1024 * 1024, 'composeYaml is larger than 1 MiB'),
    d('The compose file (Compose Specification YAML).'),
  ),
  env: v.pipe(v.optional(v.record(envName, v.string())), d('Variables for ${VAR} interpolation in the compose file.')),
  profiles: v.pipe(v.optional(v.array(safeName('compose profile'))), d('Compose profiles to enable.')),
});
export type ComposeSpec = v.InferOutput<typeof composeSpec>;

export const composeWorkload = workloadSchema('compose', composeSpec, {
  type: 'A compose app (native engine on the Docker API).',
  spec: 'The compose project and its file.',
});
export type ComposeWorkload = v.InferOutput<typeof composeWorkload>;
