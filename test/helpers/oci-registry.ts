/**
 * A loopback OCI registry for tests: serves locally built images (read with `docker save`) over the
 * Registry HTTP API v2 on 127.0.0.1:<random port>, so dockerd really pulls them. dockerd treats
 * 127.0.0.0/8 registries as insecure, so plain http works without any daemon configuration.
 *
 *   const reg = await startOciRegistry({ images: [{ name: 'persys-test/big:1', from: 'persys-test/busybox:1', fillerBytes: 4 << 20 }] });
 *   reg.ref('persys-test/big:1')            // "127.0.0.1:PORT/persys-test/big:1", for a container spec
 *   reg.knobs = { bytesPerSecond: 256 << 10 }   // slow layer bytes
 *   reg.knobs = { stallAfterBytes: 1 << 20 }    // stop sending after 1 MiB, keep the socket open
 *   reg.knobs = { failAfterBytes: 1 << 20, failTimes: 1 } // destroy the socket after 1 MiB, once
 *   await reg.publish({ name: 'persys-test/big:1', from: 'persys-test/busybox:2' }) // new digest, same tag
 *   await reg.removePulledImages()          // in after(): only images whose every ref names this registry
 *   await reg.close()
 *
 * `fillerBytes` adds a layer of that many random bytes (new random content per registry, so dockerd
 * never has it cached and a slow pull really moves bytes). Knobs apply to layer blobs only (not the
 * manifest or the image config) and count bytes per response; they are read when a response starts.
 * Range requests (dockerd resumes a broken layer download with one) are honoured with 206.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { gzipSync } from 'node:zlib';

import Dockerode from 'dockerode';

export interface RegistryImage {
  /** repository:tag as served, e.g. "persys-test/big:1". */
  name: string;
  /** A local image to read with `docker save`, e.g. "persys-test/busybox:1". */
  from: string;
  /** Adds a layer with this many random bytes on top of `from`'s layers. */
  fillerBytes?: number;
}

export interface TransferKnobs {
  /** Layer bytes per second (per response); absent: as fast as the socket takes them. */
  bytesPerSecond?: number;
  /** Stop sending a layer after this many bytes and keep the socket open (a stalled registry). */
  stallAfterBytes?: number;
  /** Destroy the socket after this many layer bytes (a mid-stream failure). */
  failAfterBytes?: number;
  /** How many responses failAfterBytes breaks before layers are served whole again (default: all). */
  failTimes?: number;
}

export interface RegistryRequest {
  method: string;
  path: string;
  status: number;
  range?: string;
  at: number;
}

export interface OciRegistry {
  /** "127.0.0.1:PORT" */
  host: string;
  port: number;
  /** Knobs for the next layer responses (assign a new object, or mutate). */
  knobs: TransferKnobs;
  requests: RegistryRequest[];
  /** Layer bytes written to sockets so far. */
  layerBytesSent: number;
  /** The pullable reference of a served name: "127.0.0.1:PORT/<name>". */
  ref(name: string): string;
  /** The manifest digest a served name has now. */
  digest(name: string): string;
  /** Serves `image` (adds it, or moves an existing tag to new content: a changed digest). */
  publish(image: RegistryImage): Promise<string>;
  /** Removes from `docker` every image all of whose tags and digests name this registry; returns what it removed. */
  removePulledImages(): Promise<string[]>;
  close(): Promise<void>;
}

export interface OciRegistryOptions {
  images: RegistryImage[];
  socketPath?: string;
  knobs?: TransferKnobs;
}

const MANIFEST_TYPE = 'application/vnd.docker.distribution.manifest.v2+json';
const CONFIG_TYPE = 'application/vnd.docker.container.image.v1+json';
const LAYER_TYPE = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
const TICK_MS = 50;

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface TarEntry {
  name: string;
  data: Buffer;
}

/** Reads a plain (ustar / pax) tar as `docker save` writes it. */
export function readTar(buf: Buffer): TarEntry[] {
  const out: TarEntry[] = [];
  let off = 0;
  let paxName: string | undefined;
  while (off + 512 <= buf.length) {
    const h = buf.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    const field = (s: number, n: number): string => h.subarray(s, s + n).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(field(124, 12).trim() || '0', 8);
    const type = field(156, 1);
    const prefix = field(345, 155);
    const name = paxName ?? (prefix ? `${prefix}/${field(0, 100)}` : field(0, 100));
    const data = buf.subarray(off + 512, off + 512 + size);
    paxName = undefined;
    if (type === 'x') {
      const m = /\d+ path=([^\n]*)\n/.exec(data.toString('utf8'));
      paxName = m?.[1];
    } else if (type === '0' || type === '') {
      out.push({ name, data });
    }
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

/** A one-file tar (the filler layer). */
export function oneFileTar(name: string, data: Buffer): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${data.length.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148);
  h.write('0', 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  const pad = Buffer.alloc((512 - (data.length % 512)) % 512);
  return Buffer.concat([h, data, pad, Buffer.alloc(1024)]);
}

interface BuiltImage {
  manifest: Buffer;
  digest: string;
  blobs: Map<string, { data: Buffer; layer: boolean }>;
}

async function dockerSave(docker: Dockerode, image: string): Promise<Buffer> {
  const stream = await docker.getImage(image).get();
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function buildImage(docker: Dockerode, img: RegistryImage): Promise<BuiltImage> {
  const entries = new Map(readTar(await dockerSave(docker, img.from)).map((e) => [e.name, e.data]));
  const saved = JSON.parse(entries.get('manifest.json')?.toString('utf8') ?? '[]') as { Config: string; Layers: string[] }[];
  const first = saved[0];
  if (!first) throw new Error(`docker save ${img.from}: no manifest.json entry`);
  const config = JSON.parse(entries.get(first.Config)?.toString('utf8') ?? 'null') as { rootfs: { diff_ids: string[] }; history?: unknown[] };
  const layers = first.Layers.map((l) => {
    const data = entries.get(l);
    if (!data) throw new Error(`docker save ${img.from}: layer ${l} missing`);
    return data;
  });
  if (img.fillerBytes && img.fillerBytes > 0) {
    const tar = oneFileTar(`persys-filler-${randomBytes(4).toString('hex')}.bin`, randomBytes(img.fillerBytes));
    layers.push(tar);
    config.rootfs.diff_ids.push(sha256(tar));
    config.history = [...(config.history ?? []), { created: new Date(0).toISOString(), created_by: `persys test filler (${img.fillerBytes} random bytes)` }];
  }
  const blobs = new Map<string, { data: Buffer; layer: boolean }>();
  const configBlob = Buffer.from(JSON.stringify(config));
  blobs.set(sha256(configBlob), { data: configBlob, layer: false });
  const layerDescs = layers.map((raw) => {
    // Level 1: random data does not compress anyway, and building must stay quick.
    const gz = gzipSync(raw, { level: 1 });
    const digest = sha256(gz);
    blobs.set(digest, { data: gz, layer: true });
    return { mediaType: LAYER_TYPE, size: gz.length, digest };
  });
  const manifest = Buffer.from(
    JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST_TYPE, config: { mediaType: CONFIG_TYPE, size: configBlob.length, digest: sha256(configBlob) }, layers: layerDescs }),
  );
  return { manifest, digest: sha256(manifest), blobs };
}

function splitName(name: string): { repo: string; tag: string } {
  const i = name.lastIndexOf(':');
  if (i <= 0 || name.slice(i).includes('/')) throw new Error(`registry image name must be repo:tag, got ${name}`);
  return { repo: name.slice(0, i), tag: name.slice(i + 1) };
}

export async function startOciRegistry(opts: OciRegistryOptions): Promise<OciRegistry> {
  const docker = new Dockerode({ socketPath: opts.socketPath ?? '/var/run/docker.sock' });
  /** repo -> tag -> manifest digest */
  const tags = new Map<string, Map<string, string>>();
  /** manifest digest -> manifest bytes */
  const manifests = new Map<string, Buffer>();
  const blobs = new Map<string, { data: Buffer; layer: boolean }>();
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let failuresLeft = Number.POSITIVE_INFINITY;
  let knobs: TransferKnobs = { ...opts.knobs };

  const headers = (type: string, length: number, digest?: string): Record<string, string | number> => ({
    'Docker-Distribution-Api-Version': 'registry/2.0',
    'Content-Type': type,
    'Content-Length': length,
    ...(digest ? { 'Docker-Content-Digest': digest } : {}),
  });

  const sendError = (res: ServerResponse, status: number, code: string, message: string): void => {
    const body = Buffer.from(JSON.stringify({ errors: [{ code, message, detail: null }] }));
    res.writeHead(status, headers('application/json', body.length));
    res.end(body);
  };

  /** Writes `data` under the knobs; resolves when done, stalled or broken. */
  const sendLayer = (res: ServerResponse, data: Buffer, start: number): void => {
    const k = { ...knobs };
    const failAt = k.failAfterBytes !== undefined && failuresLeft > 0 ? k.failAfterBytes : undefined;
    if (failAt !== undefined) failuresLeft -= 1;
    const limit = Math.min(data.length - start, k.stallAfterBytes ?? Number.POSITIVE_INFINITY, failAt ?? Number.POSITIVE_INFINITY);
    const perTick = k.bytesPerSecond ? Math.max(1, Math.floor((k.bytesPerSecond * TICK_MS) / 1000)) : 256 * 1024;
    let sent = 0;
    let closed = false;
    res.on('close', () => (closed = true));
    const step = (): void => {
      if (closed) return;
      if (sent >= limit) {
        if (failAt !== undefined && sent >= failAt) res.socket?.destroy();
        else if (sent >= data.length - start) res.end();
        // else: a stall: nothing more is sent, the socket stays open until the client or close() ends it.
        return;
      }
      const n = Math.min(perTick, limit - sent);
      const chunk = data.subarray(start + sent, start + sent + n);
      sent += n;
      api.layerBytesSent += n;
      const more = res.write(chunk);
      const next = (): void => {
        if (!k.bytesPerSecond) return step();
        const t = setTimeout(() => {
          timers.delete(t);
          step();
        }, TICK_MS);
        timers.add(t);
      };
      if (more) next();
      else res.once('drain', next);
    };
    step();
  };

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    const entry: RegistryRequest = { method, path, status: 0, at: Date.now(), ...(req.headers.range ? { range: req.headers.range } : {}) };
    api.requests.push(entry);
    res.on('finish', () => (entry.status = res.statusCode));
    entry.status = 200;
    if (path === '/v2/' || path === '/v2') {
      res.writeHead(200, headers('application/json', 2));
      res.end('{}');
      return;
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/.exec(path);
    if (!m || (method !== 'GET' && method !== 'HEAD')) {
      entry.status = 404;
      sendError(res, 404, 'UNSUPPORTED', `${method} ${path} is not served by this test registry`);
      return;
    }
    const [, repo = '', kind, ref = ''] = m;
    if (kind === 'manifests') {
      const digest = ref.startsWith('sha256:') ? ref : tags.get(repo)?.get(ref);
      const body = digest ? manifests.get(digest) : undefined;
      if (!digest || !body) {
        entry.status = 404;
        sendError(res, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${repo}:${ref}`);
        return;
      }
      res.writeHead(200, headers(MANIFEST_TYPE, body.length, digest));
      res.end(method === 'HEAD' ? undefined : body);
      return;
    }
    const blob = blobs.get(ref);
    if (!blob) {
      entry.status = 404;
      sendError(res, 404, 'BLOB_UNKNOWN', `blob unknown: ${ref}`);
      return;
    }
    const range = /^bytes=(\d+)-/.exec(req.headers.range ?? '');
    const start = range ? Math.min(Number(range[1]), blob.data.length) : 0;
    const type = blob.layer ? LAYER_TYPE : CONFIG_TYPE;
    entry.status = range ? 206 : 200;
    if (range) {
      res.writeHead(206, { ...headers(type, blob.data.length - start, ref), 'Content-Range': `bytes ${start}-${blob.data.length - 1}/${blob.data.length}` });
    } else {
      res.writeHead(200, headers(type, blob.data.length, ref));
    }
    if (method === 'HEAD') {
      res.end();
      return;
    }
    if (!blob.layer) {
      res.end(blob.data);
      return;
    }
    sendLayer(res, blob.data, start);
  };

  const server = createServer(handle);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0;
  const host = `127.0.0.1:${port}`;
  const mine = (r: string): boolean => r.startsWith(`${host}/`);

  const api: OciRegistry = {
    host,
    port,
    get knobs() {
      return knobs;
    },
    set knobs(k: TransferKnobs) {
      knobs = { ...k };
      failuresLeft = k.failTimes ?? Number.POSITIVE_INFINITY;
    },
    requests: [],
    layerBytesSent: 0,
    ref: (name) => `${host}/${name}`,
    digest(name) {
      const { repo, tag } = splitName(name);
      const d = tags.get(repo)?.get(tag);
      if (!d) throw new Error(`${name} is not served`);
      return d;
    },
    async publish(image) {
      const { repo, tag } = splitName(image.name);
      const built = await buildImage(docker, image);
      for (const [d, b] of built.blobs) blobs.set(d, b);
      manifests.set(built.digest, built.manifest);
      const repoTags = tags.get(repo) ?? new Map<string, string>();
      repoTags.set(tag, built.digest);
      tags.set(repo, repoTags);
      return built.digest;
    },
    async removePulledImages() {
      const removed: string[] = [];
      const failed: string[] = [];
      const remove = async (ref: string, noprune: boolean): Promise<void> => {
        try {
          await docker.getImage(ref).remove({ noprune });
          removed.push(ref);
        } catch (err) {
          // Removing a tag can take the digest ref of the same repository with it.
          if ((err as { statusCode?: number }).statusCode !== 404) failed.push(`${ref}: ${err instanceof Error ? err.message : String(err)}`);
        }
      };
      for (const img of await docker.listImages({ all: true })) {
        const refs = [...(img.RepoTags ?? []), ...(img.RepoDigests ?? [])].filter((r) => !r.startsWith('<none>'));
        // Only images every ref of which names this registry go; a shared image (the same content
        // as a local tag another test uses) only loses this registry's refs.
        const ours = refs.filter(mine);
        if (ours.length === 0) continue;
        if (ours.length === refs.length) await remove(img.Id, false);
        else for (const r of ours) await remove(r, true);
      }
      if (failed.length > 0) throw new Error(`could not remove pulled images: ${failed.join('; ')}`);
      return removed;
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  api.knobs = { ...opts.knobs };
  for (const img of opts.images) await api.publish(img);
  return api;
}
