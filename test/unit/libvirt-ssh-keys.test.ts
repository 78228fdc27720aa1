/**
 * SHA256 fingerprints of authorized keys, compared byte for byte with what `ssh-keygen -l` prints for
 * freshly generated keys of every type it can make here (ed25519, ecdsa 256/384/521, rsa).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';

import * as v from 'valibot';

import { keyFingerprint, keyFingerprintLine, parsePublicKey } from '../../src/runtimes/libvirt/ssh-keys.js';
import { vmSpec } from '../../src/spec/vm.js';
import { decideEngine, findExecutable, REQUIRE_ENGINES_ENV } from '../helpers/engines.js';

const run = promisify(execFile);
const sshKeygen = await findExecutable('ssh-keygen');
const skip = decideEngine(
  'libvirt',
  sshKeygen ? { ok: true, reason: sshKeygen } : { ok: false, reason: 'ssh-keygen not found (apt-get install openssh-client; scripts/testbed/libvirt.sh)' },
  process.env[REQUIRE_ENGINES_ENV],
);

const KEYS: { file: string; args: string[]; comment: string }[] = [
  { file: 'ed25519', args: ['-t', 'ed25519'], comment: 'alice@example.org' },
  { file: 'ecdsa256', args: ['-t', 'ecdsa', '-b', '256'], comment: 'with spaces in the comment' },
  { file: 'ecdsa384', args: ['-t', 'ecdsa', '-b', '384'], comment: 'c' },
  { file: 'ecdsa521', args: ['-t', 'ecdsa', '-b', '521'], comment: '' },
  { file: 'rsa2048', args: ['-t', 'rsa', '-b', '2048'], comment: 'rsa key' },
  { file: 'rsa3072', args: ['-t', 'rsa', '-b', '3072'], comment: '' },
];

describe('ssh key fingerprints match ssh-keygen -l', { skip }, () => {
  let dir: string;
  const lines = new Map<string, { pub: string; keygen: string }>();

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'persys-sshkeys-'));
    for (const k of KEYS) {
      const path = join(dir, k.file);
      await run(sshKeygen ?? 'ssh-keygen', ['-q', ...k.args, '-N', '', '-C', k.comment, '-f', path], { timeout: 60_000 });
      const { stdout } = await run(sshKeygen ?? 'ssh-keygen', ['-l', '-f', `${path}.pub`], { timeout: 30_000 });
      lines.set(k.file, { pub: await readFile(`${path}.pub`, 'utf8'), keygen: stdout.trim() });
    }
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const k of KEYS) {
    it(`${k.file}: the SHA256 fingerprint and the whole line`, () => {
      const got = lines.get(k.file);
      assert.ok(got);
      // ssh-keygen -l: "<bits> SHA256:<base64> <comment> (<TYPE>)"
      const fp = got.keygen.split(' ')[1];
      assert.match(fp ?? '', /^SHA256:[A-Za-z0-9+/]{43}$/);
      assert.equal(keyFingerprint(got.pub), fp);
      assert.equal(keyFingerprintLine(got.pub), got.keygen);
      // The spec accepts the key exactly as the .pub file holds it (trailing newline included).
      assert.equal(v.safeParse(vmSpec, { vcpus: 1, memoryMiB: 64, login: { username: 'alice', sshAuthorizedKeys: [got.pub] } }).success, true);
    });
  }
});

describe('parsePublicKey', () => {
  it('refuses lines whose declared type differs from the key blob', () => {
    const ed = 'AAAAC3NzaC1lZDI1NTE5AAAAIBUKJwQKe7iM1d0PHLMi7ahm5BPkn5ShvY8ztOyaBsCx';
    assert.ok(parsePublicKey(`ssh-ed25519 ${ed} x`));
    assert.equal(parsePublicKey(`ssh-rsa ${ed} x`), undefined);
    assert.equal(parsePublicKey('not a key'), undefined);
    assert.throws(() => keyFingerprint('ssh-ed25519'));
  });

  it('the spec rejects what is not an OpenSSH public key line', () => {
    for (const bad of ['hello', 'ssh-ed25519', 'ssh-ed25519 AAAA\nssh-rsa AAAA', '-----BEGIN OPENSSH PRIVATE KEY-----']) {
      assert.equal(v.safeParse(vmSpec, { vcpus: 1, memoryMiB: 64, login: { username: 'alice', sshAuthorizedKeys: [bad] } }).success, false, bad);
    }
  });
});
