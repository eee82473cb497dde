import net from 'node:net';
import { lookupEvent, partitionHeads, useGatewayForFile } from '../helpers/gateway';
import { waitFor } from '../helpers/receiver';

/**
 * A publish whose client goes away before its answer (README, Durability guarantees): once the body is in whole the
 * event is stored all the same, and the resend is answered as a duplicate of it; a body cut short stores nothing.
 */

const gw = useGatewayForFile({ HERALD_PARTITIONS: '1' });

function publishBytes(id: string): { head: string; body: string } {
  const body = JSON.stringify({ specversion: '1.0', id, source: '/gone', type: 't', data: { id } });
  const head = `POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/cloudevents+json\r\nContent-Length: ${body.length}\r\n\r\n`;
  return { head, body };
}

/** Sends `bytes` on a new connection and closes it at once (`reset`: with an RST instead of a FIN). */
async function sendAndGo(bytes: string, reset: boolean): Promise<void> {
  const { port, hostname } = new URL(gw.url);
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => {
      socket.write(bytes, () => {
        if (reset) socket.resetAndDestroy();
        else socket.destroy();
        resolve();
      });
    });
    socket.on('error', reject);
  });
}

const resend = async (id: string) => {
  const res = await fetch(`${gw.url}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/cloudevents+json' },
    body: publishBytes(id).body,
  });
  return { status: res.status, body: (await res.json()) as { results: { duplicate: boolean; offset: number }[] } };
};

describe('a publish whose client goes away before its answer', () => {
  it.each([
    ['closes', false],
    ['resets', true],
  ] as const)('body in whole, then the client %s: stored, and the resend is a duplicate', async (how, reset) => {
    const id = `whole-${how}`;
    const { head, body } = publishBytes(id);
    await sendAndGo(head + body, reset);
    const stored = await waitFor(
      async () => {
        const found = await lookupEvent(gw.url, { source: '/gone', id });
        return found.status === 200 ? found : undefined;
      },
      { what: `${id} stored` },
    );
    const again = await resend(id);
    expect(again.status).toBe(200);
    expect(again.body.results).toEqual([expect.objectContaining({ duplicate: true, offset: stored.body.offset })]);
  });

  it('body cut short, then the client goes: nothing stored, no offset used', async () => {
    const before = await partitionHeads(gw.url);
    const { head, body } = publishBytes('cut');
    await sendAndGo(head + body.slice(0, -5), false);
    // A publish sent after it on another connection takes the next offset: the cut one used none.
    const next = await resend('after-cut');
    expect(next.status).toBe(202);
    expect((await lookupEvent(gw.url, { source: '/gone', id: 'cut' })).status).toBe(404);
    expect(next.body.results[0]!.offset).toBe(before[0]);
  });
});
