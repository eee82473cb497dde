import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import type express from 'express';
import type { Logger } from 'pino';
import { AppError, StartupError } from '../errors';
import type { Authorizer } from './auth';
import { rawBadRequest, rawProblem, rawProblemResponse, sendProblem } from './problem';
import { awaitInvitation, isUninvited } from './read-body';
import { hasBody, keyNames, normalizeRequestTarget } from './routing';

const SHUTDOWN_GRACE_MS = 10_000;
/**
 * A body left unread when its request was answered (a 401, a 413, any refusal) is read on and
 * discarded only this far: far enough that a client sending a body of the usual sizes finishes and
 * reads its answer, bounded so that one without a key cannot have the gateway take in gigabytes
 * (Node reads it to its end, for keep-alive). Past it the connection is closed.
 */
const UNREAD_BODY_BYTES = 64 * 1024 * 1024;
const UNREAD_BODY_MS = 10_000;
/**
 * Closed with a FIN after the answer, then what the client still sends is discarded a little longer
 * before the socket is destroyed: destroyed with the client's bytes unread, the kernel answers a
 * reset, and a client still sending loses the answer it was sent (a re-probe's `fetch` saw
 * ECONNRESET, not its 401).
 */
const LINGER_BYTES = 16 * 1024 * 1024;
const LINGER_MS = 2_000;

/** A body still coming after its request was answered: until when, and how many more bytes, it may be read. */
const unreadBodies = new WeakMap<Duplex, { until: number; left: () => number }>();

/**
 * Bounds what is read of a body after its request was answered (see `UNREAD_BODY_BYTES`). Past it the connection
 * closes with `linger`'s lingering close: with a bare `end` the parser read on, and a request pipelined after the
 * body was served with no answer possible (a publish stored behind a 401 and never answered).
 */
function boundUnreadBody(req: http.IncomingMessage, linger: (socket: Duplex) => void): void {
  if (req.complete || req.destroyed) return;
  let left = UNREAD_BODY_BYTES;
  // A connection that closes after the answer (`Connection: close`, HTTP/1.0) lingers this long for it (see `linger`).
  unreadBodies.set(req.socket, { until: performance.now() + UNREAD_BODY_MS, left: () => left });
  const done = () => {
    clearTimeout(timer);
    unreadBodies.delete(req.socket);
  };
  const close = () => {
    done(); // the linger's own bounds now (LINGER_BYTES, LINGER_MS), not what is left of this allowance
    linger(req.socket);
  };
  const timer = setTimeout(close, UNREAD_BODY_MS).unref();
  req.on('data', (chunk: Buffer) => {
    left -= chunk.length;
    if (left < 0) close();
  });
  req.once('end', done);
  req.once('close', done);
  req.resume();
}

/**
 * Whether a request target names the live tail (any form: `/events/stream`, with a query or `#fragment`,
 * absolute), as the routes read it: its path only (`/healthz?x=/events/stream` is not the tail: re-probe).
 */
function isTail(url: string | undefined): boolean {
  let target: string;
  try {
    target = normalizeRequestTarget('GET', url);
  } catch {
    return false; // a 400, not the tail
  }
  return pathOf(target) === '/events/stream';
}

function pathOf(url: string | undefined): string {
  const raw = url ?? '/';
  const q = raw.indexOf('?');
  return q === -1 ? raw : raw.slice(0, q);
}

/** The access log: one `debug` line per answered request, with the API key's name (never the secret). */
function logAnswered(log: Logger) {
  return (req: http.IncomingMessage, res: http.ServerResponse) => {
    const started = performance.now();
    res.once('finish', () => {
      const ms = Math.round((performance.now() - started) * 10) / 10;
      // Delivery ids and handshake tokens are credentials: the access log never carries them.
      const path = pathOf(req.url).replace(/^\/(deliveries|validations)\/[^/]+/, '/$1/***');
      log.debug({ method: req.method, path, status: res.statusCode, ms, key: keyNames.get(res) }, 'http request');
    });
  };
}

/** What answers requests: the engine's gateway, or while it starts, the answers of `starting-http.ts`. */
export interface HttpHandlers {
  authorize: Authorizer;
  /** The `POST /events` handler, served before express (the ingest hot path). */
  ingest: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>;
  app: express.Express;
  /**
   * A publish refused before the ingest handler (no key, wrong scope), by problem code, and how long it
   * took to answer (metrics: it is a rejected and an answered `POST /events` as any other).
   */
  ingestRejected: (code: string, seconds: number) => void;
}

export interface HttpServerDeps {
  log: Logger;
  handlers: HttpHandlers;
  /** Most milliseconds for a request line and headers to come in (node's `headersTimeout`; tests shorten it). */
  headersTimeoutMs?: number;
}

/** Node's default `headersTimeout`, kept: what the README promises. */
const HEADERS_TIMEOUT_MS = 60_000;

function rawHeadersTimeout(ms: number): string {
  return rawProblem(new AppError('request_timeout', `the request line and headers did not all arrive within ${ms / 1000} s`));
}

/** How each long-lived answer (a live tail) ends itself when the server closes (see {@link endAtShutdown}). */
const shutdownEnds = new WeakMap<http.ServerResponse, () => void>();
/** The server each answer belongs to, as far as whether it is closing. */
const serverOf = new WeakMap<http.ServerResponse, { closing: boolean }>();

/**
 * Has `end` called as soon as the server begins to close (at once if it has begun): a live tail then
 * ends its stream cleanly, where it held every graceful shutdown for min(10 s, half of
 * HERALD_SHUTDOWN_TIMEOUT_MS) and was cut off without its last chunk, while delivery went on
 * starting attempts (a probe); a tail still starting when the close began registers after it (a re-probe).
 * A FIN from its client ends it too (see `endOnFin`).
 */
export function endAtShutdown(res: http.ServerResponse, end: () => void): void {
  if (serverOf.get(res)?.closing) return end();
  shutdownEnds.set(res, end);
  endOnFin(res, end);
}

/** Each connection's unanswered responses (see `track`). */
const unansweredOn = new WeakMap<Duplex, Set<http.ServerResponse>>();

/** How long a tail ended by its client's FIN may take to send what it holds before its connection is cut. */
const FIN_GRACE_MS = 2_000;
/** The live tails open on a connection that has had one, and whether its cut is set (one timer, however many tails end). */
interface ConnectionTails {
  ends: Set<() => void>;
  cutting: boolean;
  /** Nothing more will be read from the client (its FIN, or bad bytes): a tail ends as soon as it registers. */
  over: boolean;
}
const tailsOn = new WeakMap<Duplex, ConnectionTails>();

function tailsOf(socket: Duplex): ConnectionTails {
  let tails = tailsOn.get(socket);
  if (!tails) {
    tailsOn.set(socket, (tails = { ends: new Set(), cutting: false, over: false }));
    if (!socket.readableEnded) socket.once('end', () => endTails(socket));
  }
  return tails;
}

/**
 * A tail's client half-closes (a FIN, which a reader that goes away sends): the tail ends, after the
 * answers before it on the connection (publishes awaiting their fsync: re-probe, cut with them it
 * left them unanswered), and the connection is cut FIN_GRACE_MS later if it has not closed by then (a
 * reader that reads nothing held it for good: re-probe, 32 past HERALD_MAX_STREAMS=8). One listener per
 * connection (only its first tail is served: see `Arrivals`).
 */
function endOnFin(res: http.ServerResponse, end: () => void): void {
  const socket = res.req.socket;
  const tails = tailsOf(socket);
  const { ends } = tails;
  ends.add(end);
  res.once('close', () => ends.delete(end));
  if (socket.readableEnded || tails.over) endTails(socket);
}

/** Ends the connection's live tails, now and as they register: the client will send nothing more to read. */
function endTails(socket: Duplex): void {
  const tails = tailsOf(socket);
  tails.over = true;
  if (tails.ends.size === 0) return;
  for (const end of [...tails.ends]) end();
  if (tails.cutting) return;
  tails.cutting = true;
  // Not while an answer before the tail is still being worked out (a publish awaiting its fsync): cut with
  // it, it was stored and never answered (re-probe). Only answers the client does not read are cut.
  let cut: NodeJS.Timeout;
  const cutUnlessWorking = () => {
    if ([...(unansweredOn.get(socket) ?? [])].some((res) => !res.headersSent)) cut = setTimeout(cutUnlessWorking, FIN_GRACE_MS).unref();
    else socket.destroy();
  };
  cut = setTimeout(cutUnlessWorking, FIN_GRACE_MS).unref();
  socket.once('close', () => clearTimeout(cut));
}

export interface HttpServer {
  /** From now on requests are answered by `handlers` (those in flight finish with the old ones). */
  serve(handlers: HttpHandlers): void;
  /** @throws StartupError when the address cannot be listened on (HERALD_HOST, HERALD_PORT) */
  listen(port: number, host: string): Promise<{ url: string; port: number }>;
  /**
   * Stops accepting, lets requests in flight finish (keep-alive clients are told `Connection: close`)
   * and destroys connections still open after min(10 s, half of `shutdownTimeoutMs`).
   */
  close(shutdownTimeoutMs: number): Promise<void>;
}

/** Whether requests after a point of a connection are served (`open`: undefined while not known yet). */
interface Gate {
  open: boolean | undefined;
  opened: Promise<boolean>;
}
/** The gate of each connection's latest request under `Expect: 100-continue` (none: every request is served). */
const gates = new WeakMap<Duplex, Gate>();
/** Requests a connection may pipeline that wait behind a gate or are dropped (see `Arrivals`); past them it is cut. */
const HELD_MAX = 32;

/**
 * Under `Expect: 100-continue` node reads the bytes after the headers as the body and any request after
 * them as the next one, at once; answered without asking for the body (a refusal), the connection closes
 * (see `read-body.ts`), and what the client pipelined behind must not be done: it is never answered
 * (ingest probe: a publish behind a 415 was stored, its producer told nothing). So the requests behind
 * wait, and are served once the body is asked for (and the requests before are), or dropped.
 */
function gateBehindExpect(socket: Duplex, res: http.ServerResponse, before: Gate | undefined): Gate {
  let settle!: (open: boolean) => void;
  const mine = new Promise<boolean>((resolve) => (settle = resolve));
  awaitInvitation(res, () => settle(true));
  res.once('close', () => settle(!isUninvited(res)));
  const gate: Gate = { open: undefined, opened: before ? before.opened.then((open) => open && mine) : mine };
  void gate.opened.then((open) => {
    gate.open = open;
    if (open && gates.get(socket) === gate) gates.delete(socket);
  });
  return gate;
}

/**
 * Each connection's requests in arrival order, and the first whose answer closes the connection: nothing
 * after it is served, since no answer could be sent. A live tail is such a request (`Connection: close`:
 * its answer does not end while it streams), and so is one refused with `Connection: close` when it is
 * handled (a second `Host`, a transfer coding not served). Served, a publish pipelined behind either was
 * stored and never answered, behind a tail also when a FIN ended it or when it was HTTP/1.0 (probes).
 */
interface Arrivals {
  count: number;
  closingAt: number;
  /** Requests now waiting behind a gate, and all those dropped (see `countHeld`). */
  held: number;
}
const arrivalsOn = new WeakMap<Duplex, Arrivals>();

function arrivalsOf(socket: Duplex): Arrivals {
  let arrivals = arrivalsOn.get(socket);
  if (!arrivals) arrivalsOn.set(socket, (arrivals = { count: 0, closingAt: Infinity, held: 0 }));
  return arrivals;
}

/** The request numbered `index` closes its connection: nothing after it is served. */
function closesAt(socket: Duplex, index: number): void {
  const arrivals = arrivalsOf(socket);
  arrivals.closingAt = Math.min(arrivals.closingAt, index);
}

const isAfterClosing = (socket: Duplex, index: number): boolean => index > (arrivalsOn.get(socket)?.closingAt ?? Infinity);

/**
 * Requests a connection may have waiting for their turn (see `Turns`); past them it is cut. Node parses a
 * whole read (64 KiB) into requests at once, and requests that wait write no answers, so node's own
 * backpressure (it stops reading a connection whose answers back up) never stops it reading them.
 */
const WAITING_MAX = 256;

/**
 * Each connection's requests take turns, as RFC 9112 §9.3.2 has it (pipelined requests run in parallel
 * only when all are safe): a request is started once every request before it on the connection has been
 * answered (its response finished: written to the kernel), except that a publish behind publishes starts
 * at once (the ingest handler appends them in the order sent: `appendTurns`), so a producer pipelining
 * publishes still shares group commits. Served as they arrived, a `GET` behind the publish of the event it
 * read answered 404, an ack behind a reject of one delivery was answered 200 (the reject, reading its
 * body, finished last), and a client pipelining page reads it never read had every page built at once
 * (HTTP probe: 320 of 9.5 MB, 5 GB). Now at most one request other than a publish is worked on per
 * connection, and one whose answer the client does not read holds the next.
 */
interface Turns {
  /** Requests started and not answered yet. */
  working: number;
  /** One of them is not a publish (then it is the only one). */
  exclusive: boolean;
  /** Requests waiting for their turn, in the order they arrived. */
  waiting: { req: http.IncomingMessage; res: http.ServerResponse; index: number; publish: boolean }[];
}
const turnsOn = new WeakMap<Duplex, Turns>();
/** Each started request's place among its connection's arrivals (see `Arrivals`). */
const indexOf = new WeakMap<http.ServerResponse, number>();

function turnsOf(socket: Duplex): Turns {
  let turns = turnsOn.get(socket);
  if (!turns) {
    const made: Turns = (turns = { working: 0, exclusive: false, waiting: [] });
    turnsOn.set(socket, made);
    socket.once('close', () => (made.waiting.length = 0)); // never answered: nothing of them was done
  }
  return turns;
}

/** Whether a request is a publish (`POST /events`, any target form), as `handle` routes it. */
function isPublish(req: http.IncomingMessage): boolean {
  if (req.method !== 'POST') return false;
  try {
    return pathOf(normalizeRequestTarget('POST', req.url)) === '/events';
  } catch {
    return false; // a 400
  }
}

/** The node:http server every engine's gateway listens with: the ingest fast path, then express. */
export function createHttpServer(deps: HttpServerDeps): HttpServer {
  const { log } = deps;
  let { authorize, ingest, app, ingestRejected } = deps.handlers;
  // Responses not yet answered; at shutdown they get `Connection: close` so keep-alive clients let go.
  const unanswered = new Set<http.ServerResponse>();

  /**
   * Keeps `res` among the unanswered until it closes, or its connection does: node emits no 'close' for a
   * response still queued behind an unfinished one when the connection dies (re-probe: every request
   * pipelined behind a tail was kept for good, and a gateway with a 64 MB heap died of it).
   */
  function track(res: http.ServerResponse): void {
    const socket = res.req.socket;
    let mine = unansweredOn.get(socket);
    if (!mine) {
      const set = (mine = new Set());
      unansweredOn.set(socket, set);
      socket.once('close', () => {
        for (const r of set) unanswered.delete(r);
        set.clear();
      });
    }
    const own = mine;
    unanswered.add(res);
    own.add(res);
    res.once('close', () => {
      unanswered.delete(res);
      own.delete(res);
    });
  }
  const state = { closing: false };
  const logWhenAnswered = log.isLevelEnabled('debug') ? logAnswered(log) : undefined;
  // Host is checked below, so its 400 is a problem like every other (node's own has no body).
  const headersTimeoutMs = deps.headersTimeoutMs ?? HEADERS_TIMEOUT_MS;
  const server = http.createServer(
    {
      requireHostHeader: false,
      headersTimeout: headersTimeoutMs,
      // How often node looks for connections past it (its own default is 30 s, for its 60 s timeout).
      connectionsCheckingInterval: Math.min(30_000, Math.max(50, Math.floor(headersTimeoutMs / 2))),
    },
    (req, res) => arrive(req, res, false),
  );
  /** Open connections, for the close (node's own idle close cuts answers not yet flushed: see `closeIdle`). */
  const sockets = new Set<Duplex>();
  /** Connections closing with a lingering close (see `linger`). */
  const lingering = new WeakSet<Duplex>();
  server.on('connection', (socket: net.Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    // Node calls it once a connection's last answer (`Connection: close`) is written: it destroyed the socket then.
    socket.destroySoon = () => linger(socket);
  });

  /**
   * Closes a connection whose last answer is written (`Connection: close`, shutdown, a cut) with a lingering
   * close: a FIN after the answers, then what the client still sends is read and discarded (no longer parsed)
   * until its FIN, LINGER_BYTES or LINGER_MS (or the close's deadline). Destroyed with the client's bytes
   * unread, or with more arriving, the kernel answers a reset and drops the answers it still holds (HTTP
   * re-probe: pipelined publishes not read for a second across a SIGTERM, 3,467 stored and never answered).
   */
  function linger(socket: Duplex): void {
    if (socket.destroyed || lingering.has(socket)) return;
    lingering.add(socket);
    socket.end(); // once the client's FIN is read too, the socket destroys itself
    // A body still coming after its answer gets what is left of its own allowance, if more (probe: a 1 MiB publish
    // refused with a 401 and `Connection: close`, sent at 256 KB/s, lost its 401 to a reset after the 2 s).
    const body = unreadBodies.get(socket);
    const lingerMs = Math.max(LINGER_MS, body ? body.until - performance.now() : 0);
    let left = Math.max(LINGER_BYTES, body?.left() ?? 0);
    socket.removeAllListeners('data'); // the HTTP parser's
    socket.on('data', (chunk: Buffer) => {
      if ((left -= chunk.length) < 0) socket.destroy();
    });
    socket.resume();
    const timer = setTimeout(() => socket.destroy(), lingerMs).unref();
    socket.once('close', () => clearTimeout(timer));
  }
  /**
   * Writes a whole raw answer on a socket node hands over without a response object, then closes with `linger`.
   * A bare `end` left node's parser reading: the rest of a request sent after a 408 was served (a publish stored
   * behind its 408), and a client that never closed held the connection in FIN-WAIT-2 (re-probes: 500 slow-header
   * clients held 500 descriptors; a refused CONNECT was still held at 70 s).
   */
  function closeWith(socket: Duplex, answer: string): void {
    socket.write(answer);
    linger(socket);
  }
  // A client that half-closes after its requests (a FIN: it sends no more, it still reads) gets their answers:
  // node's default aborted them, and a publish was stored without its 202 (ingest probe). Answered, the
  // connection then closes.
  (server as http.Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;

  /** Serves a request now, once the request under `Expect` it is pipelined behind is settled, or never (see `Arrivals`). */
  function arrive(req: http.IncomingMessage, res: http.ServerResponse, expectsContinue: boolean): void {
    const socket = req.socket;
    const index = ++arrivalsOf(socket).count;
    if (isAfterClosing(socket, index)) return drop(req);
    // Read after the close ended its connection (`closeIdle`: its answers still flushing): never started, since no answer could follow.
    if (state.closing && socket.writableEnded) return drop(req);
    // Read after the close began: its connection's last (see `close`).
    if (state.closing) {
      closesAt(socket, index);
      res.shouldKeepAlive = false;
    }
    const before = gates.get(socket);
    if (expectsContinue) gates.set(socket, gateBehindExpect(socket, res, before));
    // Under `Expect` too, and with a body, which nothing else reads (re-probe: either kept reads stopped, a FIN unseen).
    if (req.method === 'GET' && isTail(req.url)) {
      closesAt(socket, index);
      res.shouldKeepAlive = false;
      if (hasBody(req)) boundUnreadBody(req, linger);
    }
    if (before === undefined || before.open === true) return takeTurn(req, res, index);
    if (before.open === false) return drop(req);
    hold(req, res, before, index);
  }

  /** Starts a request when its turn comes (see `Turns`): now, or once the requests before it are answered. */
  function takeTurn(req: http.IncomingMessage, res: http.ServerResponse, index: number): void {
    const socket = req.socket;
    const turns = turnsOf(socket);
    const publish = isPublish(req);
    if (turns.waiting.length === 0 && mayStart(turns, publish)) return start(turns, req, res, index, publish);
    if (turns.waiting.length >= WAITING_MAX) return cutWaiting(socket, turns, req);
    turns.waiting.push({ req, res, index, publish });
  }

  const mayStart = (turns: Turns, publish: boolean): boolean => turns.working === 0 || (publish && !turns.exclusive);

  function start(turns: Turns, req: http.IncomingMessage, res: http.ServerResponse, index: number, publish: boolean): void {
    indexOf.set(res, index);
    turns.working++;
    if (!publish) turns.exclusive = true;
    let answered = false;
    const done = () => {
      if (answered) return;
      answered = true;
      turns.working--;
      if (!publish) turns.exclusive = false;
      startWaiting(req.socket, turns);
    };
    // 'finish' once the answer is written to the kernel (a client that does not read holds it); 'close' if cut first.
    res.once('finish', done);
    res.once('close', done);
    handle(req, res, index);
  }

  /** Starts the waiting requests whose turn has come; none once the connection is closing (nothing could be answered). */
  function startWaiting(socket: Duplex, turns: Turns): void {
    while (turns.waiting.length > 0 && mayStart(turns, turns.waiting[0]!.publish)) {
      const { req, res, index, publish } = turns.waiting.shift()!;
      // An answer before it closed the connection (`Connection: close`, shutdown): node ends it on that answer's finish.
      if (!socket.writable || isAfterClosing(socket, index)) {
        turns.waiting.length = 0;
        req.resume();
        return;
      }
      start(turns, req, res, index, publish);
    }
  }

  /**
   * Counts a request that waits for a gate, or is dropped behind a closed one; past HELD_MAX the connection
   * is cut: such requests write no answers, so node's own backpressure never stops reading (re-probe:
   * 300,000 pipelined behind a tail under Expect were all read, 900 MB, and their cleanup blocked the
   * loop for 35 s). Whether it is cut.
   */
  function countHeld(socket: Duplex): boolean {
    const arrivals = arrivalsOf(socket);
    if (++arrivals.held === HELD_MAX + 1) cutHeld(socket);
    return arrivals.held > HELD_MAX;
  }

  /**
   * Cuts a connection past HELD_MAX: nothing more is served, and once the answers being worked out before
   * the held requests are out (a publish awaiting its fsync), it closes (see `linger`). Destroyed at once, a publish
   * pipelined before a live tail with 33 requests behind it was stored and never answered (HTTP re-probe:
   * 10 of 10). A live tail among them ends, as on bad bytes.
   */
  function cutHeld(socket: Duplex): void {
    const owed = [...(unansweredOn.get(socket) ?? [])].filter((res) => !res.writableFinished);
    if (!socket.writable) return void socket.destroy();
    if (owed.length === 0) return linger(socket); // answers written but maybe not read yet
    socket.pause();
    owed[owed.length - 1]!.once('close', () => linger(socket));
    endTails(socket);
  }

  /**
   * Cuts a connection past WAITING_MAX: none of the requests waiting, nor this one, nor any read after, is
   * started, and it closes once the answers being worked out are out, as past HELD_MAX. Destroyed at once,
   * publishes pipelined before a read with 300 publishes behind it were stored and never answered
   * (JetStream probe: 20 of 20).
   */
  function cutWaiting(socket: Duplex, turns: Turns, req: http.IncomingMessage): void {
    closesAt(socket, turns.waiting[0]!.index - 1);
    for (const waiting of turns.waiting) waiting.req.resume();
    turns.waiting.length = 0;
    req.resume();
    // Those read after are dropped uncounted: this is the connection's one cut.
    arrivalsOf(socket).held = HELD_MAX + 1;
    cutHeld(socket);
  }

  /** A request not served: its body is read and discarded, so that what follows (a FIN ending a tail) is read. */
  function drop(req: http.IncomingMessage): void {
    if (!countHeld(req.socket)) req.resume();
  }

  /** Waits with a request until `gate` settles (the connection is read on meanwhile). */
  function hold(req: http.IncomingMessage, res: http.ServerResponse, gate: Gate, index: number): void {
    const socket = req.socket;
    if (countHeld(socket)) return;
    void gate.opened.then((open) => {
      arrivalsOf(socket).held--;
      if (open && !socket.destroyed && !isAfterClosing(socket, index)) takeTurn(req, res, index);
      else req.resume();
    });
  }

  function handle(req: http.IncomingMessage, res: http.ServerResponse, index: number): void {
    const started = performance.now();
    track(res);
    serverOf.set(res, state);
    // Before 'finish': there node dumps an unread body, whose bytes then never show as 'data'. A request
    // without a body (most reads) has nothing to bound: no listener on its path.
    if (hasBody(req)) res.once('prefinish', () => boundUnreadBody(req, linger));
    logWhenAnswered?.(req, res);
    try {
      checkProtocol(req);
      checkHost(req);
      // Routes see the origin form only: no `#fragment`, no `http://host` prefix (else a 400).
      req.url = normalizeRequestTarget(req.method, req.url);
      // The ingest hot path skips express (whose `POST /events` route runs the same handler): exact path, case-sensitive.
      if (req.method === 'POST' && pathOf(req.url) === '/events') {
        const key = authorize('publish', req.headers.authorization, req.rawHeaders);
        if (key) keyNames.set(res, key.name);
        void ingest(req, res);
        return;
      }
    } catch (err) {
      req.resume();
      if (err instanceof AppError && err.headers?.connection === 'close') closesAt(req.socket, index);
      const code = sendProblem(res, err, log);
      // A publish refused before the ingest handler (no key, wrong scope) is still a rejected POST /events.
      if (req.method === 'POST' && pathOf(req.url) === '/events') ingestRejected(code, (performance.now() - started) / 1000);
      return;
    }
    if (req.url === '*') {
      res.writeHead(204, { allow: 'GET, HEAD, POST, PATCH, DELETE, OPTIONS' }).end(); // OPTIONS *
      return;
    }
    app(req, res);
  }
  // Requests node's parser refuses (HPE_* codes) never reach the handler above: they get a problem+json 400 too
  // (node's own answer has no body). Anything else (a reset, a request timeout) just closes the connection.
  server.on('clientError', (err: Error & { code?: unknown }, socket) => {
    // Bad bytes after complete requests (bodies read whole) whose answers are still to come (publishes
    // awaiting their fsync, pipelined): those answers are the client's, each sent in full, oldest first,
    // then the connection closes. A 400 in their place told a producer that stored events were refused
    // (probe: its corrected resend was then a "duplicate"), and pipelined ones behind it got nothing.
    // Those waiting for their turn are owed too: the last of them is the connection's last answer.
    const owed = [...(unansweredOn.get(socket) ?? [])].filter((res) => res.req.complete);
    owed.push(...(turnsOn.get(socket)?.waiting ?? []).map((w) => w.res));
    if (owed.length > 0 && socket.writable) {
      socket.pause(); // nothing after the bad bytes is read
      const last = owed[owed.length - 1]!;
      last.shouldKeepAlive = false; // `Connection: close`, where its headers are not written yet
      last.once('close', () => linger(socket)); // a bare end held the connection until the client closed it
      // A live tail among them ends, as on a FIN (which is not read now): it kept the connection open (re-probe).
      endTails(socket);
      return;
    }
    // An error after the request was answered (bad bytes after a complete request) gets no second answer.
    const current = (socket as Duplex & { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (typeof err.code === 'string' && err.code.startsWith('HPE_') && socket.writable && !current?.headersSent)
      closeWith(socket, rawProblemResponse(err));
    // A request line and headers not all in within `headersTimeout`, before any answer of the connection is under
    // way: a 408 says why it closes (was: closed without a word, a client saw its connection reset).
    else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT' && socket.writable && !current) closeWith(socket, rawHeadersTimeout(headersTimeoutMs));
    else socket.destroy();
  });
  // An `Expect` other than 100-continue: RFC 9110 §10.1.1 lets a server ignore it, and the request is
  // served as without it (node's default is a bare 417 that no operation documents).
  server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) => server.emit('request', req, res));
  // Expect: 100-continue: the body is asked for only by the handler that reads it, once its checks pass
  // (key, declared length, room in the ingest buffer): a refusal is the answer, with no body sent for
  // nothing (RFC 9110 §10.1.1). Node would send the 100 at once.
  server.on('checkContinue', (req: http.IncomingMessage, res: http.ServerResponse) => arrive(req, res, true));
  // CONNECT (authority form) is not served: node hands it over as a raw socket, and left alone it closes it unanswered.
  server.on('connect', (req: http.IncomingMessage, socket: Duplex) => {
    if (socket.writable) closeWith(socket, rawBadRequest('CONNECT is not served', `CONNECT ${req.url ?? ''}: Herald is not a proxy`));
    else socket.destroy();
  });
  server.keepAliveTimeout = 65_000;
  // Read every header (the 16 KiB header size limit still bounds them): node drops those past 2,000
  // by default, and a repeated `ce-id` there would go unseen.
  server.maxHeadersCount = 0;

  async function listen(port: number, host: string): Promise<{ url: string; port: number }> {
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      if (
        e.code === 'EADDRINUSE' ||
        e.code === 'EACCES' ||
        e.code === 'EADDRNOTAVAIL' ||
        e.code === 'ENOTFOUND' ||
        e.code === 'EAFNOSUPPORT'
      ) {
        throw new StartupError(`cannot listen on ${host} port ${port}: ${e.code} (HERALD_HOST, HERALD_PORT)`);
      }
      throw err;
    }
    const bound = (server.address() as AddressInfo).port;
    const urlHost = host.includes(':') ? `[${host}]` : host;
    return { url: `http://${urlHost}:${bound}`, port: bound };
  }

  /**
   * Closes the connections with nothing owed: none being worked on and no request waiting. One whose answers
   * are all ended but not all written out yet (a client slow to read: node writes a pipelined answer only once
   * the one before it is out) starts nothing more and ends once its last answer is out; one with nothing left
   * ends at once (both with a lingering close: see `linger`). Node's own `closeIdleConnections` (which its `server.close` calls) took an ended answer for
   * done and destroyed its connection (HTTP re-probe: pipelined publishes not read for a second, SIGTERM,
   * 2,020 stored and never answered; a 1.1 MB answer cut mid-body).
   */
  function closeIdle(): void {
    for (const socket of sockets) {
      const open = [...(unansweredOn.get(socket) ?? [])];
      const waiting = turnsOn.get(socket)?.waiting.length ?? 0;
      if (waiting > 0 || open.some((res) => !res.writableEnded)) continue; // its last answer says `Connection: close`
      const last = open.filter((res) => !res.writableFinished).at(-1);
      if (!last) {
        linger(socket); // its answers may still be on their way: destroyed, a reset drops them
        continue;
      }
      closesAt(socket, arrivalsOf(socket).count); // what is read after is not started
      last.once('finish', () => linger(socket));
    }
  }

  async function close(shutdownTimeoutMs: number): Promise<void> {
    state.closing = true;
    // The listener only: net's close, not http's, which also destroys connections it takes for idle (see `closeIdle`).
    const closed = new Promise<void>((resolve) => net.Server.prototype.close.call(server, () => resolve()));
    // Otherwise a request in flight now leaves its connection open until the grace period ends. Only each
    // connection's last request started says so (they start in arrival order): node ends the connection
    // once that answer is out, and publishes pipelined behind publishes are worked on together, so one
    // before it saying `Connection: close` left those behind it stored and never answered (HTTP re-probe:
    // 100 pipelined, SIGTERM, 1 answered, 100 stored). Nothing after it is started (those waiting their turn).
    const lastOn = new Map<Duplex, http.ServerResponse>();
    for (const res of unanswered) lastOn.set(res.req.socket, res);
    for (const [socket, res] of lastOn) {
      if (res.headersSent) continue;
      res.setHeader('connection', 'close');
      closesAt(socket, indexOf.get(res) ?? Infinity);
    }
    for (const res of [...unanswered]) shutdownEnds.get(res)?.();
    closeIdle();
    const force = setTimeout(() => server.closeAllConnections(), Math.min(SHUTDOWN_GRACE_MS, shutdownTimeoutMs / 2));
    force.unref();
    await closed;
    clearTimeout(force);
  }

  function serve(handlers: HttpHandlers): void {
    ({ authorize, ingest, app, ingestRejected } = handlers);
  }

  return { serve, listen, close };
}

/**
 * HTTP/1.x only (node's parser also reads an `HTTP/2.0` request line), and no transfer coding but
 * `chunked`: node frames a body whose codings end in `chunked` and hands it over still gzip'd (or
 * whatever else it names), and a probe's `Transfer-Encoding: gzip, chunked` event was stored as
 * the compressed bytes (RFC 9112 §6.1: a coding not understood is a 501).
 * @throws AppError `http_version_not_supported`, `not_implemented`
 */
function checkProtocol(req: http.IncomingMessage): void {
  if (req.httpVersionMajor !== 1)
    throw new AppError('http_version_not_supported', `HTTP/${req.httpVersion} is not served; send HTTP/1.1`, {
      headers: { connection: 'close' },
    });
  const codings = req.headers['transfer-encoding'];
  if (codings === undefined) return;
  // HTTP/1.0 has no chunked framing (RFC 9112 §6.1: faulty framing), and an empty list names no coding.
  if (req.httpVersionMinor === 0 || codings.trim() === '')
    throw new AppError('invalid_request', 'Transfer-Encoding is not valid here (empty, or in an HTTP/1.0 request)', {
      details: [{ attribute: 'transfer-encoding', message: 'send Content-Length, or HTTP/1.1 with Transfer-Encoding: chunked' }],
      headers: { connection: 'close' },
    });
  const named = codings
    .split(',')
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== '');
  if (named.length !== 1 || named[0] !== 'chunked')
    throw new AppError(
      'not_implemented',
      `Transfer-Encoding "${codings}" is not served: only chunked (compress a body with Content-Encoding)`,
      {
        details: [{ attribute: 'transfer-encoding', message: 'only chunked is understood' }],
        headers: { connection: 'close' },
      },
    );
}

/**
 * An HTTP/1.1 request names exactly one Host (RFC 9112 §3.2: a 400 otherwise). HTTP/1.0 may omit it.
 * @throws AppError invalid_request
 */
function checkHost(req: http.IncomingMessage): void {
  let hosts = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') hosts++; // the length first: this runs per request
  }
  if (hosts === 1 || (hosts === 0 && req.httpVersion === '1.0')) return;
  const message = hosts === 0 ? 'an HTTP/1.1 request needs a Host header' : `the request has ${hosts} Host headers; it needs exactly one`;
  throw new AppError('invalid_request', message, { details: [{ attribute: 'host', message }], headers: { connection: 'close' } });
}
