/**
 * A real nginx (Debian's nginx-light) serving a folder over HTTPS on 127.0.0.1, as a static
 * desired-state host: ETag + 304 from nginx itself, no long-poll. Its access log (one JSON object
 * per line: time in ms, method, path, status, If-None-Match and Prefer) is what tests count.
 * Started with its own config, prefix and pid file in `dir`; stopped by its pid.
 *
 *   const nginx = await startNginx({ dir, root, certFile, keyFile });
 *   ... nginx.url('/fleet/nodes/x.json'); await nginx.accessLog();
 *   await nginx.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join } from 'node:path';

export interface NginxAccess {
  ms: number;
  method: string;
  path: string;
  status: number;
  ifNoneMatch: string;
  prefer: string;
}

export interface Nginx {
  readonly port: number;
  readonly origin: string;
  accessLog(): Promise<NginxAccess[]>;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

export async function startNginx(opts: { dir: string; root: string; certFile: string; keyFile: string }): Promise<Nginx> {
  await mkdir(join(opts.dir, 'logs'), { recursive: true });
  const port = await freePort();
  const accessPath = join(opts.dir, 'logs', 'access.log');
  const conf = join(opts.dir, 'nginx.conf');
  await writeFile(
    conf,
    `worker_processes 1;
error_log ${join(opts.dir, 'logs', 'error.log')} warn;
pid ${join(opts.dir, 'nginx.pid')};
events { worker_connections 4096; }
http {
  client_body_temp_path ${join(opts.dir, 'tmp-body')};
  proxy_temp_path ${join(opts.dir, 'tmp-proxy')};
  fastcgi_temp_path ${join(opts.dir, 'tmp-fastcgi')};
  uwsgi_temp_path ${join(opts.dir, 'tmp-uwsgi')};
  scgi_temp_path ${join(opts.dir, 'tmp-scgi')};
  types { application/json json; }
  default_type application/octet-stream;
  log_format persys escape=json '{"ms":"$msec","method":"$request_method","path":"$uri","status":"$status","ifNoneMatch":"$http_if_none_match","prefer":"$http_prefer"}';
  access_log ${accessPath} persys;
  keepalive_timeout 75s;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:${port} ssl;
    ssl_certificate ${opts.certFile};
    ssl_certificate_key ${opts.keyFile};
    root ${opts.root};
    etag on;
  }
}
`,
  );
  const child: ChildProcess = spawn('nginx', ['-p', opts.dir, '-c', conf, '-g', 'daemon off;'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  // Ready when it accepts a TCP connection (bounded).
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`nginx exited with ${child.exitCode}: ${stderr}`);
    if (await tcpReady(port)) break;
    if (Date.now() > deadline) throw new Error(`nginx did not listen on 127.0.0.1:${port} within 10 s: ${stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    origin: `https://127.0.0.1:${port}`,
    async accessLog() {
      let text = '';
      try {
        text = await readFile(accessPath, 'utf8');
      } catch {
        return [];
      }
      return text
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => {
          const o = JSON.parse(l) as Record<string, string>;
          return { ms: Math.round(Number(o.ms) * 1000), method: o.method ?? '', path: o.path ?? '', status: Number(o.status), ifNoneMatch: o.ifNoneMatch ?? '', prefer: o.prefer ?? '' };
        });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      // SIGQUIT: graceful shutdown of this nginx (its master pid is the child we spawned).
      child.kill('SIGQUIT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await once(child, 'exit');
      clearTimeout(timer);
    },
  };
}

function tcpReady(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}
