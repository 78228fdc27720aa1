/**
 * Bytes on the wire (TCP payload, TLS included) of one HTTPS exchange, measured on the raw socket
 * under the TLS socket: the handshake, then each request/response on the kept-alive connection.
 * Used by bench/serve-load.ts for the cost figures of docs/central-side.md.
 */
import { connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

export interface WireBytes {
  handshake: number;
  /** Per exchange on the open connection: request + response, both directions. */
  exchanges: number[];
}

/** Sends each raw HTTP/1.1 request in turn on one TLS connection and counts the bytes. */
export async function measureWireBytes(host: string, port: number, ca: Buffer, requests: string[]): Promise<WireBytes> {
  const raw = netConnect({ host, port });
  await new Promise<void>((resolve, reject) => {
    raw.once('connect', resolve);
    raw.once('error', reject);
  });
  const tls = tlsConnect({ socket: raw, ca, servername: 'localhost' });
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', resolve);
    tls.once('error', reject);
  });
  // Let the server's session tickets (TLS 1.3 sends them after the handshake) arrive and be counted.
  await new Promise((r) => setTimeout(r, 100));
  const total = () => raw.bytesRead + raw.bytesWritten;
  const handshake = total();
  const exchanges: number[] = [];
  let buf = Buffer.alloc(0);
  tls.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
  });
  for (const req of requests) {
    const before = total();
    buf = Buffer.alloc(0);
    tls.write(req);
    // Wait for one complete response: headers, then Content-Length bytes of body (304: none).
    const deadline = Date.now() + 120_000;
    for (;;) {
      const end = buf.indexOf('\r\n\r\n');
      if (end !== -1) {
        const head = buf.subarray(0, end).toString('latin1');
        const len = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
        if (buf.length >= end + 4 + len) break;
      }
      if (Date.now() > deadline) throw new Error('no complete response within 120 s');
      await new Promise((r) => setTimeout(r, 5));
    }
    await new Promise((r) => setTimeout(r, 20));
    exchanges.push(total() - before);
  }
  tls.destroy();
  return { handshake, exchanges };
}
