import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { InvalidArgumentError, type Command } from 'commander';
import { decodeHeaderValue } from '../cloudevents/headers';
import { HeraldApiError, unwrap, type components } from '../client';
import { collect, contextOf, parseIntBetween, parsePort, type Context } from './context';
import { ReportedError } from './errors';
import { eventLine } from './events';
import { forwardRequest } from './forward';
import { printable, shown, type CliStreams } from './output';
import { untilSignal, untilStdoutClosed } from './signals';
import { verifyWebhook } from './verify-webhook';

type CloudEvent = components['schemas']['CloudEvent'];

interface ListenOptions {
  forwardTo: URL;
  filterType?: string[];
  sql?: string[];
  listenHost: string;
  listenPort: number;
  forwardTimeoutMs: number;
}

/** Deliveries larger than this are refused (413): the gateway's own body limit is 1 MiB by default. */
const MAX_DELIVERY_BYTES = 64 * 1024 * 1024;

function parseForwardUrl(value: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError('not a URL (e.g. http://localhost:3000/webhooks)');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new InvalidArgumentError('must be an http:// or https:// URL');
  return url;
}

export function registerListen(program: Command, streams: CliStreams): void {
  program
    .command('listen')
    .summary('receive deliveries locally and forward them to your app (Ctrl-C deletes the subscription)')
    .description(
      'Starts a local receiver, creates a subscription (events stored from now on) whose sink is that receiver, ' +
        'verifies the signature of each delivery, prints one line per event, forwards the request unchanged ' +
        '(method, headers, body) to --forward-to and answers the gateway with its status (502 when it cannot be ' +
        'reached, so the gateway retries). The signing secret is printed at start so your app can verify the ' +
        'forwarded requests. Ctrl-C, SIGTERM or SIGHUP (a closed terminal) deletes the subscription (one deleted ' +
        'meanwhile is fine) and exits; so does the end of the reader of its output (herald listen | head -1).',
    )
    .requiredOption('--forward-to <url>', 'where to send each delivery, e.g. http://localhost:3000/webhooks', parseForwardUrl)
    .option('--filter-type <prefix>', 'only events whose type starts with this (repeatable)', collect(String))
    .option('--sql <expr>', 'only events matching this CloudEvents SQL expression (repeatable)', collect(String))
    .option('--listen-host <host>', 'address of the local receiver; the gateway must reach it there', '127.0.0.1')
    .option('--listen-port <port>', 'port of the local receiver (0: a free one)', parsePort, 0)
    .option(
      '--forward-timeout-ms <ms>',
      'how long to wait for --forward-to to answer (1 to 3600000)',
      parseIntBetween(1, 3_600_000),
      30_000,
    )
    .addHelpText('after', '\nExample:\n  herald listen --forward-to http://localhost:3000/webhooks --filter-type com.example.order.')
    .action(async (options: ListenOptions, command: Command) => {
      await listen(contextOf(command, streams), options);
    });
}

/** The part of a delivery `listen` prints: where the event sits and its main attributes. */
function describeDelivery(headers: http.IncomingHttpHeaders, body: Buffer): Partial<CloudEvent> {
  const contentType = String(headers['content-type'] ?? '').toLowerCase();
  if (contentType.startsWith('application/cloudevents+json')) {
    try {
      return JSON.parse(body.toString('utf8')) as CloudEvent;
    } catch {
      return {};
    }
  }
  const attribute = (name: string): string | undefined => {
    const raw = headers[`ce-${name}`];
    if (typeof raw !== 'string') return undefined;
    try {
      return decodeHeaderValue(raw);
    } catch {
      return raw;
    }
  };
  return { id: attribute('id'), source: attribute('source'), type: attribute('type') };
}

const readBody = (req: http.IncomingMessage): Promise<Buffer | undefined> =>
  new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_DELIVERY_BYTES) chunks.push(chunk);
    });
    req.on('end', () => resolve(size <= MAX_DELIVERY_BYTES ? Buffer.concat(chunks) : undefined));
    req.on('error', reject);
  });

/**
 * `herald listen`: the receiver, the subscription pointing at it, and their shutdown. Resolves when
 * a signal has deleted the subscription (exit 0); rejects when it could not be deleted (exit 1).
 */
async function listen(ctx: Context, options: ListenOptions): Promise<void> {
  const { out } = ctx;
  // A delivery can race the answer to the create request: the handler waits for the secret.
  let knowSecret!: (secret: string) => void;
  const secretKnown = new Promise<string>((resolve) => (knowSecret = resolve));
  const server = http.createServer((req, res) => {
    void handle(req, res).catch((err: Error) => {
      out.warn(`delivery failed: ${printable(err.message)}`);
      if (!res.headersSent) res.writeHead(500).end();
    });
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readBody(req);
    if (body === undefined) return void res.writeHead(413).end();
    if (req.method !== 'POST') return void res.writeHead(405, { allow: 'POST' }).end();
    const verified = verifyWebhook(await secretKnown, req.headers, body, Math.floor(Date.now() / 1000));
    if (!verified.ok) {
      out.warn(`refused a request with a bad signature (answered 401): ${verified.reason}`);
      return void res.writeHead(401, { 'content-type': 'text/plain' }).end(`herald listen: ${verified.reason}\n`);
    }
    // The gateway gives up on the attempt (its timeout, the subscription deleted): stop forwarding.
    const gone = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) gone.abort();
    });
    const result = await forwardRequest(
      options.forwardTo,
      { method: req.method, rawHeaders: req.rawHeaders, body },
      { timeoutMs: options.forwardTimeoutMs, signal: gone.signal },
    );
    const event = describeDelivery(req.headers, body);
    const partition = String(req.headers['herald-partition'] ?? '?');
    const offset = String(req.headers['herald-offset'] ?? '?');
    const status = result.status ?? 502;
    if (out.json) {
      out.jsonLine({
        partition: Number(partition),
        offset: Number(offset),
        attempt: Number(req.headers['herald-attempt']),
        webhookId: req.headers['webhook-id'],
        deliveryId: req.headers['herald-delivery-id'],
        id: event.id ?? null,
        source: event.source ?? null,
        type: event.type ?? null,
        status,
        ...(result.status === null ? { error: result.error } : {}),
      });
    } else {
      const shown = out.style(status >= 200 && status < 300 ? 'green' : status === 502 ? 'red' : 'yellow', `→ ${status}`);
      out.line(`${eventLine(out, partition, offset, event)}  ${shown}${result.status === null ? ` (${printable(result.error)})` : ''}`);
    }
    if (res.destroyed) return;
    if (result.status === null) {
      res.writeHead(502, { 'content-type': 'text/plain' }).end(`herald listen: cannot reach ${options.forwardTo.href}: ${result.error}\n`);
    } else {
      res.writeHead(result.status, result.headers).end(result.body);
    }
  }

  // From here on, the first SIGINT / SIGTERM means "stop": a signal while the subscription is being
  // created still deletes it. A second one exits at once, leaving the subscription.
  let stop!: () => void;
  const stopped = new Promise<void>((resolve) => (stop = resolve));
  let id: string | undefined;
  const signals = untilSignal(
    () => stop(),
    () =>
      out.note(
        id
          ? `herald: stopped without deleting subscription ${shown(id)}: delete it with herald subs delete ${shown(id)}`
          : 'herald: stopped',
      ),
  );
  // `herald listen | head -1`: the reader of the output is gone, so stop as on Ctrl-C (was: exit at once, subscription left).
  const stdoutGone = untilStdoutClosed(() => {
    out.note('herald: standard output was closed; stopping');
    stop();
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err: NodeJS.ErrnoException) =>
        reject(new ReportedError(`herald: cannot listen on ${options.listenHost}:${options.listenPort}: ${err.code ?? err.message}`)),
      );
      server.listen(options.listenPort, options.listenHost, () => resolve());
    });
    const { port } = server.address() as AddressInfo;
    const host = options.listenHost.includes(':') ? `[${options.listenHost}]` : options.listenHost;
    const sink = `http://${host}:${port}/`;
    const filters = [...(options.filterType ?? []).map((type) => ({ prefix: { type } })), ...(options.sql ?? []).map((sql) => ({ sql }))];
    const created = unwrap(
      // No validation handshake: the receiver is ours, and events should flow at once.
      await ctx.client.POST('/subscriptions', { body: { sink, filters, startAt: 'latest', validation: 'none' } }),
    );
    if (typeof created?.id !== 'string' || typeof created.secret !== 'string' || created.secret === '') {
      throw new ReportedError('herald: the gateway answered the subscription request without an id and secret: is --url a Herald gateway?');
    }
    knowSecret(created.secret);
    id = created.id;
    out.note(
      `Ready: subscription ${shown(id)} delivers events stored from now on to ${sink}, forwarded to ${options.forwardTo.href}\n` +
        `Signing secret (to verify the forwarded requests): ${shown(created.secret)}\n` +
        'Ctrl-C deletes the subscription and stops.',
    );
    await stopped;
    // Delete first: the gateway stops delivering and aborts its open requests; then close the receiver.
    out.note(`deleting subscription ${shown(id)}…`);
    try {
      unwrap(await ctx.client.DELETE('/subscriptions/{id}', { params: { path: { id } } }));
    } catch (err) {
      // Deleted elsewhere meanwhile (a teammate, the console): nothing is left behind.
      if (err instanceof HeraldApiError && err.status === 404) {
        out.note(`subscription ${shown(id)} was already deleted (404): nothing left behind`);
        return;
      }
      throw new ReportedError(
        `herald: could not delete subscription ${shown(id)} (${printable(err instanceof Error ? err.message : String(err))}); delete it with herald subs delete ${shown(id)}`,
      );
    }
    out.note(`deleted subscription ${shown(id)}`);
  } finally {
    knowSecret(''); // (no subscription: anything still waiting is refused)
    signals.dispose();
    stdoutGone.dispose();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
