import request from 'supertest';
import { getSubscription, publishOfType, requestsForSubscription, waitForLagZero } from '../helpers/delivery';
import { describeEngine, ENGINES, useEngineGateway } from '../helpers/engines';
import { freePort } from '../helpers/nats-cluster';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';

/**
 * A request already sent when a PATCH moves the subscription's sink is answered by the old receiver. Its 410 Gone
 * says that URL is gone, which the PATCH had already dealt with: it must not pause the subscription and hold
 * every event back from the new receiver (hostile-receiver probe: paused with `stateReason: "gone"`, nothing sent
 * to the new sink until an operator resumed it; on JetStream too, once the local engine was fixed). Nor does its
 * 404 end the event as a dead letter the new receiver never saw. The event it answered goes to the new sink.
 */

for (const engine of ENGINES) {
  describeEngine(engine, () => {
    const port = { value: '' };
    beforeAll(async () => {
      port.value = String(await freePort());
    });
    const gw = useEngineGateway(engine, {
      HERALD_PARTITIONS: '2',
      get HERALD_PORT() {
        return port.value;
      },
    });
    const receivers: Receiver[] = [];
    afterAll(async () => {
      for (const r of receivers) await r.close();
    });

    it.each([410, 404])(
      'takes a late %i of a sink a PATCH moved away from as a failed attempt: the subscription stays active and the event goes to the new sink',
      async (status) => {
        const old = await startReceiver(
          async () => {
            await new Promise((r) => setTimeout(r, 1500));
            return { status };
          },
          await freePort(),
        );
        const moved = await startReceiver(() => ({ status: 204 }), await freePort());
        receivers.push(old, moved);
        const type = `${engine}.moved.${status}`;
        const [m1, m2] = [`${status}-m1`, `${status}-m2`];
        const sub = (
          await request(gw.url)
            .post('/subscriptions')
            .send({ sink: old.url, filters: [{ exact: { type } }], delivery: { retry: { initialDelayMs: 100, maxDelayMs: 200 } } })
            .expect(201)
        ).body as { id: string };
        await publishOfType(gw.url, '/moved-gone', type, [m1]);
        await waitFor(() => requestsForSubscription(old, sub.id, m1)[0], { what: 'the request to the old sink', timeoutMs: 30_000 });
        await request(gw.url).patch(`/subscriptions/${sub.id}`).send({ sink: moved.url }).expect(200);
        // The old sink's answer comes back after the PATCH; the event and a later one reach the new sink.
        await publishOfType(gw.url, '/moved-gone', type, [m2]);
        await waitFor(() => requestsForSubscription(moved, sub.id, m2)[0], { what: 'm2 sent to the new sink', timeoutMs: 15_000 });
        await waitFor(() => requestsForSubscription(moved, sub.id, m1)[0], { what: 'm1 sent to the new sink', timeoutMs: 15_000 });
        expect(requestsForSubscription(moved, sub.id, m1)).toHaveLength(1);
        await waitForLagZero(gw.url, sub.id);
        const after = await getSubscription(gw.url, sub.id);
        expect(after.state).toBe('active');
        const attempts = (await request(gw.url).get(`/subscriptions/${sub.id}/attempts`).expect(200)).body.attempts as {
          status: number | null;
          outcome: string;
        }[];
        expect(attempts.find((a) => a.status === status)?.outcome).toBe('retry');
        expect((await request(gw.url).get(`/subscriptions/${sub.id}/dead-letters`).expect(200)).body.deadLetters).toEqual([]);
      },
    );
  });
}
