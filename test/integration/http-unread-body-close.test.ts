import type http from 'node:http';
import net from 'node:net';
import { createApp } from '../../src/api/app';
import { createAuthorizer } from '../../src/api/auth';
import { createHttpServer } from '../../src/api/http-server';
import { createLogger } from '../../src/logger';

/**
 * A body left unread by its answer is read on only so far (64 MiB, 10 s); past that its connection closes. It closed
 * with a bare `end`: node's parser read on, and a request pipelined after the body was served with no answer possible
 * (review probe against the gateway: a publish after a refused 1 MB body finished 10.5 s in was stored, never answered;
 * its resend said `duplicate`).
 */

const log = createLogger('silent');
const authorize = createAuthorizer([]);

describe('a body read on past its allowance after its answer', () => {
  it('closes its connection without serving a request pipelined after it', async () => {
    const served: string[] = [];
    const ingest = (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
      served.push(String(req.headers['ce-id']));
      // Refused before its body is read (a 401), the connection kept alive: the body is read on and dropped.
      res.writeHead(401, { 'content-type': 'text/plain', 'content-length': '2' }).end('no');
      return Promise.resolve();
    };
    const server = createHttpServer({
      log,
      handlers: { authorize, ingest, app: createApp({ log, authorize, routers: [] }), ingestRejected: () => undefined },
    });
    const { port } = await server.listen(0, '127.0.0.1');
    try {
      const body = 65 * 1024 * 1024; // past the 64 MiB read of an unread body, within the 16 MiB a close then reads
      const outcome = await new Promise<{ answers: string[]; closed: boolean }>((resolve) => {
        const socket = net.connect(port, '127.0.0.1');
        let text = '';
        let closed = false;
        socket.on('data', (c: Buffer) => (text += c.toString('latin1')));
        socket.on('error', () => undefined);
        socket.on('close', () => (closed = true));
        socket.on('connect', async () => {
          socket.write(`POST /events HTTP/1.1\r\nHost: x\r\nce-id: refused\r\ncontent-length: ${body}\r\n\r\n`);
          const chunk = Buffer.alloc(1024 * 1024, 0x61);
          for (let sent = 0; sent < body && !socket.destroyed; sent += chunk.length) {
            if (!socket.write(chunk)) await new Promise((r) => socket.once('drain', r));
          }
          socket.write('POST /events HTTP/1.1\r\nHost: x\r\nce-id: behind\r\ncontent-length: 2\r\n\r\nhi');
          setTimeout(() => {
            socket.destroy();
            resolve({ answers: text.split('\r\n').filter((l) => l.startsWith('HTTP/')), closed });
          }, 3000);
        });
      });
      expect(outcome.answers).toEqual(['HTTP/1.1 401 Unauthorized']);
      expect(served).toEqual(['refused']); // was ['refused', 'behind']: served, its answer never written
      expect(outcome.closed).toBe(true);
    } finally {
      await server.close(1000);
    }
  });
});
