import { createRequire, Module } from 'node:module';
import type DockerodeType from 'dockerode';

/**
 * dockerode, without the two transports this agent never uses. docker-modem loads ssh2 at start
 * (for ssh:// hosts), and ssh2 allocates a 16 MiB WebAssembly memory when loaded; dockerode loads
 * gRPC and protobuf for BuildKit sessions. We only ever speak HTTP over the unix socket, so both
 * are replaced by stubs that fail loudly if reached: about 10 MiB of resident memory on every host.
 */
const require = createRequire(import.meta.url);

function stub(fromPackage: string, name: string, exports: unknown): void {
  let path: string;
  try {
    path = createRequire(require.resolve(fromPackage)).resolve(name);
  } catch {
    return; // Not installed where expected: nothing to keep out.
  }
  if (require.cache[path]) return;
  const m = new Module(path);
  m.filename = path;
  m.loaded = true;
  m.exports = exports;
  require.cache[path] = m;
}

const unsupported = (what: string) =>
  class {
    constructor() {
      throw new Error(`${what} is not supported by persys-agent (only the unix-socket Engine API is)`);
    }
  };

stub('docker-modem', 'ssh2', { Client: unsupported('docker over ssh://') });
stub('dockerode', '@grpc/grpc-js', { Server: unsupported('BuildKit sessions'), ServerCredentials: {} });
stub('dockerode', '@grpc/proto-loader', { loadSync: () => ({}) });

const Dockerode = require('dockerode') as typeof DockerodeType;
export default Dockerode;
