import request from 'supertest';
import { startTestGateway } from '../helpers/gateway';
import { cleanupTmpDirs } from '../helpers/tmp';

afterAll(cleanupTmpDirs);

describe('gateway smoke', () => {
  it('stores a binary-mode event and reads it back by source and id', async () => {
    const gw = await startTestGateway();
    try {
      const res = await request(gw.url)
        .post('/events')
        .set({ 'ce-specversion': '1.0', 'ce-id': 'a1', 'ce-source': '/smoke', 'ce-type': 'smoke.test', 'content-type': 'application/json' })
        .send('{"hello":"world"}');
      expect(res.status).toBe(202);
      expect(res.body.results).toEqual([{ id: 'a1', source: '/smoke', partition: expect.any(Number), offset: 0, duplicate: false }]);
      const read = await request(gw.url).get('/events').query({ source: '/smoke', id: 'a1' });
      expect(read.status).toBe(200);
      expect(read.body.event).toEqual({
        specversion: '1.0',
        id: 'a1',
        source: '/smoke',
        type: 'smoke.test',
        datacontenttype: 'application/json',
        data: { hello: 'world' },
      });
      expect((await request(gw.url).get('/healthz')).status).toBe(200);
      expect((await request(gw.url).get('/readyz')).status).toBe(200);
    } finally {
      await gw.close();
    }
  });
});
