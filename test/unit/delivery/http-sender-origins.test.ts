import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createHttpSender, isLocalFailure } from '../../../src/delivery/http-sender';

/** A port nothing listens on (one just given back by a server on 127.0.0.1). */
async function closedPort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const request = () => ({ headers: { 'content-type': 'application/json' }, body: Buffer.from('{}') });

describe('http sender: origins', () => {
  it('does not keep a pool for every origin it ever sent to', async () => {
    const sender = createHttpSender();
    const receiver = http.createServer((_req, res) => res.writeHead(204).end());
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    const live = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook`;
    try {
      const port = await closedPort();
      // 500 sinks on distinct origins (127.0.x.y is loopback), as subscriptions whose sinks changed over months.
      for (let n = 0; n < 500; n++) {
        const sink = `http://127.0.${1 + Math.floor(n / 250)}.${2 + (n % 250)}:${port}/h`;
        const result = await sender.send(sink, request, 2000, undefined, `s${n}`);
        expect(result.status).toBeNull();
      }
      expect(sender.origins()).toBeLessThanOrEqual(128);
      // An origin in use keeps working across drops.
      expect((await sender.send(live, request, 2000, undefined, 'live')).status).toBe(204);
    } finally {
      await sender.close();
      await new Promise<void>((resolve) => receiver.close(() => resolve()));
    }
  }, 60_000);
});

describe('http sender: whose failure a failed request is', () => {
  it("out of descriptors, or the resolver's system error, is this process's; a name that does not resolve is the sink's", () => {
    expect(isLocalFailure({ code: 'EMFILE', message: 'connect EMFILE 127.0.0.1:80' })).toBe(true);
    expect(isLocalFailure({ code: 'ENFILE', message: 'connect ENFILE 127.0.0.1:80' })).toBe(true);
    // Re-probe: getaddrinfo's EAI_SYSTEM under descriptor starvation, its errno whatever was left.
    expect(isLocalFailure({ code: 'EBUSY', syscall: 'getaddrinfo', message: 'getaddrinfo EBUSY localhost' })).toBe(true);
    expect(isLocalFailure({ code: 'EINVAL', message: 'getaddrinfo EINVAL localhost' })).toBe(true);
    expect(isLocalFailure({ code: 'ENOTFOUND', syscall: 'getaddrinfo', message: 'getaddrinfo ENOTFOUND nowhere.invalid' })).toBe(false);
    expect(isLocalFailure({ code: 'EAI_AGAIN', syscall: 'getaddrinfo', message: 'getaddrinfo EAI_AGAIN example.com' })).toBe(false);
    expect(isLocalFailure({ code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:9' })).toBe(false);
  });
});
