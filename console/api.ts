import { createSseParser, type SseMessage } from './sse';
import type { Readiness } from './types';

/**
 * The console's only door to Herald: same-origin `fetch` with the API key from `sessionStorage`
 * (never `localStorage` or a cookie, so it ends with the tab; in memory when the browser refuses
 * storage) as `Authorization: Bearer`, and problem+json answers turned into one readable message.
 */

const KEY_ITEM = 'herald.apiKey';
/** The key, when this browser refuses to store it (storage disabled, or every write throws): kept until the page reloads. */
let keyInMemory: string | null = null;

export function storedKey(): string | null {
  try {
    // The key in memory is the newer one: storage refused it, and may still hold an older key.
    return keyInMemory ?? sessionStorage.getItem(KEY_ITEM);
  } catch {
    return keyInMemory; // storage disabled: the page still works against an open gateway
  }
}

/** Keeps `key` in sessionStorage or, when the browser refuses that, in memory for this page. */
export function saveKey(key: string): void {
  try {
    sessionStorage.setItem(KEY_ITEM, key);
    keyInMemory = null;
  } catch {
    keyInMemory = key;
  }
}

/** Whether the key lives only in this page's memory (the UI says so: a reload asks for it again). */
export function keyOnlyInMemory(): boolean {
  return keyInMemory !== null;
}

export function forgetKey(): void {
  keyInMemory = null;
  try {
    sessionStorage.removeItem(KEY_ITEM);
  } catch {
    // nothing was stored there
  }
}

/**
 * Why `key` cannot be used, or undefined. A header value must be ISO-8859-1 (fetch throws otherwise), and
 * a pasted key often brings an invisible character along (a zero-width space, a non-breaking space):
 * visible ASCII is what keys are made of, and it names the culprit.
 */
export function keyProblem(key: string): string | undefined {
  const bad = [...key].find((c) => !/^[\x21-\x7e]$/.test(c));
  if (bad === undefined) return undefined;
  const code = `U+${bad.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}`;
  return `An API key holds only visible ASCII characters; this one contains ${code}${bad.trim() ? ` (${bad})` : ' (an invisible character)'}, maybe pasted along with it.`;
}

/** An answer that was not a 2xx (status 0: the gateway could not be reached; code `unsendable_key`: see `request`). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

let unauthorized: ((error: ApiError) => void) | undefined;

/** Called on every 401, and when the stored key cannot be sent, so the page can ask for a (new) key. */
export function onUnauthorized(handler: (error: ApiError) => void): void {
  unauthorized = handler;
}

/** API paths are relative to the page (`/console` → `/partitions`), so a path prefix in front of Herald keeps working. */
function urlOf(path: string): string {
  return new URL(path.replace(/^\//, ''), document.baseURI).toString();
}

function headers(extra: Record<string, string>): Record<string, string> {
  const key = storedKey();
  return key ? { ...extra, authorization: `Bearer ${key}` } : extra;
}

interface Problem {
  detail?: string;
  title?: string;
  code?: string;
  errors?: { attribute?: string; index?: number; message: string }[];
}

/** `detail`, then each violation (`attribute: message`) when they add something. */
export function problemMessage(problem: Problem, status: number): string {
  const head = problem.detail ?? problem.title ?? `HTTP ${status}`;
  const details = (problem.errors ?? [])
    .filter((e) => e.message !== problem.detail)
    .map((e) =>
      [e.index !== undefined ? `[${e.index}]` : '', e.attribute ?? '', e.attribute || e.index !== undefined ? ': ' : '', e.message].join(
        '',
      ),
    );
  return details.length > 0 ? `${head} — ${details.join('; ')}` : head;
}

/** Whether `req` went with the key stored now: a 401 to a key already replaced (a poll sent before it was) asks for nothing. */
function sentWithCurrentKey(req: Request): boolean {
  const key = storedKey();
  return req.headers.get('authorization') === (key ? `Bearer ${key}` : null);
}

async function failure(res: Response, req: Request): Promise<ApiError> {
  let problem: Problem = {};
  try {
    if (/json/.test(res.headers.get('content-type') ?? '')) problem = (await res.json()) as Problem;
  } catch {
    // not JSON after all: the status says enough
  }
  const error = new ApiError(res.status, problemMessage(problem, res.status), problem.code);
  if (res.status === 401 && sentWithCurrentKey(req)) unauthorized?.(error);
  return error;
}

/**
 * Builds the request before sending it, so a key that cannot go in a header (a TypeError from `Request`,
 * with nothing sent) is a key problem that sends the page back to the key prompt, not "cannot reach the
 * gateway", which fetch's own TypeError for a network failure means.
 */
function request(path: string, init: RequestInit): Request {
  try {
    return new Request(urlOf(path), { ...init, cache: 'no-store' });
  } catch (err) {
    if (!(err instanceof TypeError)) throw err;
    const why = keyProblem(storedKey() ?? '') ?? `The API key cannot be sent in a header (${err.message}).`;
    const error = new ApiError(401, why, 'unsendable_key');
    unauthorized?.(error);
    throw error;
  }
}

/** `fetch`, with a failure to connect as an ApiError with status 0 (an abort stays an AbortError). */
async function reach(req: Request): Promise<Response> {
  try {
    return await fetch(req);
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError(0, `cannot reach the gateway (${(err as Error).message})`);
  }
}

async function send(method: string, path: string, init: { body?: unknown; contentType?: string; signal?: AbortSignal } = {}) {
  const extra: Record<string, string> = { accept: 'application/json, application/problem+json' };
  let body: string | undefined;
  if (init.body !== undefined) {
    extra['content-type'] = init.contentType ?? 'application/json';
    body = JSON.stringify(init.body);
  }
  const req = request(path, { method, headers: headers(extra), body, signal: init.signal });
  const res = await reach(req);
  if (!res.ok) throw await failure(res, req);
  return res;
}

async function json<T>(res: Response): Promise<T> {
  return res.status === 204 ? (undefined as T) : ((await res.json()) as T);
}

/** `GET /readyz`: its 503 is a readiness answer (plain JSON), not a failure. */
export async function readiness(): Promise<Readiness> {
  const req = request('readyz', {});
  const res = await reach(req);
  if (res.status !== 200 && res.status !== 503) throw await failure(res, req);
  return (await res.json()) as Readiness;
}

export const api = {
  get: async <T>(path: string, signal?: AbortSignal): Promise<T> => json<T>(await send('GET', path, { signal })),
  post: async <T>(path: string, body?: unknown, contentType?: string): Promise<T> =>
    json<T>(await send('POST', path, { body, contentType })),
  del: async (path: string): Promise<void> => {
    await send('DELETE', path);
  },
};

/**
 * Reads `GET /events/stream` (Server-Sent Events) with `fetch`, so the key goes in a header, and
 * calls `on.open` once the gateway accepted it, then `on.message` for each `cloudevent` message until the stream ends (resolves) or `signal`
 * aborts (rejects with an AbortError). A 400 (bad SQL) or 401 rejects with an ApiError.
 */
export async function readEventStream(
  sql: string,
  on: { open: () => void; message: (message: SseMessage) => void },
  signal: AbortSignal,
): Promise<void> {
  const query = sql.trim() ? `?${new URLSearchParams({ sql: sql.trim() })}` : '';
  const req = request(`events/stream${query}`, { headers: headers({ accept: 'text/event-stream' }), signal });
  const res = await reach(req);
  if (!res.ok) throw await failure(res, req);
  if (!res.body) throw new ApiError(res.status, 'the browser gave no readable body for the stream');
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = createSseParser();
  on.open();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    for (const message of parser.push(value)) if (message.event === 'cloudevent') on.message(message);
  }
}
