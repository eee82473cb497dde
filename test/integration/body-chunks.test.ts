import fs from 'node:fs';
import net from 'node:net';
import { useChildGateways } from '../helpers/gateway';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

/**
 * Request bodies sent one byte per chunk: node hands each chunk over as a buffer of its own, a few
 * hundred bytes beside its data. A probe held 16 unfinished delivery callbacks (no key needed) of
 * 6 MB on the wire each and the gateway grew to 6.2 GB; the limits count data bytes only.
 */

afterAll(cleanupTmpDirs);
const spawn = useChildGateways();

const rssBytes = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;

/** Opens a chunked request and sends `chunks` one-byte chunks, leaving the body unfinished. */
async function trickle(url: string, head: string, chunks: number): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  const socket = net.connect(Number(port), hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.on('error', () => undefined);
  socket.write(`${head}Host: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{\r\n`);
  const piece = Buffer.from('1\r\na\r\n'.repeat(10_000));
  for (let sent = 0; sent < chunks; sent += 10_000) {
    if (!socket.write(piece)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  // Written to the kernel is not yet read by the gateway: a last round trip on another connection would
  // not order it either, so the test waits until the gateway stops growing (see below).
  return socket;
}

describe('a body sent one byte per chunk', () => {
  it('takes memory near its size, not hundreds of bytes a byte (probe: 390 MB per 6 MB callback body)', async () => {
    const gw = await spawn({ HERALD_DATA_DIR: tmpDir(), HERALD_PARTITIONS: '1', HERALD_API_KEYS: 'p:publish-key:publish' });
    const pid = gw.child.pid!;
    const before = rssBytes(pid);
    const sockets: net.Socket[] = [];
    try {
      // 4 × 900,000 bytes of body (under the 1 MiB limits), 5.4 MB on the wire each: a callback route and a publish.
      for (let i = 0; i < 3; i++)
        sockets.push(
          await trickle(
            gw.url,
            'POST /deliveries/dlv_aaaaaaaaaaaaaaaaaaaaaaaa/nack HTTP/1.1\r\nContent-Type: application/json\r\n',
            900_000,
          ),
        );
      sockets.push(
        await trickle(
          gw.url,
          'POST /events HTTP/1.1\r\nAuthorization: Bearer publish-key\r\nce-specversion: 1.0\r\nce-id: c\r\nce-source: /chunks\r\nce-type: t\r\nContent-Type: application/json\r\n',
          900_000,
        ),
      );
      // Until the gateway has read what was sent: its RSS stops moving for a second (bounded: 30 s).
      let last = rssBytes(pid);
      for (let stable = 0, deadline = Date.now() + 30_000; stable < 4 && Date.now() < deadline;) {
        await new Promise((r) => setTimeout(r, 250));
        const now = rssBytes(pid);
        stable = Math.abs(now - last) < 2 * 1024 * 1024 ? stable + 1 : 0;
        last = now;
      }
      // 3.6 MB of body data in all: before, about 1.4 GB (390 MB a connection); now tens of MB.
      expect(last - before).toBeLessThan(300 * 1024 * 1024);
      // And the gateway still answers.
      expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    } finally {
      for (const s of sockets) s.destroy();
    }
  }, 90_000);
});
