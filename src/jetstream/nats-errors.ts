import { AppError } from '../errors';

/** Seconds a client is told to wait before retrying a write the cluster could not take. */
export const RETRY_AFTER_SECONDS = 1;
/** The same when an operator has to act first: a stream's limit or the servers' storage is full, or writes are fenced. */
export const STORE_FULL_RETRY_AFTER_SECONDS = 30;
/** nats-server's refusals of a write past a stream's limits (`discard: new`) or past its storage. */
const STORE_FULL = /maximum (messages|bytes|messages per subject) exceeded|insufficient (storage )?resources|resource limits exceeded/i;
/**
 * A server that failed to write a message to its store (an I/O error, a full disk under it). On a stream's leader that
 * comes after the Raft commit: its followers stored the message, the leader did not, and later messages get sequences
 * the followers hold for other ones (a probe with EIO injected on a leader's block file: replicas diverged). Any failed
 * write to a file of its store is one (`write <path>: <errno>`, err_code 10077: a probe's EDQUOT diverged the same way).
 */
const STORE_FAILED =
  /input\/output error|no space left|failed to store|read-only file system|stream store failed|disk quota exceeded|file too large|stale nfs file handle|\bwrite \/\S+: /i;

/** Whether a server's reason is a failed write to its store (see {@link STORE_FAILED}), not a limit refused before storing. */
export function isStoreFailure(reason: string): boolean {
  return STORE_FAILED.test(reason) && !STORE_FULL.test(reason);
}

interface NatsLikeError {
  code?: string;
  message?: string;
  api_error?: { code?: number; err_code?: number; description?: string };
}

const asNats = (err: unknown): NatsLikeError => (typeof err === 'object' && err !== null ? (err as NatsLikeError) : {});

/** JetStream's "wrong last sequence" (err_code 10071): a KV `create` of a key that exists, or an `update` that lost its race. */
export function isWrongLastSequence(err: unknown): boolean {
  const e = asNats(err);
  return e.api_error?.err_code === 10071 || /wrong last sequence/i.test(e.message ?? '');
}

/**
 * A cluster reachable but not answering yet: a request that timed out, or JetStream saying it is
 * temporarily unavailable (a leader election, servers restarting). "No suitable peers" is not one: it
 * is what more replicas than servers get, a setting to fix, told at once.
 */
export function isTransientClusterError(err: unknown): boolean {
  const e = asNats(err);
  return e.code === 'TIMEOUT' || /timeout|temporarily unavailable/i.test(`${e.message ?? ''} ${e.api_error?.description ?? ''}`);
}

/** "stream not found" (a stream info of a stream that does not exist; err_code 10059). */
export function isStreamNotFound(err: unknown): boolean {
  return /stream not found/i.test(asNats(err).message ?? '');
}

/** "no message found" (404 from a stream message get; err_code 10037). */
export function isNotFound(err: unknown): boolean {
  const e = asNats(err);
  return e.code === '404' || e.api_error?.code === 404 || /no message found|message not found/i.test(e.message ?? '');
}

/**
 * nats.js's bare "503" (no responders): no server took the message. Most often a stream without a leader (an
 * election, servers that lost quorum or their storage: a probe of full disks saw it on every stream), rarely one
 * deleted behind Herald; the cluster monitor's probe, in `/readyz`, tells which.
 */
const NO_RESPONDERS =
  'no stream answered (most often one without a leader: an election, its servers down or out of storage; else one missing; /readyz names which)';

/** A short, single-line reason for logs and problems. */
export function natsReason(err: unknown): string {
  const e = asNats(err);
  const text = e.api_error?.description ?? e.message ?? String(err);
  // nats.js says only "503" when nothing answers a publish (JetStream probe: a deleted bucket read "(503)").
  if (e.code === '503' && text.trim() === '503') return `503: ${NO_RESPONDERS}`;
  return e.code && !text.includes(e.code) ? `${e.code}: ${text}` : text;
}

/**
 * The one mapping from a failed cluster operation to the API: `unavailable` (503 + `Retry-After`).
 * Timeouts, "no responders" (no stream leader), a lost connection, a stream without quorum all mean
 * the same to a client: retry later; whatever of the request was stored is answered as a duplicate then.
 */
export function clusterUnavailable(err: unknown, what: string): AppError {
  const reason = natsReason(err);
  // A limit an operator set on the stream with `discard: new`, or the servers' storage, is full: retrying never
  // succeeds until someone acts (JetStream probe: "503: maximum messages exceeded; retry later", with /readyz ready).
  if (STORE_FULL.test(reason)) {
    return new AppError(
      'storage_full',
      `the JetStream cluster cannot ${what}: ${reason}; a limit set on the stream (with discard new) or the servers' storage is full, and writes resume once it is raised or space is freed`,
      { cause: err, retryAfter: STORE_FULL_RETRY_AFTER_SECONDS },
    );
  }
  if (isStoreFailure(reason)) {
    return new AppError(
      'unavailable',
      `a JetStream server failed to ${what}: ${reason}; the stream's replicas may differ now, so this node takes no more writes until it is restarted (see the README's failure table)`,
      { cause: err, retryAfter: STORE_FULL_RETRY_AFTER_SECONDS },
    );
  }
  return new AppError('unavailable', `the JetStream cluster cannot ${what} right now (${natsReason(err)}); retry later`, {
    cause: err,
    retryAfter: RETRY_AFTER_SECONDS,
  });
}
