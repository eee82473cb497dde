import dns from 'node:dns';
import net from 'node:net';
import { AppError } from '../errors';
import { refusal, refuseLiteral, unbracket } from '../sink-guard';

/**
 * SSRF protection at create and PATCH (`HERALD_SINK_ALLOW_PRIVATE=false`): the address rules and the
 * connect-time guard delivery uses are in `sink-guard.ts`.
 */

export type SinkLookup = (hostname: string) => Promise<string[]>;

const lookupAll: SinkLookup = async (hostname) => (await dns.promises.lookup(hostname, { all: true })).map((a) => a.address);

/**
 * The check at create and PATCH. With `allowPrivate` it accepts everything. Otherwise a sink whose
 * host is, or resolves to (every address), a restricted address is a 400 `sink_not_allowed` naming
 * `sink`. A name that does not resolve now is accepted: delivery checks again on every connection.
 */
export function createSinkPolicy(opts: { allowPrivate: boolean; lookup?: SinkLookup }) {
  const lookup = opts.lookup ?? lookupAll;
  return {
    allowPrivate: opts.allowPrivate,
    async check(sink: string): Promise<void> {
      if (opts.allowPrivate) return;
      const host = unbracket(new URL(sink).hostname);
      let refused = refuseLiteral(host);
      if (!refused && net.isIP(host) === 0) {
        const addresses = await lookup(host).catch(() => [] as string[]);
        refused = refusal(host, addresses);
      }
      if (refused) {
        throw new AppError('sink_not_allowed', `the sink is not allowed: ${refused.message}`, {
          details: [{ attribute: 'sink', message: refused.message }],
        });
      }
    },
  };
}
export type SinkPolicy = ReturnType<typeof createSinkPolicy>;
