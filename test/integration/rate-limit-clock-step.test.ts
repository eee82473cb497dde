import request from 'supertest';
import { loadConfig } from '../../src/config';
import { startGateway, type Gateway } from '../../src/gateway';
import { createLogger } from '../../src/logger';
import { publishOfType, requestsForSubscription } from '../helpers/delivery';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

// Shared with the delivery thread: what is added here is added to the wall clock delivery sees.
const skew = new Float64Array(new SharedArrayBuffer(8));
let receiver: Receiver;
let gw: Gateway | undefined;

beforeAll(async () => {
  receiver = await startReceiver();
});
afterEach(async () => {
  await gw?.close();
  gw = undefined;
  skew[0] = 0;
});
afterAll(async () => {
  await receiver?.close();
  cleanupTmpDirs();
});

describe('rate limit and a wall clock stepped back', () => {
  it('keeps delivering at the rate (clock probe: an NTP step back of 10 minutes held the subscription for 10 minutes)', async () => {
    const config = loadConfig({ HERALD_PORT: '0', HERALD_LOG_LEVEL: 'silent', HERALD_PARTITIONS: '2', HERALD_DATA_DIR: tmpDir() });
    gw = await startGateway(config, { log: createLogger(process.env.HERALD_TEST_LOG_LEVEL ?? 'silent'), clockSkew: skew });
    const res = await request(gw.url)
      .post('/subscriptions')
      .send({ sink: receiver.url, filters: [{ exact: { type: 'rate.step' } }], delivery: { rateLimit: { perSecond: 4 } } })
      .expect(201);
    const id: string = res.body.id;
    const ids = Array.from({ length: 12 }, (_, i) => `r${i}`);
    await publishOfType(gw.url, '/rate/step', 'rate.step', ids);
    // The burst of 4 goes at once; the bucket is then empty when the clock steps back an hour.
    await waitFor(() => requestsForSubscription(receiver, id).length >= 4, { what: 'the first burst' });
    skew[0] = -3_600_000;
    // The other 8 at 4 a second: about 2 s.
    await waitFor(() => requestsForSubscription(receiver, id).length >= 12, { what: 'every event', timeoutMs: 6000 });
  });
});
