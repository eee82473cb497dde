/**
 * Delivery ceiling: an undici Pool posting the same bodies (1 KiB JSON) with
 * headers shaped like Herald's binary-mode webhook requests to the same
 * receiver, keeping `concurrency` requests in flight until `count` are answered.
 * Herald additionally reads the log, signs each request (HMAC-SHA256) and
 * tracks offsets; the ceiling does none of that.
 *
 * Usage: `node deliver-ceiling.js <url> <count> <concurrency>`; prints one JSON line.
 */
import { Pool } from 'undici';
import { SampleBuffer, nowMs, round, summarize } from '../lib/stats';
import { SOURCE, TYPE, jsonData, partitionKey } from '../lib/payload';

async function main(): Promise<void> {
  const [urlArg, countArg, concurrencyArg] = process.argv.slice(2);
  if (!urlArg || !countArg || !concurrencyArg) throw new Error('usage: deliver-ceiling <url> <count> <concurrency>');
  const url = new URL(urlArg);
  const count = Number(countArg);
  const concurrency = Number(concurrencyArg);
  const body = Buffer.from(jsonData());
  const pool = new Pool(url.origin, { connections: concurrency, keepAliveTimeout: 30_000 });
  const latency = new SampleBuffer();
  let issued = 0;
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  const start = nowMs();

  async function lane(): Promise<void> {
    while (issued < count) {
      const n = issued++;
      const t = nowMs();
      try {
        const res = await pool.request({
          method: 'POST',
          path: url.pathname,
          headers: {
            'content-type': 'application/json',
            'ce-specversion': '1.0',
            'ce-id': `ceiling-${n}`,
            'ce-source': SOURCE,
            'ce-type': TYPE,
            'ce-partitionkey': partitionKey(n),
            'webhook-id': `msg_${n}`,
            'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
            'webhook-signature': 'v1,ceiling',
            'herald-partition': String(n % 16),
            'herald-offset': String(Math.floor(n / 16)),
          },
          body,
        });
        for await (const _ of res.body) {
          // drain
        }
        if (res.statusCode >= 200 && res.statusCode < 300) ok++;
        else non2xx++;
      } catch {
        errors++;
      }
      latency.push(nowMs() - t);
    }
  }

  await Promise.all(Array.from({ length: concurrency }, () => lane()));
  const seconds = (nowMs() - start) / 1000;
  await pool.close();
  process.stdout.write(
    `${JSON.stringify({ requests: issued, ok, non2xx, errors, seconds: round(seconds), rps: round(ok / seconds, 1), latencyMs: summarize(latency.values()) })}\n`,
  );
}

main().catch((err) => {
  process.stderr.write(`${(err as Error).stack}\n`);
  process.exit(1);
});
