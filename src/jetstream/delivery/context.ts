import type { JetStreamManager, KV, NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { HttpSender } from '../../delivery/http-sender';
import type { DeliveryObserver } from '../../delivery/tally';
import type { FailingWindows } from './failing-windows';
import type { JetStreamNames } from '../names';
import type { AckMap } from './ack-map';
import type { DeliveryNames } from './names';
import type { AttemptLog, DeadLetters } from './records';

/** What the parts of the engine share: the connection, the names, the cluster-side stores, the sender. */
export interface EngineContext {
  nc: NatsConnection;
  jsm: JetStreamManager;
  names: DeliveryNames;
  events: JetStreamNames;
  ackMap: AckMap;
  deadLetters: DeadLetters;
  attemptLog: AttemptLog;
  /** KV `<prefix>_dpos`: last matched offset per (subscription, partition, generation). */
  positions: KV;
  /** The event store's idempotency bucket (`<prefix>_idem`), bound at first use: read for late copies only. */
  idempotency: () => Promise<KV>;
  sender: HttpSender;
  log: Logger;
  clock: () => number;
  random: () => number;
  ackUrlBase: () => string;
  /** Where this node's attempts and callbacks are counted (the metrics); absent in tools and some tests. */
  observer?: DeliveryObserver;
  /** Auto-disable's windows, shared by the nodes (see `failing-windows.ts`); absent: never paused for failing. */
  failing?: FailingWindows;
  /** Tests only: awaited before a message's attempt is opened (its entry and pointer written), to stand for a node that stalls there. */
  beforeOpen?: (at: { subscriptionId: string; partition: number; offset: number; deliveryCount: number }) => Promise<void>;
}

/** One attempt's event and where it stands, as the ack map keeps it (see `AckEntry`). */
export interface AttemptTarget {
  /** The JetStream message's ack subject (`$JS.ACK.…`): any connection may publish to it. */
  reply: string;
  subscriptionId: string;
  partition: number;
  offset: number;
  generation: number;
  redrive: boolean;
  /** A redelivery whose filter was never checked (a corrupt_record dead letter): checked now. */
  filter?: boolean;
  /** The `herald-previous-offset` this event is sent with (kept so that a redelivery after a crash sends the same). */
  previousOffset?: number | null;
  /** Sent under `ordering: partition`: its mark then says every offset below it is finished (see `positions.ts`). */
  ordered?: boolean;
}
