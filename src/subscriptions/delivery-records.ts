/**
 * What delivery records about a subscription and the service reads back through its port
 * (`delivery-control.ts`): dead letters and the attempt log. Types only: the local store's repositories
 * and the JetStream engine's streams keep them, delivery writes them, and the API shows them.
 */

export type DeadLetterReason = 'rejected_status' | 'max_attempts' | 'receiver_rejected' | 'corrupt_record' | 'sink_not_allowed';

export interface DeadLetterRow {
  id: string;
  subscriptionId: string;
  partition: number;
  offset: number;
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
  reason: DeadLetterReason;
  deadAt: number;
  /**
   * The seek generation its event was delivered under (part of its webhook-id), which its redelivery
   * keeps; null or absent for dead letters stored before it was kept (the partition's generation then).
   */
  seekGeneration?: number | null;
}

/** What Herald did with an attempt's answer (see `Attempt.outcome` in the OpenAPI document). */
export type AttemptOutcome = 'delivered' | 'awaiting_ack' | 'retry' | 'timeout' | 'gone' | 'dead_lettered' | 'stale';

export interface AttemptRow {
  subscriptionId: string;
  deliveryId: string;
  partition: number;
  offset: number;
  attempt: number;
  status: number | null;
  error: string | null;
  durationMs: number;
  startedAt: number;
  outcome: AttemptOutcome;
}
