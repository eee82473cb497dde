/**
 * A client's-eye tour of the API through openapi-fetch and the types openapi-typescript
 * generates from openapi/openapi.yaml (`npm run generate:client` → test/generated/herald-api.d.ts).
 * test/integration/openapi-client.test.ts type-checks this file with tsc and then runs it
 * against a real gateway, so the document must be good enough to write a real client from.
 */
import createClient from 'openapi-fetch';
import type { components, paths } from '../generated/herald-api';

type CloudEvent = components['schemas']['CloudEvent'];
type Subscription = components['schemas']['Subscription'];
type Problem = components['schemas']['Problem'];

export interface FlowOptions {
  baseUrl: string;
  /** Sink of a receiver that answers every delivery `202 Accepted` (acknowledged later). */
  sink: string;
  /** Resolves with the `herald-delivery-id` header of the first delivery the receiver got. */
  firstDeliveryId: () => Promise<string>;
}

export interface FlowResult {
  /** Operation and HTTP status of each call, in order. */
  steps: { operation: string; status: number }[];
  publishedOffset: number;
  subscription: Subscription;
  secret: string;
  listedIds: string[];
  states: string[];
  deadLetters: number;
  acked: 'acked';
  notFound: Problem['code'];
}

export async function runFlow(opts: FlowOptions): Promise<FlowResult> {
  const client = createClient<paths>({ baseUrl: opts.baseUrl });
  const steps: FlowResult['steps'] = [];
  /** Records the step and returns the typed data, or throws with the problem the server sent. */
  function expectData<D, E>(operation: string, result: { data?: D; error?: E; response: Response }): D {
    steps.push({ operation, status: result.response.status });
    if (result.data === undefined) throw new Error(`${operation} answered ${result.response.status}: ${JSON.stringify(result.error)}`);
    return result.data;
  }

  const event: CloudEvent = {
    specversion: '1.0',
    id: 'flow-1',
    source: '/client/flow',
    type: 'com.example.flow.started',
    time: new Date().toISOString(),
    data: { step: 1 },
  };
  const published = expectData(
    'publishEvents',
    await client.POST('/events', { body: event, headers: { 'content-type': 'application/cloudevents+json' } }),
  );
  const publishedOffset: number = published.results[0]!.offset;

  const created = expectData(
    'createSubscription',
    await client.POST('/subscriptions', {
      body: { sink: opts.sink, filters: [{ exact: { source: '/client/flow' } }], delivery: { ordering: 'partition' }, startAt: 'earliest' },
    }),
  );
  const secret: string = created.secret;
  // @ts-expect-error the generated types are exact: a misspelt field does not exist (proves they are not `any`)
  void created.secrett;
  const params = { path: { id: created.id } };

  const listed = expectData('listSubscriptions', await client.GET('/subscriptions'));
  const subscription = expectData('getSubscription', await client.GET('/subscriptions/{id}', { params }));
  const paused = expectData('pauseSubscription', await client.POST('/subscriptions/{id}/pause', { params }));
  const resumed = expectData('resumeSubscription', await client.POST('/subscriptions/{id}/resume', { params }));
  const deadLetters = expectData(
    'listDeadLetters',
    await client.GET('/subscriptions/{id}/dead-letters', { params: { ...params, query: { limit: 10 } } }),
  );

  const deliveryId = await opts.firstDeliveryId();
  const ack = expectData('ackDelivery', await client.POST('/deliveries/{deliveryId}/ack', { params: { path: { deliveryId } } }));

  const missing = await client.GET('/subscriptions/{id}', { params: { path: { id: 'no-such-subscription' } } });
  steps.push({ operation: 'getSubscription', status: missing.response.status });
  if (!missing.error) throw new Error('expected a problem for an unknown subscription');

  return {
    steps,
    publishedOffset,
    subscription,
    secret,
    listedIds: listed.subscriptions.map((s) => s.id),
    states: [paused.state, resumed.state],
    deadLetters: deadLetters.deadLetters.length,
    acked: ack.status,
    notFound: missing.error.code,
  };
}

/**
 * The README's example as written there: fields the contract gives a default may be left out (contract
 * probe: the generated types required `filters` and `startAt`, and the example did not compile).
 * Type-checked only.
 */
export function readmeExample(baseUrl: string, id: string) {
  const herald = createClient<paths>({ baseUrl });
  return Promise.all([
    herald.POST('/subscriptions', { body: { sink: 'https://example.com/hook' } }),
    herald.POST('/subscriptions/{id}/rotate-secret', { params: { path: { id } }, body: {} }),
  ]);
}
