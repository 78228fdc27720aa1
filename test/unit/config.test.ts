import assert from 'node:assert/strict';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as v from 'valibot';

import { configEnvNames, configLeaves, configPathKeys, describeConfig, loadConfig, type FlagValue } from '../../src/config/load.js';
import { configSchema, type Config } from '../../src/config/schema.js';
import { ConfigError } from '../../src/errors/index.js';

const tmp = mkdtempSync(join(tmpdir(), 'persys-config-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

let n = 0;
function writeConfig(content: unknown, name?: string): string {
  const dir = join(tmp, `c${n++}`);
  mkdirSync(dir, { recursive: true });
  const file = join(dir, name ?? 'config.json');
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

const load = (o: { file?: string; env?: NodeJS.ProcessEnv; flags?: Record<string, FlagValue>; cwd?: string } = {}): Config =>
  loadConfig({ env: o.env ?? {}, flags: o.flags ?? {}, cwd: o.cwd ?? '/work/cwd', ...(o.file === undefined ? {} : { file: o.file }) });

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    return err;
  }
  assert.fail('expected a ConfigError');
}

describe('loadConfig: defaults', () => {
  it('is the schema defaults with stateDir made absolute against cwd', () => {
    const c = load();
    const defaults = v.parse(configSchema, {});
    assert.deepEqual({ ...c, stateDir: defaults.stateDir }, defaults);
    assert.equal(c.stateDir, '/work/cwd/.persys-agent');
    assert.equal(c.source.pollIntervalSeconds, 30);
    assert.equal(c.metrics.listen, '127.0.0.1:9464');
    assert.equal(c.docker.socketPath, '/var/run/docker.sock');
    assert.equal(c.nodeId, undefined);
  });

  it('ignores environment variables outside PERSYS_', () => {
    const c = load({ env: { PATH: '/bin', HOME: '/root', persys_lower: 'x' } });
    assert.equal(c.logLevel, 'info');
  });
});

describe('loadConfig: layering', () => {
  it('file < env < flags', () => {
    const file = writeConfig({ logLevel: 'warn', source: { pollIntervalSeconds: 10, longPollSeconds: 20, timeoutSeconds: 40 } });
    const c = load({
      file,
      env: { PERSYS_SOURCE_LONG_POLL_SECONDS: '25', PERSYS_SOURCE_TIMEOUT_SECONDS: '45' },
      flags: { 'source.timeoutSeconds': '50' },
    });
    assert.equal(c.logLevel, 'warn'); // file only
    assert.equal(c.source.pollIntervalSeconds, 10); // file only
    assert.equal(c.source.longPollSeconds, 25); // env over file
    assert.equal(c.source.timeoutSeconds, 50); // flag over env over file
    assert.equal(c.source.maxBodyBytes, 8 * 1024 * 1024); // default
  });

  it('a file section does not wipe defaults of its other keys', () => {
    const c = load({ file: writeConfig({ metrics: { push: { url: 'https://pgw:9091' } } }) });
    assert.equal(c.metrics.push.url, 'https://pgw:9091');
    assert.equal(c.metrics.push.intervalSeconds, 60);
    assert.equal(c.metrics.listen, '127.0.0.1:9464');
  });

  it('an empty env value counts as unset', () => {
    const c = load({ file: writeConfig({ logLevel: 'debug' }), env: { PERSYS_LOG_LEVEL: '' } });
    assert.equal(c.logLevel, 'debug');
  });

  it('sets nested keys from env and flags (metrics.push.url, nodeId)', () => {
    const c = load({ env: { PERSYS_METRICS_PUSH_URL: 'http://pgw:9091', PERSYS_NODE_ID: 'edge-7' }, flags: { 'status.url': 'https://h/s/{nodeId}' } });
    assert.equal(c.metrics.push.url, 'http://pgw:9091');
    assert.equal(c.nodeId, 'edge-7');
    assert.equal(c.status.url, 'https://h/s/{nodeId}');
  });
});

describe('env names', () => {
  it('are derived for every leaf of the schema', () => {
    const names = configEnvNames();
    for (const expected of [
      'PERSYS_NODE_ID',
      'PERSYS_STATE_DIR',
      'PERSYS_LOG_LEVEL',
      'PERSYS_SOURCE_URL',
      'PERSYS_SOURCE_POLL_INTERVAL_SECONDS',
      'PERSYS_SOURCE_LONG_POLL_SECONDS',
      'PERSYS_SOURCE_CA_FILE',
      'PERSYS_SOURCE_CERT_FILE',
      'PERSYS_SOURCE_KEY_FILE',
      'PERSYS_SOURCE_TOKEN_FILE',
      'PERSYS_SOURCE_ALLOW_INSECURE_HTTP',
      'PERSYS_STATUS_URL',
      'PERSYS_STATUS_HEARTBEAT_SECONDS',
      'PERSYS_TRUST_PUBLIC_KEYS',
      'PERSYS_RECONCILE_INTERVAL_SECONDS',
      'PERSYS_RECONCILE_CONCURRENCY',
      'PERSYS_METRICS_LISTEN',
      'PERSYS_METRICS_PUSH_URL',
      'PERSYS_METRICS_PUSH_INTERVAL_SECONDS',
      'PERSYS_DOCKER_SOCKET_PATH',
      'PERSYS_LIBVIRT_URI',
      'PERSYS_LIBVIRT_DOMAIN_TYPE',
      'PERSYS_POLICY_ALLOWED_HOST_PATH_PREFIXES',
      'PERSYS_SHUTDOWN_DRAIN_SECONDS',
    ]) {
      assert.ok(names.includes(expected), `${expected} missing`);
    }
    assert.equal(new Set(names).size, names.length);
    for (const name of names) assert.match(name, /^PERSYS_[A-Z0-9_]+$/);
  });

  it('cover every leaf of the defaults object (no key left out of the walk)', () => {
    const leafPaths = (o: unknown, prefix: string): string[] =>
      typeof o === 'object' && o !== null && !Array.isArray(o)
        ? Object.entries(o).flatMap(([k, val]) => leafPaths(val, prefix ? `${prefix}.${k}` : k))
        : [prefix];
    const walked = new Set(configLeaves().map((l) => l.path));
    for (const p of leafPaths(v.parse(configSchema, {}), '')) assert.ok(walked.has(p), `${p} not walked`);
    // Optional keys without a default do not appear in the defaults object; they are walked too.
    for (const p of ['nodeId', 'source.url', 'source.caFile', 'status.url', 'metrics.push.url']) assert.ok(walked.has(p), p);
  });

  it('every path key is a real config key', () => {
    const walked = new Set(configLeaves().map((l) => l.path));
    for (const p of configPathKeys()) assert.ok(walked.has(p), p);
  });

  it('each one reaches its key', () => {
    // Values invalid for their type must come back as an error on that leaf, attributed to that env name.
    const bad: Record<string, string> = {};
    for (const leaf of configLeaves()) {
      bad[leaf.envName] = leaf.kind === 'number' ? '-12345' : leaf.kind === 'boolean' ? 'maybe' : leaf.kind === 'string[]' ? '[1]' : '::bad value::';
    }
    const e = configError(() => load({ env: bad }));
    const accepted: string[] = [];
    for (const leaf of configLeaves()) {
      const hit = e.issues.some((i) => i.startsWith(`${leaf.path}: `) && i.endsWith(`(from ${leaf.envName}=${JSON.stringify(bad[leaf.envName])})`));
      if (!hit) {
        assert.equal(leaf.kind, 'string', `${leaf.envName} did not reach ${leaf.path}`);
        accepted.push(leaf.envName);
      }
    }
    // Free-form strings (paths, the libvirt URI) take anything: check they land where they belong.
    const good = Object.fromEntries(accepted.map((name) => [name, 'some-value']));
    const c = load({ env: good, cwd: '/cwd' }) as unknown as Record<string, Record<string, unknown>>;
    for (const leaf of configLeaves().filter((l) => accepted.includes(l.envName))) {
      const got = leaf.keys.reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], c);
      assert.ok(got === 'some-value' || got === '/cwd/some-value', `${leaf.envName} -> ${leaf.path} = ${String(got)}`);
    }
    assert.ok(accepted.length < configLeaves().length / 2);
  });

  it('numbers and booleans set from env', () => {
    const c = load({ env: { PERSYS_RECONCILE_CONCURRENCY: '7', PERSYS_SHUTDOWN_DRAIN_SECONDS: '12', PERSYS_DOCKER_ENABLED: 'false' } });
    assert.equal(c.reconcile.concurrency, 7);
    assert.equal(c.shutdown.drainSeconds, 12);
    assert.equal(c.docker.enabled, false);
  });
});

describe('coercion', () => {
  it('numbers, booleans and string arrays from env', () => {
    const c = load({
      env: {
        PERSYS_RETRY_MULTIPLIER: '1.5',
        PERSYS_SOURCE_ALLOW_INSECURE_HTTP: '1',
        PERSYS_LIBVIRT_ENABLED: 'FALSE',
        PERSYS_METRICS_PUSH_DELETE_ON_SHUTDOWN: '0',
        PERSYS_POLICY_ALLOWED_HOST_PATH_PREFIXES: ' /srv , /data,, ',
        PERSYS_TRUST_PUBLIC_KEYS: '["/etc/persys/a.pem", "/etc/persys/b,c.pem"]',
      },
    });
    assert.equal(c.retry.multiplier, 1.5);
    assert.equal(c.source.allowInsecureHttp, true);
    assert.equal(c.libvirt.enabled, false);
    assert.equal(c.metrics.push.deleteOnShutdown, false);
    assert.deepEqual(c.policy.allowedHostPathPrefixes, ['/srv', '/data']);
    assert.deepEqual(c.trust.publicKeys, ['/etc/persys/a.pem', '/etc/persys/b,c.pem']);
  });

  it('an array is cleared with []', () => {
    const c = load({ file: writeConfig({ policy: { allowedHostPathPrefixes: ['/srv'] } }), env: { PERSYS_POLICY_ALLOWED_HOST_PATH_PREFIXES: '[]' } });
    assert.deepEqual(c.policy.allowedHostPathPrefixes, []);
  });

  it('flags: a bare boolean flag and string values', () => {
    const c = load({ flags: { 'policy.allowPrivileged': true, 'docker.enabled': 'false', 'reconcile.concurrency': '2', 'source.url': undefined } });
    assert.equal(c.policy.allowPrivileged, true);
    assert.equal(c.docker.enabled, false);
    assert.equal(c.reconcile.concurrency, 2);
    assert.equal(c.source.url, undefined);
  });

  it('bad values say what was expected and where they came from', () => {
    const e = configError(() =>
      load({
        env: { PERSYS_SOURCE_POLL_INTERVAL_SECONDS: 'soon', PERSYS_DOCKER_ENABLED: 'yes', PERSYS_TRUST_PUBLIC_KEYS: '[1' },
        flags: { 'reconcile.concurrency': true },
      }),
    );
    assert.deepEqual(e.issues, [
      'docker.enabled: must be true, false, 1 or 0 (from PERSYS_DOCKER_ENABLED="yes")',
      'reconcile.concurrency: needs a value (from --reconcile.concurrency)',
      'source.pollIntervalSeconds: must be a number (from PERSYS_SOURCE_POLL_INTERVAL_SECONDS="soon")',
      e.issues[3] ?? '',
    ]);
    assert.match(e.issues[3] ?? '', /^trust\.publicKeys: is not a valid JSON array .*\(from PERSYS_TRUST_PUBLIC_KEYS="\[1"\)$/);
  });
});

describe('errors', () => {
  it('an unknown PERSYS_ variable is refused, with a suggestion', () => {
    const e = configError(() => load({ env: { PERSYS_SOURCE_POLL_INTERVAL: '10', PERSYS_FOO: 'x' } }));
    assert.equal(e.issues.length, 2);
    assert.ok(e.issues.includes('PERSYS_FOO: unknown environment variable (no such config key)'));
    assert.ok(e.issues.some((i) => i.startsWith('PERSYS_SOURCE_POLL_INTERVAL: unknown environment variable') && i.includes('did you mean PERSYS_SOURCE_POLL_INTERVAL_SECONDS?')));
    assert.match(e.message, /PERSYS_FOO/);
  });

  it('allowlisted non-config PERSYS_ variables are accepted', () => {
    assert.doesNotThrow(() =>
      load({ env: { PERSYS_REQUIRE_ENGINES: 'all', PERSYS_TEST_TIMEOUT_MS: '0', PERSYS_LOG_PRETTY: '1', PERSYS_SKIP_BUILD: '1', PERSYS_TESTBED_DIR: '/x' } }),
    );
  });

  it('unknown keys in the file are errors, at any depth', () => {
    const file = writeConfig({ sorce: { url: 'https://x' }, source: { pollInterval: 5 }, metrics: { push: { uri: 'x' } } });
    const e = configError(() => load({ file }));
    assert.deepEqual(e.issues, [
      `metrics.push.uri: unknown key (from ${file})`,
      `sorce: unknown key (from ${file})`,
      `source.pollInterval: unknown key (from ${file})`,
    ]);
  });

  it('an unknown flag is an error, with a suggestion', () => {
    const e = configError(() => load({ flags: { 'source.ulr': 'https://x', verbose: true, stateDri: 'x' } }));
    assert.deepEqual(e.issues, [
      '--source.ulr: unknown option (no such config key); did you mean --source.url?',
      '--stateDri: unknown option (no such config key); did you mean --stateDir?',
      '--verbose: unknown option (no such config key)',
    ]);
  });

  it('every bad key is reported together with its source', () => {
    const file = writeConfig({ logLevel: 'loud', source: { url: 'ftp://x', pollIntervalSeconds: 10 }, reconcile: { concurrency: 0 } });
    const e = configError(() =>
      load({
        file,
        env: { PERSYS_SOURCE_POLL_INTERVAL_SECONDS: '0', PERSYS_METRICS_LISTEN: 'everywhere' },
        flags: { 'shutdown.drainSeconds': '90', 'status.heartbeatSeconds': '1.5' },
      }),
    );
    assert.deepEqual(e.issues, [
      `logLevel: must be trace, debug, info, warn, error, fatal or silent (from ${file})`,
      'metrics.listen: must be host:port, [v6]:port or "off" (from PERSYS_METRICS_LISTEN="everywhere")',
      `reconcile.concurrency: must be at least 1 (from ${file})`,
      'shutdown.drainSeconds: must be at most 85 (from --shutdown.drainSeconds="90")',
      `source.pollIntervalSeconds: must be at least 1 (from PERSYS_SOURCE_POLL_INTERVAL_SECONDS="0")`,
      `source.url: must be an https://, http:// or file:// URL (from ${file})`,
    ]);
    assert.match(e.message, /^invalid configuration:\n {2}logLevel/);
  });

  it('a missing config file named explicitly is an error', () => {
    const e = configError(() => load({ file: join(tmp, 'nope.json') }));
    assert.deepEqual(e.issues, [`config file ${join(tmp, 'nope.json')}: not found`]);
  });

  it('JSON syntax errors name the file', () => {
    const file = writeConfig('{ "logLevel": "info", }');
    const e = configError(() => load({ file }));
    assert.equal(e.issues.length, 1);
    assert.ok(e.issues[0]?.startsWith(`config file ${file}: invalid JSON:`), e.issues[0]);
  });

  it('a file that is not an object is an error, and env errors are still reported beside it', () => {
    const file = writeConfig('[1, 2]');
    const e = configError(() => load({ file, env: { PERSYS_LOG_LEVEL: 'chatty' } }));
    assert.equal(e.issues.length, 2);
    assert.ok(e.issues.includes(`config file ${file}: must contain a JSON object`));
  });

  it('a wrong-typed section in the file is reported even if env sets a key inside it', () => {
    const file = writeConfig({ source: 'https://x' });
    const e = configError(() => load({ file, env: { PERSYS_SOURCE_POLL_INTERVAL_SECONDS: '10' } }));
    assert.equal(e.issues.length, 1);
    assert.match(e.issues[0] ?? '', new RegExp(`^source: .*\\(from ${file.replace(/[.]/g, '\\.')}\\)$`));
  });
});

describe('relative paths', () => {
  it('from the file resolve against the file directory; from env/flags against cwd', () => {
    const file = writeConfig({ stateDir: 'state', source: { caFile: '../pki/ca.pem', certFile: '/abs/cert.pem', tokenFile: 'token' }, trust: { publicKeys: ['keys/a.pem', '-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n'] } });
    const dir = file.slice(0, file.lastIndexOf('/'));
    const c = load({ file, env: { PERSYS_SOURCE_KEY_FILE: 'client.key' }, flags: { 'source.tokenFile': 'tok' }, cwd: '/run/here' });
    assert.equal(c.stateDir, join(dir, 'state'));
    assert.equal(c.source.caFile, join(dir, '../pki/ca.pem'));
    assert.equal(c.source.certFile, '/abs/cert.pem');
    assert.equal(c.source.keyFile, '/run/here/client.key');
    assert.equal(c.source.tokenFile, '/run/here/tok');
    assert.equal(c.trust.publicKeys[0], join(dir, 'keys/a.pem'));
    assert.ok(c.trust.publicKeys[1]?.startsWith('-----BEGIN PUBLIC KEY-----'));
  });

  it('the default stateDir is relative to cwd even when a config file is used', () => {
    const c = load({ file: writeConfig({}), cwd: '/srv/agent' });
    assert.equal(c.stateDir, '/srv/agent/.persys-agent');
  });

  it('the config file path itself resolves against cwd', () => {
    const file = writeConfig({ stateDir: 's' }, 'rel.json');
    const dir = file.slice(0, file.lastIndexOf('/'));
    const c = load({ file: 'rel.json', cwd: dir });
    assert.equal(c.stateDir, join(dir, 's'));
  });
});

describe('describeConfig', () => {
  it('redacts credentials in URLs and shortens PEM keys, leaving paths', () => {
    const c = load({
      file: writeConfig({
        source: { url: 'https://user:hunter2@fleet.example/nodes/{nodeId}.json?token=abc&x=1', tokenFile: '/etc/persys/token' },
        metrics: { push: { url: 'https://pgw.example' } },
        trust: { publicKeys: ['-----BEGIN PUBLIC KEY-----\nMCow\n-----END PUBLIC KEY-----\n', '/etc/persys/k.pem'] },
      }),
    });
    const d = describeConfig(c);
    const text = JSON.stringify(d);
    assert.ok(!text.includes('hunter2'));
    assert.ok(!text.includes('abc'));
    assert.equal(d.source.url, 'https://user:redacted@fleet.example/nodes/{nodeId}.json?token=redacted&x=1');
    assert.equal(d.source.tokenFile, '/etc/persys/token');
    assert.equal(d.metrics.push.url, 'https://pgw.example/');
    assert.match(d.trust.publicKeys[0] ?? '', /^<PEM key, \d+ chars>$/);
    assert.equal(d.trust.publicKeys[1], '/etc/persys/k.pem');
    // The input is not changed.
    assert.ok(c.source.url?.includes('hunter2'));
  });
});
