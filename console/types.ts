/* The parts of Herald's API answers (openapi/openapi.yaml) the console reads. */

export interface PartitionInfo {
  partition: number;
  firstOffset: number;
  headOffset: number;
}

export interface Readiness {
  status: 'ready' | 'unavailable';
  checks: Record<string, string>;
}

export interface CloudEvent {
  specversion: string;
  id: string;
  source: string;
  type: string;
  [attribute: string]: unknown;
}

export interface StoredEvent {
  partition: number;
  offset: number;
  event: CloudEvent;
}

export interface AppendResult {
  id: string;
  source: string;
  partition: number;
  offset: number;
  duplicate: boolean;
}

export interface PartitionDeliveryStats {
  partition: number;
  committedOffset: number;
  headOffset: number;
  lag: number;
  inFlight: number;
  oldestPendingAgeMs: number | null;
  expired: number;
}

export interface SubscriptionStats {
  partitions: PartitionDeliveryStats[];
  deadLetters: number;
  currentMaxInFlight: number;
  throttled: boolean;
}

export type SubscriptionState = 'active' | 'paused' | 'validating';

export interface Subscription {
  id: string;
  sink: string;
  filters: unknown[];
  delivery: {
    format: 'binary' | 'structured';
    ordering: 'partition' | 'none';
    maxInFlight: number;
    timeoutMs: number;
    ackMode: 'auto' | 'manual';
    ackDeadlineMs: number;
    retry: { maxAttempts: number; initialDelayMs: number; maxDelayMs: number };
    headers?: Record<string, string>;
    rateLimit?: { perSecond: number };
  };
  startAt: 'latest' | 'earliest';
  validation?: 'none' | 'cloudevents';
  state: SubscriptionState;
  stateReason: string | null;
  createdAt: string;
  previousSecretExpiresAt?: string;
  stats: SubscriptionStats | null;
  /** Only in the answers to create and rotate-secret. */
  secret?: string;
}

export interface DeadLetter {
  id: string;
  partition: number;
  offset: number;
  event: CloudEvent | null;
  attempts: number;
  lastStatus: number | null;
  lastError: string | null;
  reason: string;
  deadAt: string;
}

export interface DeadLetterPage {
  deadLetters: DeadLetter[];
  nextAfter: string | null;
}

export interface Attempt {
  deliveryId: string;
  partition: number;
  offset: number;
  attempt: number;
  status: number | null;
  error: string | null;
  durationMs: number;
  startedAt: string;
  outcome: string;
}

export interface AttemptPage {
  attempts: Attempt[];
  next: string | null;
}
