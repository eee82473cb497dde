import net from 'node:net';
import zlib from 'node:zlib';
import { useGatewayForFile } from '../helpers/gateway';

/**
 * Publishes pipelined on one connection are stored in the order they were sent, whatever each one
 * takes to decode: the log order is the partition's delivery order.
 */

const gw = useGatewayForFile();

function publish(id: string, body: Buffer, extra = ''): Buffer {
  const head =
    `POST /events HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: ${id}\r\nce-source: /pipelined-order\r\n` +
    `ce-type: t\r\nce-partitionkey: one-key\r\ncontent-type: application/json\r\n${extra}content-length: ${body.length}\r\n\r\n`;
  return Buffer.concat([Buffer.from(head), body]);
}

/** Writes `bytes` at once, then half-closes, and resolves with everything answered. */
function exchange(url: string, bytes: Buffer): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = net.connect(Number(port), hostname, () => socket.end(bytes));
    let text = '';
    socket.on('data', (c: Buffer) => (text += c.toString()));
    socket.on('close', () => resolve(text));
    socket.on('error', reject);
    socket.setTimeout(5000, () => socket.destroy());
  });
}

describe('publishes pipelined on one connection', () => {
  it('are appended in the order sent when the first one is gzip (HTTP probe: the second overtook it, a lower offset in the same partition)', async () => {
    for (let i = 0; i < 5; i++) {
      const first = `gz-first-${i}`;
      const second = `plain-second-${i}`;
      const answer = await exchange(
        gw.url,
        Buffer.concat([publish(first, zlib.gzipSync('{"n":1}'), 'content-encoding: gzip\r\n'), publish(second, Buffer.from('{"n":2}'))]),
      );
      const offsets = [...answer.matchAll(/"id":"([^"]+)","source":"\/pipelined-order","partition":\d+,"offset":(\d+)/g)].map(
        (m) => [m[1], Number(m[2])] as const,
      );
      expect(offsets.map(([id]) => id)).toEqual([first, second]);
      expect(offsets[1]![1]).toBeGreaterThan(offsets[0]![1]);
    }
  });

  it('keep their order when a refused publish is pipelined between them (re-probe: the one after it overtook the gzip one before it)', async () => {
    for (let i = 0; i < 5; i++) {
      const first = `gz-before-refused-${i}`;
      const third = `plain-after-refused-${i}`;
      const answer = await exchange(
        gw.url,
        Buffer.concat([
          publish(first, zlib.gzipSync(JSON.stringify({ pad: 'a'.repeat(200_000) })), 'content-encoding: gzip\r\n'),
          // a structured event that is not JSON: 400
          Buffer.from('POST /events HTTP/1.1\r\nHost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 5\r\n\r\n{"n":'),
          publish(third, Buffer.from('{"n":3}')),
        ]),
      );
      expect(answer).toContain('HTTP/1.1 400');
      const offsets = [...answer.matchAll(/"id":"([^"]+)","source":"\/pipelined-order","partition":\d+,"offset":(\d+)/g)].map(
        (m) => [m[1], Number(m[2])] as const,
      );
      expect(offsets.map(([id]) => id)).toEqual([first, third]);
      expect(offsets[1]![1]).toBeGreaterThan(offsets[0]![1]);
    }
  });
});
