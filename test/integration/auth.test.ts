import request from 'supertest';
import { startTestGateway, runGatewayUntilExit } from '../helpers/gateway';
import { startReceiver } from '../helpers/receiver';
import { cleanupTmpDirs, tmpDir } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

const KEYS = 'producer:pub-secret:publish,reader:read-secret:read,operator:admin-secret:admin';
const event = { 'ce-specversion': '1.0', 'ce-id': 'auth-1', 'ce-source': '/auth', 'ce-type': 't', 'content-type': 'application/json' };

describe('API keys', () => {
  it('enforces scopes on every kind of endpoint and leaves health and callbacks open', async () => {
    const gw = await startTestGateway({ HERALD_API_KEYS: KEYS });
    const receiver = await startReceiver();
    try {
      const missing = await request(gw.url).post('/events').set(event).send('{}');
      expect(missing.status).toBe(401);
      expect(missing.headers['www-authenticate']).toMatch(/^Bearer/);
      expect(missing.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(missing.body).toMatchObject({ status: 401, code: 'unauthorized' });

      expect((await request(gw.url).post('/events').set(event).set('authorization', 'Bearer wrong').send('{}')).status).toBe(401);
      const forbidden = await request(gw.url).post('/events').set(event).set('authorization', 'Bearer read-secret').send('{}');
      expect(forbidden.status).toBe(403);
      expect(forbidden.body.code).toBe('forbidden');
      expect((await request(gw.url).get('/partitions')).status).toBe(401);

      expect((await request(gw.url).post('/events').set(event).set('authorization', 'Bearer pub-secret').send('{}')).status).toBe(202);
      expect((await request(gw.url).get('/partitions').set('authorization', 'Bearer read-secret')).status).toBe(200);
      expect((await request(gw.url).get('/partitions').set('authorization', 'Bearer admin-secret')).status).toBe(200);
      expect(
        (await request(gw.url).get('/events').query({ source: '/auth', id: 'auth-1' }).set('authorization', 'Bearer pub-secret')).status,
      ).toBe(403);

      expect((await request(gw.url).post('/subscriptions').send({ sink: receiver.url })).status).toBe(401);
      expect(
        (await request(gw.url).post('/subscriptions').set('authorization', 'Bearer read-secret').send({ sink: receiver.url })).status,
      ).toBe(403);
      expect(
        (await request(gw.url).post('/subscriptions').set('authorization', 'Bearer admin-secret').send({ sink: receiver.url })).status,
      ).toBe(201);

      expect((await request(gw.url).get('/healthz')).status).toBe(200);
      expect((await request(gw.url).get('/readyz')).status).toBe(200);
      // Callbacks are authorised by the delivery id: an unknown one is a 404, never a 401.
      expect((await request(gw.url).post('/deliveries/dlv_unknown/ack')).status).toBe(404);
    } finally {
      await receiver.close();
      await gw.close();
    }
  });

  it('runs open on loopback when no keys are configured', async () => {
    const gw = await startTestGateway();
    try {
      expect((await request(gw.url).get('/subscriptions')).status).toBe(200);
    } finally {
      await gw.close();
    }
  });

  it('refuses to start on all interfaces without keys unless HERALD_ALLOW_UNAUTHENTICATED=true', async () => {
    const refused = await runGatewayUntilExit({ HERALD_HOST: '0.0.0.0', HERALD_DATA_DIR: tmpDir() });
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/HERALD_API_KEYS/);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);

    const allowed = await startTestGateway({ HERALD_HOST: '0.0.0.0', HERALD_ALLOW_UNAUTHENTICATED: 'true' });
    await allowed.close();
  });

  it('never writes a key secret to the log', async () => {
    const result = await runGatewayUntilExit({ HERALD_API_KEYS: 'ci:very-secret-value:superpower', HERALD_DATA_DIR: tmpDir() });
    expect(result.code).not.toBe(0);
    expect(result.stderr + result.stdout).not.toMatch(/very-secret-value/);
  });
});
