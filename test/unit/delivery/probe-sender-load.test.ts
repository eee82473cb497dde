/**
 * The handshake sender loads the HTTP sender at its first probe. A load that fails (out of descriptors:
 * `EMFILE` opening the module's file) must not be kept: it failed every later validation handshake until
 * a restart ("the sink did not consent"), and made the shutdown fail.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';

describe('probe sender: a failed load of the HTTP sender', () => {
  let server: http.Server;
  let url: string;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      res.setHeader('webhook-allowed-origin', '*');
      res.end();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('is tried again at the next probe, and the close does not fail', async () => {
    let failNext = true;
    await jest.isolateModulesAsync(async () => {
      jest.doMock('../../../src/delivery/http-sender', () => {
        if (failNext) {
          failNext = false;
          throw Object.assign(new Error("EMFILE: too many open files, open 'http-sender.js'"), { code: 'EMFILE' });
        }
        return jest.requireActual('../../../src/delivery/http-sender');
      });
      const { createProbeSender } = await import('../../../src/delivery/probe-sender');
      const sender = createProbeSender({ allowPrivate: true });
      await expect(sender.probe(url, {}, 2000)).rejects.toThrow('EMFILE');
      // Was: the same rejection forever after.
      const answer = await sender.probe(url, {}, 2000);
      expect(answer.status).toBe(200);
      await expect(sender.close(Date.now() + 1000)).resolves.toBeUndefined();
    });
  });

  it('lets the shutdown pass when the sender never loaded', async () => {
    await jest.isolateModulesAsync(async () => {
      jest.doMock('../../../src/delivery/http-sender', () => {
        throw Object.assign(new Error('EMFILE'), { code: 'EMFILE' });
      });
      const { createProbeSender } = await import('../../../src/delivery/probe-sender');
      const sender = createProbeSender({ allowPrivate: true });
      await expect(sender.probe(url, {}, 2000)).rejects.toThrow('EMFILE');
      // Was: "shutdown: closing the handshake sender failed", then "shutdown failed".
      await expect(sender.close(Date.now() + 1000)).resolves.toBeUndefined();
    });
  });
});
