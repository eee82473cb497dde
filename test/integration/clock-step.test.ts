import fs from 'node:fs';
import path from 'node:path';
import { killIfRunning, postBatch, spawnGateway, type ChildGateway } from '../helpers/gateway';
import { startReceiver, type Receiver } from '../helpers/receiver';
import { tmpDir } from '../helpers/tmp';

const STEPPER = path.resolve(__dirname, '..', 'helpers', 'clock-step-back.js');

describe('a wall clock stepped back (NTP)', () => {
  it('keeps checkpointing index.db: its WAL stays bounded (clock probe: 189 MiB for 160,000 events while the clock was an hour back)', async () => {
    const dataDir = tmpDir();
    const stepFile = path.join(tmpDir(), 'step');
    let gw: ChildGateway | undefined;
    try {
      gw = await spawnGateway({
        HERALD_DATA_DIR: dataDir,
        HERALD_TEST_CLOCK_STEP_FILE: stepFile,
        NODE_OPTIONS: `--require ${STEPPER}`,
      });
      // Stepped back once the indexer thread has started and taken its first time.
      await new Promise((r) => setTimeout(r, 1500));
      fs.writeFileSync(stepFile, String(-3_600_000));
      await new Promise((r) => setTimeout(r, 200));
      const wal = path.join(dataDir, 'index.db-wal');
      let largest = 0;
      for (let b = 0; b < 150; b++) {
        const batch = Array.from({ length: 200 }, (_, i) => ({ id: `c${b}-${i}`, source: '/clock/step', data: { pad: 'x'.repeat(50) } }));
        expect((await postBatch(gw.url, batch)).status).toBe(202);
        largest = Math.max(largest, fs.statSync(wal, { throwIfNoEntry: false })?.size ?? 0);
      }
      // 30,000 events: about 35 MB of WAL without checkpoints; checkpointed every 100 ms it stays near 2 MB.
      expect(largest).toBeLessThan(16 * 1024 * 1024);
    } finally {
      await killIfRunning(gw);
    }
  }, 60_000);

  it('writes events finished above the committed offset as usual, so a crash then does not send them again', async () => {
    // Each was written once it had stayed finished for 100 ms of wall clock: stepped back an hour just after they
    // finished, none was written for that hour, and a crash sent them all again (clock probe, from the code).
    const dataDir = tmpDir();
    const stepFile = path.join(tmpDir(), 'step');
    const env = { HERALD_DATA_DIR: dataDir, HERALD_PARTITIONS: '1' };
    let stepped = false;
    const idOf = (body: Buffer) => (JSON.parse(body.toString('utf8')) as { id: string }).id;
    const receiver: Receiver = await startReceiver((req) => {
      const id = idOf(req.body);
      if (id === 'held') return { status: 500 };
      if (id === 'e4' && !stepped) {
        stepped = true;
        // Just after the last one finishes, within the 100 ms it waits to be written.
        setTimeout(() => fs.writeFileSync(stepFile, String(-3_600_000)), 20);
      }
      return { status: 204 };
    });
    let gw: ChildGateway | undefined;
    try {
      gw = await spawnGateway({ ...env, HERALD_TEST_CLOCK_STEP_FILE: stepFile, NODE_OPTIONS: `--require ${STEPPER}` });
      const created = await fetch(`${gw.url}/subscriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sink: receiver.url, delivery: { ordering: 'none', retry: { maxAttempts: 5, initialDelayMs: 60_000 } } }),
      });
      expect(created.status).toBe(201);
      const events = ['held', 'e0', 'e1', 'e2', 'e3', 'e4'].map((id) => ({ id, source: '/clock/finished' }));
      expect((await postBatch(gw.url, events)).status).toBe(202);
      const got = (id: string) => receiver.requests.filter((q) => idOf(q.body) === id).length;
      for (let i = 0; i < 200 && got('e4') === 0; i++) await new Promise((r) => setTimeout(r, 25));
      await new Promise((r) => setTimeout(r, 800)); // several flush intervals, after the step
      gw.child.kill('SIGKILL');
      await gw.exited;

      gw = await spawnGateway(env);
      await new Promise((r) => setTimeout(r, 1500));
      expect(['e0', 'e1', 'e2', 'e3', 'e4'].map(got)).toEqual([1, 1, 1, 1, 1]);
    } finally {
      await killIfRunning(gw);
      await receiver.close();
    }
  }, 60_000);

  describe('deadlines held by delivery keep their length (was: stepped back an hour, each lasted the hour)', () => {
    const idOf = (body: Buffer) => (JSON.parse(body.toString('utf8')) as { id: string }).id;
    /** After `afterMs`: long enough for the gateway to have taken the answer under the clock before the step. */
    const stepBack = (file: string, afterMs = 0) => setTimeout(() => fs.writeFileSync(file, String(-3_600_000)), afterMs);
    let gw: ChildGateway | undefined;
    let receiver: Receiver | undefined;
    afterEach(async () => {
      await killIfRunning(gw);
      await receiver?.close();
    });
    const start = async (stepFile: string) =>
      (gw = await spawnGateway({
        HERALD_DATA_DIR: tmpDir(),
        HERALD_PARTITIONS: '1',
        HERALD_TEST_CLOCK_STEP_FILE: stepFile,
        NODE_OPTIONS: `--require ${STEPPER}`,
      }));
    const subscribe = async (url: string, sink: string, delivery: object) => {
      const res = await fetch(`${url}/subscriptions`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sink, delivery }),
      });
      expect(res.status).toBe(201);
    };
    const within = async (ms: number, done: () => boolean) => {
      for (let waited = 0; !done() && waited < ms; waited += 50) await new Promise((r) => setTimeout(r, 50));
      return done();
    };
    /** A receiver answering its first request 503 with `Retry-After: 2`, the clock stepped back an hour just after, then 204s. */
    const holdingReceiver = async (stepFile: string) => {
      let first = true;
      const r = await startReceiver(() => {
        if (!first) return { status: 204 };
        first = false;
        stepBack(stepFile, 150);
        return { status: 503, headers: { 'retry-after': '2' } };
      });
      receiver = r;
      return { r, answered: () => !first };
    };

    it("a receiver's Retry-After of 2 s holds the subscription 2 s, not an hour", async () => {
      const stepFile = path.join(tmpDir(), 'step');
      const { r: sink, answered } = await holdingReceiver(stepFile);
      const g = await start(stepFile);
      await subscribe(g.url, sink.url, { retry: { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 100 } });
      expect((await postBatch(g.url, [{ id: 'h1', source: '/clock/hold' }])).status).toBe(202);
      await within(5000, answered);
      await new Promise((r) => setTimeout(r, 400)); // the step is seen
      expect((await postBatch(g.url, [{ id: 'h2', source: '/clock/hold' }])).status).toBe(202);
      const delivered = () => sink.requests.some((q) => idOf(q.body) === 'h2');
      expect(await within(8000, delivered)).toBe(true);
    }, 30_000);

    it('a Retry-After hold that ended while the gateway ran holds nothing after a restart (was: stored unmoved, it held an hour)', async () => {
      const stepFile = path.join(tmpDir(), 'step');
      const dataDir = tmpDir();
      const env = {
        HERALD_DATA_DIR: dataDir,
        HERALD_PARTITIONS: '1',
        HERALD_TEST_CLOCK_STEP_FILE: stepFile,
        NODE_OPTIONS: `--require ${STEPPER}`,
      };
      const { r: sink, answered } = await holdingReceiver(stepFile);
      gw = await spawnGateway(env);
      await subscribe(gw.url, sink.url, { retry: { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 100 } });
      expect((await postBatch(gw.url, [{ id: 'r1', source: '/clock/hold' }])).status).toBe(202);
      await within(5000, answered);
      await new Promise((r) => setTimeout(r, 400)); // the step is seen
      const sent =
        (id: string, times = 1) =>
        () =>
          sink.requests.filter((q) => idOf(q.body) === id).length >= times;
      expect(await within(8000, sent('r1', 2))).toBe(true); // the hold of 2 s ended while the gateway ran
      await new Promise((r) => setTimeout(r, 300)); // written behind
      gw.child.kill('SIGTERM');
      await gw.exited;
      gw = await spawnGateway(env); // the clock still an hour back
      expect((await postBatch(gw.url, [{ id: 'r2', source: '/clock/hold' }])).status).toBe(202);
      expect(await within(8000, sent('r2'))).toBe(true);
    }, 40_000);

    it('an extend of 1 s after the step lets the lease end about then, not an hour later', async () => {
      const stepFile = path.join(tmpDir(), 'step');
      receiver = await startReceiver(() => ({ status: 202 }));
      const g = await start(stepFile);
      await subscribe(g.url, receiver.url, { ackDeadlineMs: 2000, retry: { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 100 } });
      expect((await postBatch(g.url, [{ id: 'x1', source: '/clock/extend' }])).status).toBe(202);
      expect(await within(5000, () => receiver!.requests.length > 0)).toBe(true);
      stepBack(stepFile);
      await new Promise((r) => setTimeout(r, 300));
      const ackUrl = receiver.requests[0]!.headers['herald-ack-url'] as string;
      const extended = await fetch(ackUrl.replace(/\/ack$/, '/extend'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ms: 1000 }),
      });
      expect(extended.status).toBe(200);
      // The lease ends within its 2 s (the extend asked less), and the event is sent again.
      expect(await within(8000, () => receiver!.requests.length > 1)).toBe(true);
    }, 30_000);
  });
});
