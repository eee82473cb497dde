/**
 * A typed client for Herald's HTTP API: openapi-fetch over the types openapi-typescript generates
 * from openapi/openapi.yaml (`npm run generate:api-types` → herald-api.d.ts beside this file; a test
 * fails when that file is out of date with the contract). It adds what every caller needs: the base
 * URL, the bearer API key, and two errors: {@link HeraldApiError} when the gateway refused a request
 * (its RFC 9457 problem attached) and {@link HeraldConnectionError} when it could not be reached.
 */
import createClient, { type Client } from 'openapi-fetch';
import type { components, paths } from './herald-api';

export type { components, paths };
export type Problem = components['schemas']['Problem'];
export type HeraldClient = Client<paths>;

export interface HeraldClientOptions {
  /** Base URL of the gateway, e.g. `http://127.0.0.1:8080` (a trailing slash is ignored). */
  url: string;
  /** Sent as `Authorization: Bearer <apiKey>` when set. */
  apiKey?: string;
  userAgent?: string;
  /** Defaults to the global fetch (undici). */
  fetch?: typeof globalThis.fetch;
  /**
   * Each request fails (a `TimeoutError`) when its whole answer, body included, has not arrived
   * within this many milliseconds; bodies are then read whole before they are parsed. Absent: no
   * limit (what a stream needs).
   */
  timeoutMs?: number;
}

/** The gateway answered with a status other than 2xx. */
export class HeraldApiError extends Error {
  override name = 'HeraldApiError';
  constructor(
    readonly status: number,
    /** The problem document, when the answer was one (every Herald error is). */
    readonly problem: Problem | undefined,
  ) {
    super(problem ? `${problem.detail} (${status} ${problem.code})` : `the gateway answered HTTP ${status}`);
  }
}

/** No HTTP answer at all: connection refused, DNS failure, reset. */
export class HeraldConnectionError extends Error {
  override name = 'HeraldConnectionError';
  constructor(
    readonly url: string,
    cause: unknown,
  ) {
    super(`cannot reach the gateway at ${url}: ${reasonOf(cause, url)}`, { cause });
  }
}

/** undici's `fetch failed` hides the reason in `cause` (often an AggregateError of one per address). */
function reasonOf(err: unknown, url: string): string {
  let at: unknown = err;
  for (let depth = 0; depth < 5 && at instanceof Error; depth++) {
    const code = (at as NodeJS.ErrnoException).code;
    if (code) return code;
    if (at instanceof AggregateError && at.errors[0]) at = at.errors[0];
    else if (at.cause) at = at.cause;
    else return at.message === 'bad port' ? badPort(url) : at.message;
  }
  return String(at);
}

/** fetch (as browsers) will not connect to ports of well-known other services (1, 25, 6000…): say that, not "bad port". */
const badPort = (url: string) =>
  `fetch refuses port ${new URL(url).port} (it never connects to the ports of some well-known services); use another port`;

const isAbort = (err: unknown): boolean => err instanceof Error && (err.name === 'AbortError' || err.name === 'TimeoutError');

export function createHeraldClient(options: HeraldClientOptions): HeraldClient {
  const baseUrl = options.url.replace(/\/+$/, '');
  const fetchImpl = options.fetch ?? globalThis.fetch;
  return createClient<paths>({
    baseUrl,
    headers: {
      authorization: options.apiKey ? `Bearer ${options.apiKey}` : undefined,
      'user-agent': options.userAgent,
    },
    // Redirects are not part of the contract; a 3xx is reported as what it is.
    redirect: 'manual',
    fetch: async (request) => {
      try {
        return options.timeoutMs === undefined ? await fetchImpl(request) : await fetchWithin(fetchImpl, request, options.timeoutMs);
      } catch (err) {
        // The caller stopped it (Ctrl-C on a stream), or the answer came and was too large: not unreachable.
        if (isAbort(err) || err instanceof HeraldAnswerTooLargeError || err instanceof HeraldAnswerCutError) throw err;
        throw new HeraldConnectionError(baseUrl, err);
      }
    },
  });
}

/**
 * `request`'s answer, body included, within `ms`, else a `TimeoutError`. The body is read here, under
 * the same deadline (openapi-fetch would read it after fetch() returned, where a signal given to
 * fetch may no longer reach it: undici's Request follows it through a WeakRef).
 */
async function fetchWithin(fetchImpl: typeof globalThis.fetch, request: Request, ms: number): Promise<Response> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException(`no complete answer within ${ms} ms`, 'TimeoutError')), ms);
  const onAbort = () => controller.abort(request.signal.reason);
  request.signal.addEventListener('abort', onAbort, { once: true });
  // The deadline is raced here too, not left to the fetch alone: undici's Request follows `controller.signal` through a
  // WeakRef, and after a garbage collection the abort no longer reached a fetch still waiting for the answer's head
  // (bulk probe: `--timeout 2` gave up after the 30 s the server took, then read the late body as empty and blamed
  // the gateway's version).
  let onDeadline: (() => void) | undefined;
  const deadline = new Promise<never>((_resolve, reject) => {
    onDeadline = () => reject(controller.signal.reason);
    controller.signal.addEventListener('abort', onDeadline, { once: true });
  });
  try {
    const fetching = fetchImpl(new Request(request, { signal: controller.signal }));
    fetching.catch(() => undefined); // the loser of the race below
    const response = await Promise.race([fetching, deadline]);
    if (response.body === null) return response;
    let body: Uint8Array;
    try {
      body = await readAll(response.body, controller.signal);
    } catch (err) {
      if (controller.signal.aborted || err instanceof HeraldAnswerTooLargeError) throw err;
      throw new HeraldAnswerCutError(err);
    }
    return new Response(body, { status: response.status, statusText: response.statusText, headers: response.headers });
  } finally {
    clearTimeout(timer);
    request.signal.removeEventListener('abort', onAbort);
    controller.signal.removeEventListener('abort', onDeadline!);
  }
}

/**
 * The largest answer read: past V8's longest string, JSON of it could not be parsed anyway, and no
 * Herald answer comes near it (a page ends at 8 MiB plus one event).
 */
export const MAX_ANSWER_BYTES = 512 * 1024 * 1024;

/** The answer's headers came, then its connection broke before the whole body had (not "cannot reach"). */
export class HeraldAnswerCutError extends Error {
  override name = 'HeraldAnswerCutError';
  constructor(cause: unknown) {
    super(`the gateway's answer was cut off before its end: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
}

/** An answer longer than {@link MAX_ANSWER_BYTES}: not read on (its connection is closed). */
export class HeraldAnswerTooLargeError extends Error {
  override name = 'HeraldAnswerTooLargeError';
  constructor() {
    super(`the answer is larger than ${MAX_ANSWER_BYTES / 1024 / 1024} MiB, more than any Herald gateway sends; not read`);
  }
}

/** The whole stream, or the signal's reason once it aborts (the stream cancelled: its connection closes). */
async function readAll(stream: ReadableStream<Uint8Array>, signal: AbortSignal): Promise<Uint8Array> {
  const reader = stream.getReader();
  const aborted = new Promise<never>((_, reject) => {
    const stop = () => {
      reject(signal.reason as Error); // first: the cancel below also ends the pending read (as "done")
      void reader.cancel(signal.reason).catch(() => undefined);
    };
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  });
  aborted.catch(() => undefined); // only raced below
  const chunks: Uint8Array[] = [];
  let length = 0;
  for (;;) {
    const { done, value } = await Promise.race([reader.read(), aborted]);
    if (done) break;
    length += value.length;
    if (length > MAX_ANSWER_BYTES) {
      void reader.cancel().catch(() => undefined);
      throw new HeraldAnswerTooLargeError();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, length);
}

/** Anything shaped like a Herald problem document (the `errors` list is optional only to be lenient). */
function asProblem(body: unknown): Problem | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const { detail, code, errors } = body as Record<string, unknown>;
  if (typeof detail !== 'string' || typeof code !== 'string') return undefined;
  // Read leniently, used safely: only entries that are objects, and always a list.
  const entries = Array.isArray(errors) ? errors.filter((e): e is Problem['errors'][number] => typeof e === 'object' && e !== null) : [];
  return { ...(body as Problem), errors: entries };
}

/**
 * The data of a 2xx answer (`undefined` for a 204), or throws {@link HeraldApiError} with the
 * problem the gateway sent.
 */
export function unwrap<D>(result: { data?: D; error?: unknown; response: Response }): D {
  if (!result.response.ok) throw new HeraldApiError(result.response.status, asProblem(result.error));
  return result.data as D;
}
