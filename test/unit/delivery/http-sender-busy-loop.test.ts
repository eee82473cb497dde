import { Worker } from 'node:worker_threads';
import { createHttpSender } from '../../../src/delivery/http-sender';

/**
 * The receiver runs in a worker thread, so it answers while this thread's event loop is blocked:
 * `/slow` answers 200 after 100 ms, `/late` after 700 ms, `/never` never answers, anything else
 * answers 204 at once.
 */
const RECEIVER = `
const http = require('node:http');
const { parentPort, workerData } = require('node:worker_threads');
const server = http.createServer((req, res) => {
  req.resume();
  if (req.url.startsWith('/never')) return;
  if (req.url.startsWith('/slow')) setTimeout(() => res.writeHead(200).end('ok'), 100);
  else if (req.url.startsWith('/late')) setTimeout(() => res.writeHead(200).end('ok'), 700);
  else res.writeHead(204).end();
});
server.listen(workerData.port, '127.0.0.1', () => parentPort.postMessage(server.address().port));
parentPort.on('message', () => { server.closeAllConnections(); server.close(() => process.exit(0)); });
`;

/** A port from the environment (a shared machine's assigned range), else one the system picks. */
const PORT = Number(process.env.HERALD_TEST_RECEIVER_PORT ?? 0);

async function startReceiver(): Promise<{ url: string; stop: () => Promise<void> }> {
  const worker = new Worker(RECEIVER, { eval: true, workerData: { port: PORT } });
  const port = await new Promise<number>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  return {
    url: `http://127.0.0.1:${port}`,
    stop: async () => {
      const exited = new Promise((resolve) => worker.once('exit', resolve));
      worker.postMessage('stop');
      await exited;
    },
  };
}

const request = () => ({ headers: { 'content-type': 'application/json' }, body: Buffer.from('{}') });

/**
 * Blocks this thread's event loop (a delivery thread busy scanning a backlog) from `fromMs` to `untilMs`
 * after `start`. In the check phase, as work done in an I/O callback or an immediate: the loop's next
 * turn then starts with its timers phase (a block inside a timer callback would not, as the timers
 * phase does not look at the clock again).
 */
async function busyBetween(start: number, fromMs: number, untilMs: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, start + fromMs - Date.now())));
  await new Promise<void>((resolve) =>
    setImmediate(() => {
      while (Date.now() < start + untilMs) {
        // busy: no timers, no I/O
      }
      resolve();
    }),
  );
}

describe('http sender: an event loop busy past the timeout', () => {
  let receiver: Awaited<ReturnType<typeof startReceiver>>;
  beforeAll(async () => {
    receiver = await startReceiver();
  });
  afterAll(async () => {
    await receiver.stop();
  });

  it('takes an answer that arrived while the loop was busy, rather than timing the attempt out', async () => {
    const sender = createHttpSender();
    try {
      // A warmed keep-alive connection: the request is written at once.
      expect((await sender.send(`${receiver.url}/warm`, request, 2000)).status).toBe(204);
      const start = Date.now();
      const sent = sender.send(`${receiver.url}/slow`, request, 300);
      await busyBetween(start, 50, 600);
      const result = await sent;
      expect(result).toEqual(expect.objectContaining({ status: 200 }));
      expect(result.timedOut).toBeUndefined();
    } finally {
      await sender.close();
    }
  });

  // undici's coarse timers tick every 0.5 s, one tick per turn of the loop: a timeout of 900 ms comes due
  // on its second tick, which runs in the same timers phase as the attempt's own timer once the block ends.
  it("takes it after a block of seconds, undici's own coarse timers due then too", async () => {
    const sender = createHttpSender();
    try {
      expect((await sender.send(`${receiver.url}/warm`, request, 2000)).status).toBe(204);
      const start = Date.now();
      const sent = sender.send(`${receiver.url}/late`, request, 900);
      await busyBetween(start, 600, 2600);
      expect(await sent).toEqual(expect.objectContaining({ status: 200 }));
    } finally {
      await sender.close();
    }
  });

  it('still times out an attempt that has no answer once the loop is free', async () => {
    const sender = createHttpSender();
    try {
      expect((await sender.send(`${receiver.url}/warm`, request, 2000)).status).toBe(204);
      const start = Date.now();
      const sent = sender.send(`${receiver.url}/never`, request, 300);
      await busyBetween(start, 50, 600);
      expect(await sent).toEqual({ status: null, error: 'no complete answer within 300 ms', timedOut: true });
      // And without a busy loop.
      expect(await sender.send(`${receiver.url}/never`, request, 300)).toEqual(expect.objectContaining({ timedOut: true }));
    } finally {
      await sender.close(Date.now());
    }
  });

  it('takes a handshake answer that arrived while the loop was busy', async () => {
    const sender = createHttpSender();
    try {
      expect((await sender.send(`${receiver.url}/warm`, request, 2000)).status).toBe(204);
      const start = Date.now();
      const probed = sender.probe(`${receiver.url}/slow`, {}, 300);
      await busyBetween(start, 50, 600);
      expect(await probed).toEqual(expect.objectContaining({ status: 200 }));
      const start2 = Date.now();
      const never = sender.probe(`${receiver.url}/never`, {}, 300);
      await busyBetween(start2, 50, 600);
      expect(await never).toEqual({ status: null, error: 'no complete answer within 300 ms', timedOut: true });
    } finally {
      await sender.close(Date.now());
    }
  });
});
