import request from 'supertest';
import { Webhook } from 'standardwebhooks';
import { startTestGateway } from '../helpers/gateway';
import { startReceiver, waitFor } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

describe('delivery smoke', () => {
  it('delivers a published event to a subscription, signed', async () => {
    const gw = await startTestGateway();
    const receiver = await startReceiver();
    try {
      const created = await request(gw.url).post('/subscriptions').send({ sink: receiver.url });
      expect(created.status).toBe(201);
      expect(created.body.secret).toMatch(/^whsec_/);
      await request(gw.url)
        .post('/events')
        .set({ 'ce-specversion': '1.0', 'ce-id': 'd1', 'ce-source': '/smoke', 'ce-type': 'smoke.test', 'content-type': 'application/json' })
        .send('{"n":1}')
        .expect(202);
      const [req] = await waitFor(() => (receiver.requests.length > 0 ? receiver.requests : undefined));
      expect(req!.headers['ce-id']).toBe('d1');
      expect(req!.body.toString()).toBe('{"n":1}');
      const wh = new Webhook(created.body.secret);
      expect(() => wh.verify(req!.body.toString(), req!.headers as Record<string, string>)).not.toThrow();
      const sub = await waitFor(async () => {
        const res = await request(gw.url).get(`/subscriptions/${created.body.id}`);
        const p = res.body.stats.partitions.find((x: { headOffset: number }) => x.headOffset > 0);
        return p && p.lag === 0 ? res.body : undefined;
      });
      expect(sub.state).toBe('active');
    } finally {
      await receiver.close();
      await gw.close();
    }
  });
});
