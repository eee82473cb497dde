import net, { type AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { signWebhook } from '../../src/delivery/signing';
import { heraldJson, runHerald, spawnHerald, type RunningCli } from '../helpers/cli';
import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { startReceiver, waitFor, type Receiver } from '../helpers/receiver';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * `herald listen` against a real gateway: a delivery reaches a local server unchanged (headers and
 * body, signature still valid), the gateway gets that server's status, bad signatures are refused,
 * an unreachable target is a 502, and SIGTERM removes the subscription.
 */
let gw: TestGateway;
const running: RunningCli[] = [];
const receivers: Receiver[] = [];
beforeAll(async () => {
  gw = await startTestGateway({ HERALD_PARTITIONS: '4' });
});
afterEach(async () => {
  for (const cli of running.splice(0)) await cli.kill();
  for (const r of receivers.splice(0)) await r.close();
});
afterAll(async () => {
  await gw?.close();
  cleanupTmpDirs();
});

/** Starts `herald listen …` and waits for its ready note: the subscription id, the sink and the secret. */
async function startListen(args: string[]) {
  const cli = spawnHerald(['listen', ...args], { url: gw.url });
  running.push(cli);
  const [, id, sink] = await cli.waitFor(
    'stderr',
    /^Ready: subscription (\S+) delivers events stored from now on to (http:\/\/127\.0\.0\.1:\d+\/)/m,
  );
  const [, secret] = await cli.waitFor('stderr', /^Signing secret \(to verify the forwarded requests\): (whsec_\S+)$/m);
  return { cli, id: id!, sink: sink!, secret: secret! };
}

async function target(reply = { status: 201, headers: { 'x-answer': 'yes' }, body: 'thanks' }): Promise<Receiver> {
  const receiver = await startReceiver(() => reply);
  receivers.push(receiver);
  return receiver;
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

const subscriptionStatus = async (id: string): Promise<number> => (await fetch(`${gw.url}/subscriptions/${id}`)).status;

describe('herald listen', () => {
  it('forwards a delivery unchanged, answers with the target status, and deletes its subscription on SIGTERM', async () => {
    const app = await target();
    const { cli, id, secret } = await startListen(['--forward-to', `${app.url}?from=herald`, '--filter-type', 'com.example.listen.']);
    expect(await subscriptionStatus(id)).toBe(200);

    const data = '{"orderId": 7,  "note": "kept as sent"}';
    const published = await heraldJson(
      ['publish', '--source', '/cli/listen', '--type', 'com.example.listen.created', '--id', 'l-1', '--subject', 'café', '--data', data],
      { url: gw.url },
    );
    await runHerald(['publish', '--source', '/cli/listen', '--type', 'com.example.other', '--id', 'l-2'], { url: gw.url });
    const { partition, offset } = published.results[0];

    const [request] = await waitFor(() => (app.requests.length > 0 ? app.requests : undefined), {
      timeoutMs: 15_000,
      what: 'the forwarded delivery',
    });
    expect(request!.method).toBe('POST');
    expect(request!.url).toBe('/hook?from=herald');
    expect(request!.body.toString()).toBe(data);
    expect(request!.headers).toMatchObject({
      host: new URL(app.url).host,
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(data)),
      'ce-id': 'l-1',
      'ce-source': '/cli/listen',
      'ce-type': 'com.example.listen.created',
      'ce-subject': 'caf%C3%A9',
      'herald-subscription-id': id,
      'herald-partition': String(partition),
      'herald-offset': String(offset),
      'herald-attempt': '1',
      'herald-delivery-id': expect.stringMatching(/^dlv_/),
    });
    // Still signed by the gateway: an app holding the printed secret verifies it (an independent implementation).
    expect(new Webhook(secret).verify(request!.body.toString(), request!.headers as Record<string, string>)).toMatchObject({ orderId: 7 });

    const [line] = await cli.waitFor('stdout', /^.*l-1.*$/m);
    expect(line).toMatch(
      new RegExp(`^\\S+Z {2}${partition}:${offset}\\s+com\\.example\\.listen\\.created {2}/cli/listen {2}l-1 {2}→ 201$`),
    );
    // The gateway was answered with the target's status.
    const attempts = await waitFor(
      async () => {
        const page = await heraldJson(['subs', 'attempts', id], { url: gw.url });
        return page.attempts.length > 0 ? page.attempts : undefined;
      },
      { timeoutMs: 15_000, intervalMs: 100, what: 'the attempt' },
    );
    expect(attempts[0]).toMatchObject({ partition, offset, status: 201, outcome: 'delivered' });
    expect(app.requests).toHaveLength(1); // the other type was filtered out

    cli.child.kill('SIGTERM');
    expect(await cli.exited).toBe(0);
    expect(cli.stderr()).toContain(`deleted subscription ${id}`);
    expect(await subscriptionStatus(id)).toBe(404);
  });

  it('answers 401 to a bad signature without forwarding, and 502 (with --json lines) when the target is unreachable', async () => {
    const app = await target();
    const good = await startListen(['--forward-to', app.url]);
    const forged = await fetch(good.sink, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'webhook-id': 'msg_x',
        'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
        'webhook-signature': 'v1,AAAA',
      },
      body: '{}',
    });
    expect(forged.status).toBe(401);
    await good.cli.waitFor('stderr', /warning: refused a request with a bad signature \(answered 401\)/);
    expect(app.requests).toHaveLength(0);

    const down = await startListen(['--forward-to', `http://127.0.0.1:${await closedPort()}/webhooks`, '--json']);
    const body = Buffer.from('{"n":1}');
    const timestamp = Math.floor(Date.now() / 1000);
    const signed = await fetch(down.sink, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'ce-id': 'x-1',
        'ce-source': '/cli/listen',
        'ce-type': 't',
        'herald-partition': '2',
        'herald-offset': '9',
        'webhook-id': 'msg_signed',
        'webhook-timestamp': String(timestamp),
        'webhook-signature': signWebhook(down.secret, 'msg_signed', timestamp, body),
      },
      body,
    });
    expect(signed.status).toBe(502);
    const [line] = await down.cli.waitFor('stdout', /^\{.*\}$/m);
    expect(JSON.parse(line)).toMatchObject({
      partition: 2,
      offset: 9,
      id: 'x-1',
      source: '/cli/listen',
      type: 't',
      status: 502,
      error: 'ECONNREFUSED',
    });

    // SIGINT (Ctrl-C), and SIGHUP (its terminal closed: was death by signal, leaving its subscription behind).
    for (const [listen, signal] of [
      [good, 'SIGINT'],
      [down, 'SIGHUP'],
    ] as const) {
      listen.cli.child.kill(signal);
      expect(await listen.cli.exited).toBe(0);
      expect(await subscriptionStatus(listen.id)).toBe(404);
    }
  });

  it('exits 1 without leaving a subscription when the gateway refuses it', async () => {
    const before = (await heraldJson(['subs', 'list'], { url: gw.url })).subscriptions;
    const result = await runHerald(['listen', '--forward-to', 'http://127.0.0.1:9/', '--sql', 'type LIKE'], { url: gw.url });
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/400 invalid_request/);
    expect((await heraldJson(['subs', 'list'], { url: gw.url })).subscriptions).toEqual(before);
  });
});
