/**
 * The cloud-init NoCloud seed: meta-data, user-data with the login merged in (cloud-config merge,
 * MIME multipart beside a script), size caps; and the ISO genisoimage writes, read back with isoinfo.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import YAML from 'yaml';

import { WorkloadError } from '../../src/errors/index.js';
import { MAX_SEED_BYTES, renderMetaData, renderSeed, renderUserData, writeSeedIso } from '../../src/runtimes/libvirt/cloud-init.js';
import { decideEngine, findExecutable, REQUIRE_ENGINES_ENV } from '../helpers/engines.js';

const run = promisify(execFile);
const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBUKJwQKe7iM1d0PHLMi7ahm5BPkn5ShvY8ztOyaBsCx alice@example';
const KEY2 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGKuJhW3zg3kN0rV5Hc4z1ZQ1p2u6VtY0gC4b7mJ0aBc bob@example';

const isInvalidSpec = (err: unknown) => err instanceof WorkloadError && err.code === 'INVALID_SPEC';

function cloudConfig(text: string): Record<string, unknown> {
  assert.ok(text.startsWith('#cloud-config\n'), `not cloud-config:\n${text}`);
  return YAML.parse(text) as Record<string, unknown>;
}

describe('meta-data', () => {
  it('carries instance-id and local-hostname first, then the extra keys sorted', () => {
    const text = renderMetaData({ instanceId: 'iid-vm1-r2-abc', hostname: 'web-1', cloudInit: { metaData: { zone: 'b', 'availability-zone': 'a: "quoted"' } } });
    assert.deepEqual(YAML.parse(text), { 'instance-id': 'iid-vm1-r2-abc', 'local-hostname': 'web-1', 'availability-zone': 'a: "quoted"', zone: 'b' });
    assert.match(text, /^instance-id: iid-vm1-r2-abc\nlocal-hostname: web-1\n/);
  });
});

describe('user-data', () => {
  it('without login: the spec user-data verbatim, or an empty cloud-config', () => {
    assert.equal(renderUserData('#!/bin/sh\necho hi\n', undefined, undefined), '#!/bin/sh\necho hi\n');
    assert.equal(renderUserData(undefined, undefined, undefined), '#cloud-config\n');
  });

  it('login alone: the default user plus ours, with keys and a sudo rule, password locked', () => {
    const cfg = cloudConfig(renderUserData(undefined, { username: 'alice', sshAuthorizedKeys: [`${KEY}\n`] }, undefined));
    assert.deepEqual(cfg.users, ['default', { name: 'alice', shell: '/bin/bash', sudo: 'ALL=(ALL) NOPASSWD:ALL', lock_passwd: true, ssh_authorized_keys: [KEY] }]);
    assert.equal(cfg.ssh_pwauth, undefined);
  });

  it('a generated password unlocks the user and enables password SSH', () => {
    const cfg = cloudConfig(renderUserData(undefined, { username: 'alice', generatePassword: true }, 'pw-123'));
    const users = cfg.users as Record<string, unknown>[];
    assert.equal(users[1]?.plain_text_passwd, 'pw-123');
    assert.equal(users[1]?.lock_passwd, false);
    assert.equal(cfg.ssh_pwauth, true);
  });

  it('merges into cloud-config: keeps every other key, appends to users, merges a same-named user', () => {
    const userData = [
      '#cloud-config',
      'packages: [nginx]',
      'ssh_pwauth: false',
      'users:',
      '  - name: ops',
      '    groups: [adm]',
      '  - name: alice',
      '    shell: /bin/zsh',
      '    ssh_authorized_keys: ["' + KEY2 + '"]',
      'runcmd:',
      '  - [sh, -c, "echo \'<&>\' > /tmp/x"]',
      '',
    ].join('\n');
    const cfg = cloudConfig(renderUserData(userData, { username: 'alice', sshAuthorizedKeys: [KEY] }, 'pw'));
    assert.deepEqual(cfg.packages, ['nginx']);
    assert.deepEqual(cfg.runcmd, [['sh', '-c', "echo '<&>' > /tmp/x"]]);
    assert.equal(cfg.ssh_pwauth, false, "the spec's own ssh_pwauth wins");
    const users = cfg.users as Record<string, unknown>[];
    assert.equal(users.length, 2, 'no default user added when the spec lists its users');
    assert.deepEqual(users[0], { name: 'ops', groups: ['adm'] });
    assert.equal(users[1]?.shell, '/bin/zsh', "the spec's settings of its user win");
    assert.deepEqual(users[1]?.ssh_authorized_keys, [KEY2, KEY]);
    assert.equal(users[1]?.plain_text_passwd, 'pw');
    assert.equal(users[1]?.lock_passwd, false);
  });

  it('a script beside login becomes MIME multipart: the login cloud-config and the script, untouched', () => {
    const script = '#!/bin/sh\necho "--not-a-boundary" > /tmp/x\n';
    const text = renderUserData(script, { username: 'alice', sshAuthorizedKeys: [KEY] }, undefined, 'BOUNDARY42');
    assert.match(text, /^Content-Type: multipart\/mixed; boundary="BOUNDARY42"\nMIME-Version: 1\.0\n\n/);
    const parts = text.split('--BOUNDARY42').slice(1, -1);
    assert.equal(parts.length, 2);
    assert.match(parts[0] ?? '', /Content-Type: text\/cloud-config;[\s\S]*\n\n#cloud-config\nusers:/);
    assert.match(parts[1] ?? '', /Content-Type: text\/x-shellscript;/);
    assert.ok((parts[1] ?? '').endsWith(`\n\n${script}`));
    assert.ok(text.endsWith('--BOUNDARY42--\n'));
  });

  it('refuses what it cannot merge: MIME user-data, bad YAML, a non-mapping cloud-config, unknown content', () => {
    const login = { username: 'alice' };
    assert.throws(() => renderUserData('Content-Type: multipart/mixed; boundary=x\n\n--x--\n', login, undefined), isInvalidSpec);
    assert.throws(() => renderUserData('#cloud-config\nusers: [\n', login, undefined), isInvalidSpec);
    assert.throws(() => renderUserData('#cloud-config\n- a\n- b\n', login, undefined), isInvalidSpec);
    assert.throws(() => renderUserData('just text', login, undefined), isInvalidSpec);
    assert.throws(() => renderUserData('#cloud-config\nusers: 5\n', login, undefined), isInvalidSpec);
  });
});

describe('renderSeed', () => {
  it('writes network-config and vendor-data only when given', () => {
    const files = renderSeed({ instanceId: 'iid', hostname: 'h' });
    assert.deepEqual(Object.keys(files).sort(), ['meta-data', 'user-data']);
    const all = renderSeed({ instanceId: 'iid', hostname: 'h', cloudInit: { networkConfig: 'version: 2\n', vendorData: '#cloud-config\n{}\n' } });
    assert.equal(all['network-config'], 'version: 2\n');
    assert.equal(all['vendor-data'], '#cloud-config\n{}\n');
  });

  it(`caps the seed at ${MAX_SEED_BYTES} bytes`, () => {
    const big = 'x'.repeat(300 * 1024);
    assert.throws(
      () => renderSeed({ instanceId: 'iid', hostname: 'h', cloudInit: { userData: `#!/bin/sh\n${big.repeat(3)}`, networkConfig: big, vendorData: big } }),
      (err: unknown) => isInvalidSpec(err) && /more than/.test((err as Error).message),
    );
  });
});

const genisoimage = await findExecutable('genisoimage');
const isoinfo = await findExecutable('isoinfo');
const skipIso = decideEngine(
  'libvirt',
  genisoimage && isoinfo ? { ok: true, reason: genisoimage } : { ok: false, reason: 'genisoimage/isoinfo not found (apt-get install genisoimage; scripts/testbed/libvirt.sh)' },
  process.env[REQUIRE_ENGINES_ENV],
);

describe('seed ISO', { skip: skipIso }, () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-seed-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('has volume id cidata and the four files, byte for byte; mode 0600', async () => {
    const files = renderSeed({
      instanceId: 'iid-vm1-r1-abc',
      hostname: 'seed-test',
      cloudInit: { userData: '#!/bin/sh\necho ünïcode "<&>"\n', networkConfig: 'version: 2\nethernets: {}\n', vendorData: '#cloud-config\n{}\n', metaData: { a: 'b' } },
      login: { username: 'alice', sshAuthorizedKeys: [KEY] },
    });
    const iso = join(dir, 'seed.iso');
    await writeSeedIso(iso, files, { genisoimage: genisoimage ?? 'genisoimage', timeoutMs: 30_000 });
    assert.equal((await stat(iso)).mode & 0o777, 0o600);
    const { stdout: info } = await run(isoinfo ?? 'isoinfo', ['-d', '-i', iso]);
    assert.match(info, /^Volume id: cidata$/m);
    for (const [name, body] of Object.entries(files)) {
      const { stdout } = await run(isoinfo ?? 'isoinfo', ['-R', '-i', iso, '-x', `/${name}`], { encoding: 'buffer' });
      assert.equal(stdout.toString('utf8'), body, name);
    }
  });

  it('a failing genisoimage leaves no ISO and no staging directory behind', async () => {
    const iso = join(dir, 'nodir', 'seed.iso');
    await assert.rejects(writeSeedIso(iso, { 'user-data': '#cloud-config\n', 'meta-data': 'x: y\n' }, { genisoimage: genisoimage ?? 'genisoimage', timeoutMs: 30_000 }));
    await assert.rejects(writeSeedIso(join(dir, 'b.iso'), { 'user-data': '', 'meta-data': '' }, { genisoimage: '/nonexistent/genisoimage', timeoutMs: 30_000 }), (err: unknown) => err instanceof WorkloadError && err.code === 'RUNTIME_UNAVAILABLE');
    assert.deepEqual((await readdir(dir)).filter((f) => f !== 'seed.iso'), []);
  });
});
