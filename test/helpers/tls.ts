/**
 * A throwaway PKI for tests, made with the `openssl` CLI (no shell, execFile only):
 * a CA, a server certificate for localhost / 127.0.0.1 / ::1 and a client certificate for mTLS,
 * all signed by the CA. EC P-256 keys: fast to generate, accepted by every Node TLS build.
 *
 *   const skip = await opensslSkipReason();
 *   describe('...', { skip }, () => { ... const pki = await makeThrowawayCa(dir); ... });
 */
import { execFile } from 'node:child_process';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface ThrowawayPki {
  dir: string;
  caCert: string;
  caKey: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

/** `false` when the openssl CLI works, else a skip reason. */
export async function opensslSkipReason(): Promise<string | false> {
  try {
    await run('openssl', ['version'], { timeout: 10_000 });
    return false;
  } catch (err) {
    return `openssl CLI not usable (${err instanceof Error ? err.message.split('\n')[0] : String(err)}): TLS tests need it`;
  }
}

async function openssl(args: string[]): Promise<void> {
  try {
    await run('openssl', args, { timeout: 30_000 });
  } catch (err) {
    const stderr = (err as { stderr?: unknown }).stderr;
    throw new Error(`openssl ${args[0] ?? ''} failed: ${err instanceof Error ? err.message : String(err)}${typeof stderr === 'string' ? `\n${stderr}` : ''}`);
  }
}

async function ecKey(path: string): Promise<void> {
  await openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path]);
  await chmod(path, 0o600);
}

async function signLeaf(dir: string, name: string, subject: string, extensions: string, pki: { caCert: string; caKey: string }): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  const cert = join(dir, `${name}.crt`);
  const ext = join(dir, `${name}.ext`);
  await ecKey(key);
  await openssl(['req', '-new', '-key', key, '-subj', subject, '-out', csr]);
  await writeFile(ext, extensions);
  await openssl([
    'x509', '-req', '-in', csr, '-CA', pki.caCert, '-CAkey', pki.caKey, '-CAcreateserial',
    '-days', '2', '-sha256', '-extfile', ext, '-out', cert,
  ]);
  return { cert, key };
}

/**
 * Creates CA, server and client material in `dir` (which must exist) and returns the file paths.
 * `name` goes into the subjects, so two CAs made for one test are told apart in TLS errors.
 */
export async function makeThrowawayCa(dir: string, name = 'persys-test'): Promise<ThrowawayPki> {
  const caKey = join(dir, 'ca.key');
  const caCert = join(dir, 'ca.crt');
  await ecKey(caKey);
  await openssl([
    'req', '-x509', '-new', '-key', caKey, '-sha256', '-days', '2', '-subj', `/CN=${name} CA`,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
    '-addext', 'subjectKeyIdentifier=hash',
    '-out', caCert,
  ]);
  const ca = { caCert, caKey };
  const server = await signLeaf(
    dir,
    'server',
    `/CN=localhost`,
    [
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature,keyEncipherment',
      'extendedKeyUsage=serverAuth',
      // 127.0.0.2: a second loopback "host" for redirect tests (another origin, still loopback).
      'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:127.0.0.2,IP:::1',
      'authorityKeyIdentifier=keyid',
      '',
    ].join('\n'),
    ca,
  );
  const client = await signLeaf(
    dir,
    'client',
    `/CN=${name} client`,
    ['basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth', 'authorityKeyIdentifier=keyid', ''].join('\n'),
    ca,
  );
  return { dir, caCert, caKey, serverCert: server.cert, serverKey: server.key, clientCert: client.cert, clientKey: client.key };
}
