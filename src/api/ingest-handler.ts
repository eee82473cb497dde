import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { bindingHeaders, parseHttpMessage } from '../cloudevents/parse';
import { AppError } from '../errors';
import type { IngestObserver } from '../metrics';
import type { EventLog } from '../wal/event-store';
import { sendJson, sendProblem } from './problem';
import { decodeBody, decoderOf, readBody } from './read-body';

export interface IngestDeps {
  store: EventLog;
  log: Logger;
  maxBodyBytes: number;
  /** HERALD_BODY_IDLE_TIMEOUT_MS: a body that makes no progress this long is a 408. */
  bodyIdleMs: number;
  /** HERALD_INGEST_BUFFER_BYTES: body bytes of publishes held at once (absent: no bound). */
  bufferBytes?: number;
  maxJsonDepth: number;
  observer?: IngestObserver;
}

/** How soon a publish refused for HERALD_INGEST_BUFFER_BYTES may be tried again. */
const BUFFER_FULL_RETRY_AFTER_SECONDS = 1;

/**
 * The body bytes publishes hold, received and not yet answered: a publish is refused once they would
 * pass `max` (a probe's 1,000 concurrent 1 MiB publishes took 3.5 GB). Bytes count as they arrive, so
 * a publish that stalls holds only what it sent. One publish alone is always let through, so a body of
 * HERALD_MAX_BODY_BYTES passes however small the bound.
 */
function createBuffer(max: number) {
  let held = 0;
  return {
    /** Whether `bytes` more may be held by a publish that holds `mine` already. */
    room: (bytes: number, mine: number): boolean => held === mine || held + bytes <= max,
    take(bytes: number): void {
      held += bytes;
    },
    give(bytes: number): void {
      held -= bytes;
    },
  };
}

/**
 * Each connection's latest publish, settled once it has handed its events to the store (or given up):
 * publishes pipelined on one connection are appended in the order they were sent. Served as they
 * arrive, one whose body takes longer to decode (gzip) was overtaken by the one behind it, which got
 * the lower offset in a shared partition (HTTP probe: reversed 10 of 10 times).
 */
const appendTurns = new WeakMap<object, Promise<void>>();

/**
 * `POST /events` as a plain node:http handler: the ingest hot path skips
 * express (about 150 µs of CPU per request on Node 20) but shares its
 * validation and problem format with every other route.
 * Answers 202 once the new events are durable, 200 when all were duplicates.
 */
export function createIngestHandler(deps: IngestDeps) {
  const buffer = createBuffer(deps.bufferBytes ?? Number.POSITIVE_INFINITY);
  return async function ingest(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    let holds = 0;
    const before = appendTurns.get(req.socket);
    let passTurn!: () => void;
    const turn = new Promise<void>((resolve) => (passTurn = resolve));
    appendTurns.set(req.socket, turn);
    try {
      // A declared length that cannot fit now is refused before a byte is read (past the body limit, readBody refuses it).
      const declared = Number(req.headers['content-length']);
      const hold = (bytes: number) => {
        if (!buffer.room(bytes, holds)) throw bufferFull(deps.bufferBytes!);
        buffer.take(bytes);
        holds += bytes;
      };
      if (declared <= deps.maxBodyBytes && !buffer.room(declared, 0)) throw bufferFull(deps.bufferBytes!);
      const decoder = decoderOf(req.headers['content-encoding']); // a coding it cannot undo: refused before the body is asked for
      const raw = await readBody(req, res, { limit: deps.maxBodyBytes, idleMs: deps.bodyIdleMs, onChunk: hold });
      const body = decoder ? await decodeBody(raw, decoder, deps.maxBodyBytes) : raw;
      // Decoded, a body may be far larger than on the wire (a re-probe's 4 KB of gzip was 4 MB): held too.
      if (body.length > raw.length) hold(body.length - raw.length);
      const { mode, events } = parseHttpMessage({ headers: bindingHeaders(req.rawHeaders), body }, { maxJsonDepth: deps.maxJsonDepth });
      if (before) await before;
      const appended = deps.store.append(events);
      passTurn();
      const results = await appended;
      let duplicates = 0;
      for (const r of results) if (r.duplicate) duplicates++;
      sendJson(res, results.length > 0 && duplicates === results.length ? 200 : 202, { results });
      deps.observer?.stored(mode, results.length - duplicates);
      if (duplicates > 0) deps.observer?.duplicates(duplicates);
    } catch (err) {
      deps.observer?.rejected(sendProblem(res, err, deps.log));
    } finally {
      // A publish refused before its turn (a body that is not JSON, a coding it cannot undo) passes it on only
      // once the one before it has appended: passed at once, the one behind it overtook a gzip publish still
      // decoding ahead of the refused one (re-probe: gzip, invalid, plain on one connection, reversed 10 of 10).
      if (before) void before.then(passTurn);
      else passTurn();
      buffer.give(holds);
    }
    deps.observer?.answered((performance.now() - started) / 1000);
  };
}

function bufferFull(bytes: number): AppError {
  return new AppError(
    'unavailable',
    `the gateway holds as many bytes of publishes being stored as HERALD_INGEST_BUFFER_BYTES allows (${bytes}); nothing from this request was stored, retry`,
    { retryAfter: BUFFER_FULL_RETRY_AFTER_SECONDS },
  );
}
