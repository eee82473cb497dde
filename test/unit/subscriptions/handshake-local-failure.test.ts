import pino from 'pino';
import { createHandshakes, type Probe } from '../../../src/subscriptions/handshake';
import type { SubscriptionRecord } from '../../../src/subscriptions/record';

/**
 * A validation request this process could not send (out of descriptors: `connect EMFILE`, or its sender
 * not loaded) says nothing of the sink (re-probe: such a sink was paused `validation_failed`, "the sink did
 * not consent"): it is sent again while the deadline runs.
 */
describe('a validation handshake the gateway could not send', () => {
  const record = {
    id: 'sub-1',
    sink: 'http://127.0.0.1:9/hook',
    validationToken: 'val_t',
    validationDeadline: Date.now() + 60_000,
    delivery: { timeoutMs: 1000, rateLimit: null },
  } as unknown as SubscriptionRecord;

  const run = async (answers: (() => ReturnType<Probe>)[]) => {
    const outcomes: string[] = [];
    let sent = 0;
    const handshakes = createHandshakes({
      probe: () => answers[Math.min(sent++, answers.length - 1)]!(),
      publicUrl: () => 'http://127.0.0.1:8080',
      clock: Date.now,
      log: pino({ level: 'silent' }),
      localFailureRetryMs: 20,
    });
    handshakes.onOutcome({ consent: (id) => outcomes.push(`consent ${id}`), fail: (id, _t, reason) => outcomes.push(`fail ${reason}`) });
    handshakes.start(record);
    for (let i = 0; i < 100 && outcomes.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    handshakes.close();
    return { outcomes, sent };
  };
  const consent = () => Promise.resolve({ status: 200, headers: { 'webhook-allowed-origin': '*' } });

  it('is sent again after a local failure, and the consent that follows counts', async () => {
    const local = () => Promise.resolve({ status: null, error: 'EMFILE: connect EMFILE 127.0.0.1:9', localFailure: true });
    expect(await run([local, local, consent])).toEqual({ outcomes: ['consent sub-1'], sent: 3 });
  });

  it('is sent again when the request could not be made at all (its sender failed to load)', async () => {
    const unloaded = () => Promise.reject(Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' }));
    expect(await run([unloaded, consent])).toEqual({ outcomes: ['consent sub-1'], sent: 2 });
  });

  it("still fails on the sink's own refusal, or no answer from it", async () => {
    const refused = () => Promise.resolve({ status: null, error: 'ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9' });
    expect((await run([refused])).outcomes).toEqual([
      'fail no answer to the validation request: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:9',
    ]);
  });
});
