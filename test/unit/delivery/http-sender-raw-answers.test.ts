import net from 'node:net';
import { createHttpSender, MAX_INTERIM_ANSWERS } from '../../../src/delivery/http-sender';

/** A port from the environment (a shared machine's assigned range), else one the system picks. */
const PORT = Number(process.env.HERALD_TEST_RECEIVER_PORT ?? 0);

/**
 * A receiver written on `net`, not `node:http`, so it can answer what no HTTP server library would: `answer`
 * is called once per request (its header block and a body of `content-length` bytes read) with the socket.
 */
async function rawReceiver(answer: (socket: net.Socket) => void): Promise<{ url: string; stop: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    let buffered = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buffered = Buffer.concat([buffered, chunk]);
      for (;;) {
        const end = buffered.indexOf('\r\n\r\n');
        if (end < 0) return;
        const length = Number(/content-length:\s*(\d+)/i.exec(buffered.subarray(0, end).toString('latin1'))?.[1] ?? 0);
        if (buffered.length < end + 4 + length) return;
        buffered = buffered.subarray(end + 4 + length);
        answer(socket);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(PORT, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/hook`,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** An answer that writes `text` again and again for as long as the socket takes it. */
const endlessly = (text: string) => (socket: net.Socket) => {
  const chunk = Buffer.from(text.repeat(100));
  const pump = (): void => {
    while (!socket.destroyed) if (!socket.write(chunk)) return void socket.once('drain', pump);
  };
  pump();
};

const request = () => ({ headers: { 'content-type': 'application/json' }, body: Buffer.from('{}') });

describe('http sender: answers at the byte level', () => {
  it('takes a 204 with a Content-Length to the validation handshake as answered, as a delivery does', async () => {
    const receiver = await rawReceiver((socket) =>
      socket.write('HTTP/1.1 204 No Content\r\nWebHook-Allowed-Origin: *\r\nContent-Length: 5\r\n\r\n'),
    );
    const sender = createHttpSender();
    try {
      const result = await sender.probe(receiver.url, { 'webhook-request-origin': 'example.com' }, 2000);
      expect(result.status).toBe(204);
      expect(result.headers?.['webhook-allowed-origin']).toBe('*');
    } finally {
      await sender.close();
      await receiver.stop();
    }
  });

  it('takes a 204 or a 304 that carries a Content-Length as the status it is (RFC 9112 §6.3: no body follows)', async () => {
    for (const [status, text] of [
      [204, 'No Content'],
      [304, 'Not Modified'],
    ] as const) {
      const receiver = await rawReceiver((socket) => socket.write(`HTTP/1.1 ${status} ${text}\r\nContent-Length: 5\r\n\r\n`));
      const sender = createHttpSender();
      try {
        const result = await sender.send(receiver.url, request, 2000);
        expect(result.status).toBe(status);
        expect(result.timedOut).toBeUndefined();
      } finally {
        await sender.close();
        await receiver.stop();
      }
    }
  });

  it('fails an attempt answered by endless interim (1xx) answers at once, not after its whole timeout', async () => {
    const receiver = await rawReceiver(endlessly('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n'));
    const sender = createHttpSender();
    try {
      const started = Date.now();
      const result = await sender.send(receiver.url, request, 10_000);
      expect(result.status).toBeNull();
      expect(result.timedOut).toBeUndefined();
      expect(result.error).toContain(`more than ${MAX_INTERIM_ANSWERS} interim (1xx) answers`);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await sender.close();
      await receiver.stop();
    }
  });

  it('fails a validation handshake answered by endless interim (1xx) answers at once', async () => {
    const receiver = await rawReceiver(endlessly('HTTP/1.1 103 Early Hints\r\n\r\n'));
    const sender = createHttpSender();
    try {
      const started = Date.now();
      const result = await sender.probe(receiver.url, { 'webhook-request-origin': 'example.com' }, 10_000);
      expect(result.status).toBeNull();
      expect(result.timedOut).toBeUndefined();
      expect(result.error).toContain(`more than ${MAX_INTERIM_ANSWERS} interim (1xx) answers`);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      await sender.close();
      await receiver.stop();
    }
  });

  it('still takes a few interim answers before the final one', async () => {
    const receiver = await rawReceiver((socket) =>
      socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n'.repeat(3) + 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'),
    );
    const sender = createHttpSender();
    try {
      expect((await sender.send(receiver.url, request, 2000)).status).toBe(200);
    } finally {
      await sender.close();
      await receiver.stop();
    }
  });
});
