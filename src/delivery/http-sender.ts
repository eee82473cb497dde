import { buildConnector, Pool } from 'undici';
import { guardedLookup, refuseLiteral, SINK_NOT_ALLOWED } from '../sink-guard';
import { untilDeadline } from '../shutdown-steps';

export interface SendResult {
  /** null for a connection error or timeout. */
  status: number | null;
  retryAfter?: string;
  /** Response-body excerpt (≤ 1 KiB) or the error message. */
  error?: string;
  /** No complete answer within the attempt's timeout. */
  timedOut?: boolean;
  /** The sink's address is refused (`HERALD_SINK_ALLOW_PRIVATE=false`); nothing was sent, and retrying cannot help. */
  sinkNotAllowed?: boolean;
  /** Nothing was sent: when a connection was free, the request was no longer wanted (`build` gave none). */
  withdrawn?: boolean;
  /**
   * Nothing was sent: this process could not open a connection (no descriptor left: `EMFILE`, `ENFILE`).
   * The gateway's failure, not the receiver's: it must spend no attempt.
   */
  localFailure?: boolean;
}

/** How long a delivery this process could not send (a {@link isLocalFailure}) waits before it goes again, on either engine. */
export const LOCAL_FAILURE_RETRY_MS = 1000;

/** Connect errors that say this process is out of descriptors, whatever the receiver does. */
const LOCAL_FAILURES = new Set(['EMFILE', 'ENFILE']);

/**
 * Whether a failed request is this process's failure, not the receiver's: out of descriptors at connect, or a
 * system error of the resolver (getaddrinfo's EAI_SYSTEM, whose errno is whatever the failed call left: a
 * re-probe saw `getaddrinfo EBUSY localhost` and `EINVAL` while descriptors ran out). A name that does not
 * resolve (`ENOTFOUND`, `EAI_AGAIN`, `EAI_FAIL`…) stays the sink's.
 */
export function isLocalFailure(e: { code?: string; syscall?: string; message?: string }): boolean {
  if (e.code !== undefined && LOCAL_FAILURES.has(e.code)) return true;
  const resolver = e.syscall === 'getaddrinfo' || /\bgetaddrinfo\b/.test(e.message ?? '');
  return resolver && e.code !== undefined && e.code !== 'ENOTFOUND' && !e.code.startsWith('EAI_');
}

/** A request as it goes out. */
export interface Outgoing {
  headers: Record<string, string>;
  body: Buffer;
  /** The attempt's timeout as of when it goes out (a PATCH may have changed it while it waited); else `send`'s. */
  timeoutMs?: number;
}

/** The answer to a validation handshake's `OPTIONS`. */
export interface ProbeResult extends Omit<SendResult, 'retryAfter'> {
  headers?: Record<string, string | string[] | undefined>;
}

const EXCERPT_BYTES = 1024;
/**
 * Most bytes of an answer's body read: the status is the receiver's word and the excerpt its first
 * KiB, so past this the connection is closed rather than read on (edge probe: 100 MB answers took a
 * core of the gateway's two, and ingest's p99 with it).
 */
export const MAX_ANSWER_BYTES = 1024 * 1024;
/** Most interim (1xx) answers taken before the final one: past it the attempt fails as a connection error. */
export const MAX_INTERIM_ANSWERS = 64;
const MAX_CACHED_TARGETS = 10_000;
const CONNECT_TIMEOUT_MS = 10_000;
/**
 * Connections of an origin kept free for subscriptions that hold none of it: one that holds some takes
 * another only while more than these are free (of 64: one subscription alone holds at most 56).
 */
const RESERVED_FOR_OTHERS = 8;
/**
 * Idle origins are dropped (their gate and pool) when the number of origins with a gate reaches this, or
 * twice what was left by the last drop: a gateway whose sinks change origin over months (each `herald
 * listen` session is a new port) kept a pool and a gate per origin ever used, about 21 KB each.
 */
const MIN_ORIGINS_BEFORE_DROP = 64;
/** The validation handshakes' share of an origin's connections. */
const PROBE_TENANT = '\u0000handshake';

/**
 * One attempt's abort: a flag and at most one listener (its request, once dispatched). Neither an
 * AbortController (an EventTarget, 6 % of delivery CPU) nor an EventEmitter: undici is never given
 * it as a signal, so one callback field is all it needs.
 */
class Abortable {
  aborted = false;
  /** Why, for the attempt log's `error`. */
  reason = 'the subscription was deleted or the gateway is stopping';
  request: { cancel(): void } | undefined = undefined;
  abort(reason?: string): void {
    if (this.aborted) return;
    this.aborted = true;
    if (reason !== undefined) this.reason = reason;
    this.request?.cancel();
  }
}

/**
 * The open attempts of one partition (or of redeliveries), aborted together when the subscription
 * is deleted or sought. A set, not a listener per attempt on a shared emitter: cheaper per attempt.
 */
export class AbortGroup {
  aborted = false;
  /** Why it was aborted, when a reason was given (the attempt log then records each aborted attempt). */
  reason: string | undefined;
  private readonly open = new Set<Abortable>();
  add(attempt: Abortable): void {
    if (this.aborted) attempt.abort(this.reason);
    else this.open.add(attempt);
  }
  delete(attempt: Abortable): void {
    this.open.delete(attempt);
  }
  /** `reason`: what the attempt log says of each aborted attempt (`aborted: <reason>`). */
  abort(reason?: string): void {
    this.aborted = true;
    this.reason = reason;
    for (const attempt of this.open) attempt.abort(reason);
    this.open.clear();
  }
}

/**
 * At most `size` requests to one origin at once: the rest wait here rather than in undici's queue,
 * where a request was already built, signed and timed (a probe saw requests queued behind a slow
 * receiver go out after a pause answered 200, signed with a retired secret, and other subscriptions
 * of that host dead-lettered by timeouts that ran while they only waited). A freed slot goes to the
 * waiting tenant (subscription) that holds the fewest of the origin's slots, the longest-waiting of
 * them on a tie, in order within a tenant: a subscription whose receiver stalls cannot queue every
 * other subscription of that host behind its own requests (a probe saw a healthy one wait 8.7 s).
 * And the last {@link RESERVED_FOR_OTHERS} free slots go only to tenants that hold none: tenants whose
 * receivers hang cannot take every slot before another comes (a re-probe saw a healthy one wait out the
 * full timeout behind one such tenant, the next probe behind two, the second taking the 8 the cap left).
 */
class OriginGate {
  private active = 0;
  /** Slots held, by tenant (absent: none). */
  private readonly held = new Map<string, number>();
  /** Waiting requests by tenant, tenants in the order they began to wait (Map order). */
  private readonly waiting = new Map<string, { go: () => void; attempt: Abortable }[]>();
  /** Free slots only a tenant that holds none may take (none for a small gate, which the reserve would starve). */
  private readonly reserve: number;
  /** No slot held and nobody waiting: nothing of the origin's pool is in use or about to be. */
  get idle(): boolean {
    return this.active === 0 && this.waiting.size === 0;
  }
  constructor(private readonly size: number) {
    this.reserve = size > 2 * RESERVED_FOR_OTHERS ? RESERVED_FOR_OTHERS : 0;
  }

  /** Resolves when a slot is free; `attempt`'s abort while waiting rejects it. */
  acquire(attempt: Abortable, tenant: string): Promise<void> | undefined {
    if (this.active < this.size && this.mayTake(tenant)) {
      this.active++;
      this.take(tenant);
      return undefined;
    }
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        go: () => {
          attempt.request = undefined;
          resolve();
        },
        attempt,
      };
      let queue = this.waiting.get(tenant);
      if (!queue) this.waiting.set(tenant, (queue = []));
      queue.push(waiter);
      attempt.request = {
        cancel: () => {
          const at = queue.indexOf(waiter);
          if (at >= 0) queue.splice(at, 1);
          if (queue.length === 0 && this.waiting.get(tenant) === queue) this.waiting.delete(tenant);
          reject(abortError());
        },
      };
    });
  }

  /**
   * Hands the slot to a waiter, or frees it. Handed over on the next turn of the event loop, once the
   * answer just read has been acted on: a 410 pauses its subscription before a request that waited
   * is built (was: one went out after the 410).
   */
  release(tenant: string): void {
    const left = (this.held.get(tenant) ?? 1) - 1;
    if (left > 0) this.held.set(tenant, left);
    else this.held.delete(tenant);
    if (this.waiting.size === 0) this.active--;
    else setImmediate(() => this.handOver());
  }

  /** Whether `tenant` may take a free slot: its first one always, another only while more than the reserve are free. */
  private mayTake(tenant: string): boolean {
    return !this.held.has(tenant) || this.size - this.active > this.reserve;
  }

  private take(tenant: string): void {
    this.held.set(tenant, (this.held.get(tenant) ?? 0) + 1);
  }

  private handOver(): void {
    const chosen = this.fewestHeld();
    // Freed instead when the waiters were aborted meanwhile, or when the one to have it could not take a
    // free slot: the slot of a tenant that came out of the reserve goes back to the reserve.
    if (chosen === undefined || (this.held.has(chosen) && this.size - this.active + 1 <= this.reserve)) {
      this.active--;
      return;
    }
    const queue = this.waiting.get(chosen)!;
    const next = queue.shift()!;
    // Served: to the back of the line, so a tie goes to another tenant next time.
    this.waiting.delete(chosen);
    if (queue.length > 0) this.waiting.set(chosen, queue);
    this.take(chosen);
    next.go();
  }

  /** Aborts every request of `tenant` still waiting here: each is withdrawn, never sent. */
  withdraw(tenant: string): void {
    for (const { attempt } of [...(this.waiting.get(tenant) ?? [])]) attempt.abort();
  }

  /** The waiting tenant that holds the fewest slots, the longest-waiting of them on a tie (Map order). */
  private fewestHeld(): string | undefined {
    let chosen: string | undefined;
    let fewest = Number.POSITIVE_INFINITY;
    for (const tenant of this.waiting.keys()) {
      const holds = this.held.get(tenant) ?? 0;
      if (holds < fewest) [chosen, fewest] = [tenant, holds];
    }
    return chosen;
  }
}

/**
 * Runs `fn` once the event loop has been through a poll (I/O) phase: from a timer's callback, in the
 * check phase of the same turn. Node runs the timers phase before the poll phase, so when the loop was
 * busy past an attempt's timeout (the delivery thread scanning a backlog for 2,000 subscriptions) the
 * timeout fires before an answer that already arrived is read: an attempt the receiver had answered
 * was recorded as timed out and sent again (scale probe: 110-256 duplicates per 5,000 events). A
 * timeout is therefore acted on only if the attempt is still open after that poll phase.
 */
const afterPoll = (fn: () => void): void => void setImmediate(fn);

/**
 * Posts webhook requests through one keep-alive undici Pool per sink origin.
 * Redirects are never followed. `timeoutMs` bounds the whole attempt: connect,
 * headers and body (a receiver that drips its answer a byte at a time is timed
 * out like one that never answers). `group` aborts it early (the subscription
 * was deleted or sought: its answer no longer matters).
 */
export function createHttpSender(opts: { connectionsPerOrigin?: number; allowPrivate?: boolean } = {}) {
  const pools = new Map<string, Pool>();
  /** Requests whose attempt has not ended: what a close waits for (not undici's, which may hold an abandoned connect). */
  const open = new Set<Promise<unknown>>();
  const connections = opts.connectionsPerOrigin ?? 64;
  const gates = new Map<string, OriginGate>();
  let dropAt = MIN_ORIGINS_BEFORE_DROP;
  const gateFor = (origin: string): OriginGate => {
    let gate = gates.get(origin);
    if (!gate) {
      if (gates.size >= dropAt) dropIdleOrigins();
      gates.set(origin, (gate = new OriginGate(connections)));
    }
    return gate;
  };
  /**
   * Forgets the gate and closes the pool of every origin nothing uses now (a slot is taken synchronously
   * before its pool is, so an idle gate's pool has no request): a later request to it starts afresh.
   */
  function dropIdleOrigins(): void {
    for (const [origin, gate] of gates) {
      if (!gate.idle) continue;
      gates.delete(origin);
      const pool = pools.get(origin);
      pools.delete(origin);
      if (pool && !pool.destroyed) pool.close().catch(() => undefined);
    }
    dropAt = Math.max(MIN_ORIGINS_BEFORE_DROP, 2 * gates.size);
  }
  /** Sink URL → origin and request path: parsed once per sink, not per attempt. */
  const targets = new Map<string, { origin: string; path: string }>();
  const connect = opts.allowPrivate === false ? guardedConnector() : undefined;

  function poolFor(origin: string): Pool {
    let pool = pools.get(origin);
    if (!pool) {
      pool = new Pool(origin, {
        connections,
        keepAliveTimeout: 30_000,
        connectTimeout: CONNECT_TIMEOUT_MS,
        ...(connect && { connect }),
      });
      pools.set(origin, pool);
    }
    return pool;
  }

  function targetOf(sink: string): { origin: string; path: string } {
    let target = targets.get(sink);
    if (!target) {
      const url = new URL(sink);
      target = { origin: url.origin, path: url.pathname + url.search };
      if (targets.size >= MAX_CACHED_TARGETS) targets.clear(); // sinks are few; a bound keeps churn harmless
      targets.set(sink, target);
    }
    return target;
  }

  /**
   * Posts the request `build` makes once a connection to the sink's origin is free: it is built (and
   * signed) then, with what holds then, or not at all when `build` gives none (`withdrawn`). The
   * timeout runs from then, not while the request waits for a connection.
   */
  /** `tenant`: whose request it is (a subscription), for the fair share of the origin's connections. */
  async function send(
    sink: string,
    build: () => Outgoing | undefined,
    timeoutMs: number,
    group?: AbortGroup,
    tenant = '',
  ): Promise<SendResult> {
    const target = targetOf(sink);
    const controller = new Abortable();
    group?.add(controller);
    const gate = gateFor(target.origin);
    try {
      await gate.acquire(controller, tenant);
    } catch {
      group?.delete(controller);
      return { status: null, withdrawn: true }; // aborted while it waited: it never left
    }
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    let settled = false;
    // An attempt that ended while still connecting leaves its connect running: the origin's slot is given
    // back when undici is done with it (re-probe: given back at once, connects to a sink that drops
    // packets piled up past the 64 a host may have, 485 at a time). Otherwise it is given back here.
    const slot = { heldByConnect: false };
    try {
      if (controller.aborted) return { status: null, withdrawn: true };
      const request = build();
      if (!request) return { status: null, withdrawn: true };
      timeoutMs = request.timeoutMs ?? timeoutMs;
      timer = setTimeout(
        () =>
          afterPoll(() => {
            if (settled) return;
            timedOut = true;
            controller.abort();
          }),
        timeoutMs,
      );
      const answer = post(poolFor(target.origin), target.path, request.headers, request.body, controller, slot, () => gate.release(tenant));
      open.add(answer);
      const res = await answer.finally(() => {
        settled = true;
        open.delete(answer);
      });
      return { status: res.status, retryAfter: res.retryAfter, error: res.status >= 300 ? res.excerpt : undefined };
    } catch (err) {
      const e = err as Error & { code?: string };
      if (e.code === SINK_NOT_ALLOWED) return { status: null, error: e.message, sinkNotAllowed: true };
      if (timedOut || e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT') {
        return { status: null, error: `no complete answer within ${timeoutMs} ms`, timedOut: true };
      }
      if (controller.aborted) return { status: null, error: `aborted: ${controller.reason}` };
      // undici asserts a status of at least 100 (probe: a receiver's `000` was logged as an assertion).
      if (e.code === 'ERR_ASSERTION') return { status: null, error: 'the answer is not valid HTTP (its status line)' };
      if (isLocalFailure(e)) return { status: null, error: `${e.code}: ${e.message}`, localFailure: true };
      return { status: null, error: `${e.code ?? e.name}: ${e.message}` };
    } finally {
      clearTimeout(timer);
      group?.delete(controller);
      if (!slot.heldByConnect) gate.release(tenant);
    }
  }

  /**
   * The CloudEvents validation handshake: `OPTIONS` to the exact sink URL, through the same pools,
   * so the connect-time address check (`HERALD_SINK_ALLOW_PRIVATE=false`) applies to it too. The
   * answer's body is read and dropped; its headers come back (names in lower case).
   */
  async function probe(sink: string, headers: Record<string, string>, timeoutMs: number): Promise<ProbeResult> {
    const url = new URL(sink);
    // Through the origin's gate too: a connection it took would leave a gated request queued in undici.
    const gate = gateFor(url.origin);
    await gate.acquire(new Abortable(), PROBE_TENANT);
    // Not AbortSignal.timeout: its timer aborts in the timers phase, before an answer already waiting is read.
    const controller = new AbortController();
    let settled = false;
    let timedOut = false;
    const timer = setTimeout(
      () =>
        afterPoll(() => {
          if (settled) return;
          timedOut = true;
          controller.abort(Object.assign(new Error(`no complete answer within ${timeoutMs} ms`), { name: 'TimeoutError' }));
        }),
      timeoutMs,
    );
    let interim = 0;
    try {
      const res = await poolFor(url.origin).request({
        method: 'OPTIONS',
        path: url.pathname + url.search,
        headers,
        headersTimeout: 0, // bounded by the timer above, as in `post`
        bodyTimeout: 0,
        signal: controller.signal,
        // As in `post`: an endless stream of 1xx answers is no answer (probe: 7.6 s of CPU in an 8 s timeout).
        onInfo: () => {
          if (++interim === MAX_INTERIM_ANSWERS + 1) controller.abort(interimAnswersError());
        },
      });
      try {
        await readExcerpt(res.body);
      } catch (err) {
        if (!endedAtHeaders(res.statusCode, err)) throw err;
      }
      settled = true;
      return { status: res.statusCode, headers: res.headers };
    } catch (err) {
      const e = err as Error & { code?: string };
      if (e.code === SINK_NOT_ALLOWED) return { status: null, error: e.message, sinkNotAllowed: true };
      if (timedOut || e.name === 'TimeoutError' || e.code === 'UND_ERR_HEADERS_TIMEOUT' || e.code === 'UND_ERR_BODY_TIMEOUT')
        return { status: null, error: `no complete answer within ${timeoutMs} ms`, timedOut: true };
      if (isLocalFailure(e)) return { status: null, error: `${e.code}: ${e.message}`, localFailure: true };
      return { status: null, error: `${e.code ?? e.name}: ${e.message}` };
    } finally {
      settled = true;
      clearTimeout(timer);
      gate.release(PROBE_TENANT);
    }
  }

  return {
    send,
    probe,
    /** How many origins have a pool (diagnostics and tests). */
    origins: (): number => pools.size,
    /**
     * Withdraws `tenant`'s requests waiting for a connection to `sink`'s origin (a PATCH moved its sink
     * elsewhere: they go to the new one instead of waiting for a slot of the old, which may hang).
     */
    withdrawWaiting(sink: string, tenant: string): void {
      gates.get(targetOf(sink).origin)?.withdraw(tenant);
    },
    /**
     * Lets open requests finish until `deadline` (epoch ms), then destroys what is still open. Waits for
     * the attempts, not for the pools to drain: a connect an ended attempt left behind (a sink that drops
     * packets) would hold the close for the connect timeout (was: 10 s).
     */
    async close(deadline = Number.POSITIVE_INFINITY): Promise<void> {
      const all = [...pools.values()];
      pools.clear();
      await untilDeadline(Promise.all([...open].map((p) => p.catch(() => undefined))), deadline);
      await Promise.all(all.map((p) => (p.destroyed ? undefined : p.destroy().catch(() => undefined))));
    },
  };
}
export type HttpSender = ReturnType<typeof createHttpSender>;

/**
 * Every new connection checks the address it is about to connect to (SSRF, DNS rebinding): an IP
 * literal host here, a name through the lookup that `net.connect` uses, so what is checked is what
 * is connected to. Reused keep-alive connections were checked when they were opened.
 */
function guardedConnector(): buildConnector.connector {
  const base = buildConnector({ timeout: CONNECT_TIMEOUT_MS, lookup: guardedLookup() });
  return (options, callback) => {
    const refused = refuseLiteral(options.hostname);
    if (refused) {
      callback(refused, null);
      return;
    }
    base(options, callback);
  };
}

/** What `post` hears back: the final status, the first Retry-After, and the start of the body. */
interface Answer {
  status: number;
  retryAfter?: string;
  excerpt: string;
}

/**
 * One POST through undici's dispatcher with a handler that keeps only what an attempt needs (the
 * status, Retry-After, the body's first KiB): `Pool.request` builds a response stream, an async
 * iterator and a parsed header object per request, a tenth of the delivery thread's time when
 * profiled. Rejects with undici's error or the abort's (a timeout is the caller's abort). An attempt that
 * ends while still connecting sets `slot.heldByConnect`: its connect runs on until it opens (and is
 * aborted) or fails, and then `released` is called.
 */
function post(
  pool: Pool,
  path: string,
  headers: Record<string, string>,
  body: Buffer,
  controller: Abortable,
  slot: { heldByConnect: boolean },
  released: () => void,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    pool.dispatch(
      // No undici headers/body timeout (0): the attempt's own timer bounds it, acting only after a poll phase.
      // undici's coarse timers (one 0.5 s tick per turn of the loop) fire in the timers phase like any timer:
      // after a busy loop they cut an answer already waiting (busy-loop test: timeoutMs 900, 2 s block).
      { method: 'POST', path, headers, body, headersTimeout: 0, bodyTimeout: 0 },
      new AnswerHandler(controller, resolve, reject, slot, released),
    );
  });
}

/**
 * A 204 or a 304 ends with its header block whatever its Content-Length says (RFC 9112 §6.3); undici, which
 * checks the length, fails it (probe: a receiver's `204` with `Content-Length: 5` was retried, then
 * dead-lettered as max_attempts with no status; its validation handshake's was refused).
 */
const endedAtHeaders = (status: number, err: unknown): boolean =>
  (status === 204 || status === 304) && (err as { code?: string }).code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH';

const interimAnswersError = () =>
  Object.assign(new Error(`more than ${MAX_INTERIM_ANSWERS} interim (1xx) answers`), { code: 'INTERIM_ANSWERS' });

const abortError = () => Object.assign(new Error('the attempt was aborted'), { name: 'AbortError' });

/** undici's handler for one `post`: one object with its methods on the prototype, not five closures per request. */
class AnswerHandler {
  private chunks: Buffer[] | undefined;
  private size = 0;
  /** Interim (1xx) answers read so far. */
  private interim = 0;
  private status = 0;
  private retryAfter: string | undefined;
  private abortRequest: ((err: Error) => void) | undefined;
  /** Resolved or rejected: an answer cut at its limit ends in an error too, which then changes nothing. */
  private settled = false;

  constructor(
    private readonly controller: Abortable,
    private readonly resolve: (answer: Answer) => void,
    private readonly reject: (err: Error) => void,
    private readonly slot: { heldByConnect: boolean },
    private readonly released: () => void,
  ) {
    controller.request = this;
  }

  /** undici is done with the request (its `onComplete` or `onError`): a slot an abandoned connect held is given back, after this callback returns. */
  private release(): void {
    if (!this.slot.heldByConnect) return;
    this.slot.heldByConnect = false;
    queueMicrotask(this.released);
  }

  /**
   * The attempt was aborted (timeout, seek, delete): undici ends the request once it has started.
   * Before that (still connecting: a sink that drops packets) it ends here, at once, and `onConnect`
   * aborts the request if a connection comes later (hostile-receiver probe: a timeoutMs of 1,500 ran
   * to undici's 10 s connect timeout, holding the attempt and its connection slot).
   */
  cancel(): void {
    if (this.abortRequest) return this.abortRequest(abortError());
    this.slot.heldByConnect = true;
    this.fail(abortError());
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.controller.aborted) abort(abortError());
    else this.abortRequest = abort;
  }

  onHeaders(statusCode: number, raw: Buffer[]): boolean {
    if (statusCode < 200) {
      // Informational: the final answer follows. Counted, as they are no body for the 1 MiB limit: a receiver
      // streaming `103`s without end held a core of the gateway's two for the whole timeout (hostile-receiver
      // probe: 1.16 GB of 103s read in 10 s, 9.3 s of CPU, ingest p99 38 → 85 ms).
      if (++this.interim > MAX_INTERIM_ANSWERS && this.abortRequest) {
        this.fail(interimAnswersError());
        this.abortRequest(abortError());
      }
      return true;
    }
    this.status = statusCode;
    this.retryAfter = headerValue(raw, 'retry-after');
    return true;
  }

  onData(chunk: Buffer): boolean {
    if (this.size < EXCERPT_BYTES) (this.chunks ??= []).push(chunk);
    this.size += chunk.length;
    if (this.size > MAX_ANSWER_BYTES && this.abortRequest) {
      // Answered as it stands: closing the connection is the only way to stop reading it.
      this.answer();
      this.abortRequest(Object.assign(new Error('answer body past its limit'), { name: 'AbortError' }));
    }
    return true;
  }

  onComplete(): void {
    this.release();
    this.answer();
  }

  onError(err: Error): void {
    this.release();
    // Taken as answered (undici has closed the connection).
    if (endedAtHeaders(this.status, err)) {
      this.answer();
      return;
    }
    this.fail(err);
  }

  private answer(): void {
    if (this.settled) return;
    this.settled = true;
    this.controller.request = undefined;
    const excerpt = this.chunks ? excerptOf(Buffer.concat(this.chunks)) : '';
    this.resolve({ status: this.status, retryAfter: this.retryAfter, excerpt });
  }

  private fail(err: Error): void {
    if (this.settled) return;
    this.settled = true;
    this.controller.request = undefined;
    this.reject(err);
  }
}

/** The first value of a header in undici's raw list (`[name, value, …]`); `name` in lower case. */
function headerValue(raw: Buffer[], name: string): string | undefined {
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const key = raw[i]!;
    if (key.length === name.length && key.toString('latin1').toLowerCase() === name) return raw[i + 1]!.toString('latin1');
  }
  return undefined;
}

async function readExcerpt(body: AsyncIterable<Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    if (size < EXCERPT_BYTES) chunks.push(chunk);
    size += chunk.length;
    if (size > MAX_ANSWER_BYTES) break; // the stream is destroyed, its connection closed
  }
  return excerptOf(Buffer.concat(chunks));
}

/**
 * The answer's first bytes as text, at most {@link EXCERPT_BYTES} in UTF-8: bytes that are not UTF-8
 * become U+FFFD, three bytes each (a probe's 1 KiB of 0xE9 made a 3 KiB excerpt), so it is cut again,
 * at a character's start.
 */
function excerptOf(body: Buffer): string {
  const text = body.subarray(0, EXCERPT_BYTES).toString('utf8');
  const encoded = Buffer.from(text, 'utf8');
  if (encoded.length <= EXCERPT_BYTES) return text;
  let end = EXCERPT_BYTES;
  while (end > 0 && (encoded[end]! & 0xc0) === 0x80) end--; // a continuation byte: back to its character's first
  return encoded.subarray(0, end).toString('utf8');
}
