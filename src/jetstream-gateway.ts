import { checkExposure, createAuthorizer, parseApiKeys, type Authorizer } from './api/auth';
import { createHealthRouter } from './api/health-router';
import { gatewayHandlers, logListening } from './api/gateway-http';
import { createHttpServer, type HttpServer } from './api/http-server';
import { startingHandlers } from './api/starting-http';
import type { Config, NatsConfig } from './config';
import { AppError, StartupError } from './errors';
import { createProbeSender } from './delivery/probe-sender';
import { createJetStreamDelivery, type JetStreamDelivery } from './jetstream/delivery/jetstream-delivery';
import { openJetStreamEventStore, type JetStreamEventStore } from './jetstream/jetstream-event-store';
import { createKvSubscriptionStore } from './jetstream/subscriptions-kv';
import { createLogger, type Logger } from './logger';
import { createMetrics, subscriptionHooks, type Metrics } from './metrics';
import { shutdownSteps } from './shutdown-steps';
import { createHandshakes } from './subscriptions/handshake';
import { createSubscriptionsService, type SubscriptionsService } from './subscriptions/service';
import { createSinkPolicy } from './subscriptions/sink-policy';

export interface JetStreamGateway {
  url: string;
  port: number;
  store: JetStreamEventStore;
  delivery: JetStreamDelivery;
  subscriptions: SubscriptionsService;
  log: Logger;
  metrics: Metrics;
  close(): Promise<void>;
}

/**
 * Composition root of a node on the JetStream engine (`HERALD_STORE=jetstream`): ingest,
 * reads, the live tail, health and metrics on a cluster-backed store; subscriptions in the KV bucket
 * `<prefix>_subs`, watched by every node (`jetstream/subscriptions-kv.ts`); delivery on JetStream
 * durable consumers (`jetstream/delivery/`). No data dir, no SQLite: every node is the same, and any
 * of them may stop.
 */
export async function startJetStreamGateway(
  config: Readonly<Config>,
  opts: { log?: Logger; metrics?: Metrics; leaseCheckMs?: number } = {},
): Promise<JetStreamGateway> {
  if (!config.nats) throw new Error('startJetStreamGateway needs HERALD_STORE=jetstream and its HERALD_NATS_* settings');
  const log = opts.log ?? createLogger(config.logLevel);
  const metrics = opts.metrics ?? createMetrics();
  const apiKeys = parseApiKeys(config.apiKeysRaw);
  checkExposure(config.host, apiKeys, config.allowUnauthenticated);
  const authorize = createAuthorizer(apiKeys);
  // Listening from the start: while the cluster is waited for, the node is alive and says what it waits for.
  let waitingFor = 'connecting to the JetStream cluster';
  const starting = startingHandlers({ log, authorize, metrics, waitingFor: () => waitingFor });
  const httpServer = createHttpServer({ log, handlers: starting });
  const listening = await httpServer.listen(config.port, config.host);
  log.info({ url: listening.url }, 'listening while the gateway starts: /healthz answers, the API waits for the JetStream cluster');
  const deadline = Date.now() + START_RETRY_MS;
  for (let delayMs = FIRST_RETRY_DELAY_MS; ; delayMs = Math.min(delayMs * 2, MAX_RETRY_DELAY_MS)) {
    try {
      const gateway = await startOnce({
        config,
        nats: config.nats,
        log,
        metrics,
        authorize,
        httpServer,
        url: listening.url,
        leaseCheckMs: opts.leaseCheckMs,
      });
      logListening(log, config, listening.url, apiKeys);
      return { ...gateway, url: listening.url, port: listening.port };
    } catch (err) {
      if (!retryableStart(err) || Date.now() + delayMs > deadline) {
        await httpServer.close(config.shutdownTimeoutMs);
        throw err;
      }
      waitingFor = `the JetStream cluster is not answering yet: ${(err as Error).message}`;
      log.warn({ reason: (err as Error).message, retryInMs: delayMs }, 'the JetStream cluster is not answering yet; starting again');
      await new Promise((resolve) => setTimeout(resolve, delayMs));
    }
  }
}

/** How long a start keeps asking a cluster that is reachable but not answering yet (a leader election after a restart). */
const START_RETRY_MS = 60_000;
const FIRST_RETRY_DELAY_MS = 250;
const MAX_RETRY_DELAY_MS = 4000;

/** A cluster call at start-up that timed out, or the subscriptions it could not read yet: asked again, unlike a refusal. */
const retryableStart = (err: unknown) =>
  (err instanceof StartupError && err.retryable) || (err instanceof AppError && err.code === 'unavailable');

async function startOnce(deps: {
  config: Readonly<Config>;
  nats: Readonly<NatsConfig>;
  log: Logger;
  metrics: Metrics;
  authorize: Authorizer;
  /** Listening already, answering as a starting gateway until this start succeeds. */
  httpServer: HttpServer;
  url: string;
  /** Tests only: see `JetStreamDeliveryDeps.leaseCheckMs`. */
  leaseCheckMs?: number | undefined;
}): Promise<Omit<JetStreamGateway, 'url' | 'port'>> {
  const { config, nats, log, metrics, authorize, httpServer } = deps;
  const store = await openJetStreamEventStore({
    nats,
    partitions: config.partitions,
    idempotencyWindowMs: config.idempotencyWindowMs,
    log,
    recreateMissing: config.recovery.has('recreate-missing'),
  });
  const publicUrl = config.publicUrl || deps.url;
  let delivery: JetStreamDelivery;
  try {
    delivery = await createJetStreamDelivery({
      nats,
      partitions: config.partitions,
      log,
      allowPrivateSinks: config.sinkAllowPrivate,
      ackUrlBase: () => publicUrl,
      made: store.made,
      observer: metrics.delivery.observer(),
      ...(deps.leaseCheckMs !== undefined ? { leaseCheckMs: deps.leaseCheckMs } : {}),
    });
  } catch (err) {
    await store.close();
    throw err;
  }
  const sender = createProbeSender({ allowPrivate: config.sinkAllowPrivate });
  const handshakes = createHandshakes({ probe: sender.probe, publicUrl: () => publicUrl, clock: Date.now, log });
  const records = createKvSubscriptionStore({ kv: store.subscriptionsBucket, log });
  const subscriptions = createSubscriptionsService({
    records,
    store,
    delivery,
    log,
    sinkPolicy: createSinkPolicy({ allowPrivate: config.sinkAllowPrivate }),
    handshakes,
    hooks: subscriptionHooks(metrics),
  });
  metrics.setSources({
    log: () => ({ bytes: store.snapshot().bytes, segments: 0 }),
    writable: () => store.health().writable,
    heads: () => store.snapshot().heads,
    subscriptions: () => subscriptions.metricsSnapshot(),
  });
  const handlers = gatewayHandlers({
    config,
    log,
    metrics,
    authorize,
    store,
    subscriptions,
    deliveries: delivery,
    health: createHealthRouter({ store }),
  });

  /** Stops what this start made; the HTTP server too when the gateway closes (not when a start is tried again). */
  async function stop(opts: { http: boolean }): Promise<void> {
    const { step, rethrow } = shutdownSteps(log);
    // Nothing more is pulled while the HTTP server waits for its open requests (up to 10 s): a
    // delivery started now would name an ack URL that no longer takes callbacks.
    delivery.quiesce();
    if (opts.http) await step('closing the HTTP server', () => httpServer.close(config.shutdownTimeoutMs));
    handshakes.close();
    subscriptions.close();
    // The watch first: no change of another node may start delivery again while it stops.
    await step('stopping the subscriptions watch', () => records.close());
    await step('stopping delivery', () => delivery.close());
    await step('closing the handshake sender', () => sender.close(Date.now()));
    await step('closing the event store', () => store.close());
    rethrow();
  }
  let closing: Promise<void> | undefined;
  function close(): Promise<void> {
    closing ??= stop({ http: true }).then(() => log.info('herald stopped'));
    return closing;
  }

  try {
    await subscriptions.startAll();
  } catch (err) {
    metrics.setSources(undefined);
    await stop({ http: false }).catch(() => undefined);
    throw err;
  }
  // Served once every subscription is loaded: served before, a start that then failed had answered an
  // empty list and ready (a probe), and tails on its closed store. A callback of an attempt sent during
  // the load meanwhile gets the starting 503 with Retry-After (a receiver that does not retry it sees
  // the event again when its lease runs out).
  httpServer.serve(handlers);
  return { store, delivery, subscriptions, log, metrics, close };
}
