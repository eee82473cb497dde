import fs from 'node:fs';
import readline from 'node:readline';
import { SingleBar } from 'cli-progress';
import { HeraldApiError, unwrap, type components } from '../client';
import type { Context } from './context';
import { problemLines, refusalMessage, reportError, ReportedError, UsageError } from './errors';
import { printable } from './output';

type CloudEvent = components['schemas']['CloudEvent'];
type AppendResult = components['schemas']['AppendResult'];

/** At most this many events per request (the issue's bound; the gateway takes any count within its body limit). */
export const MAX_BATCH_EVENTS = 1000;

/**
 * The results of an answer that must acknowledge each of the `sent` events, one per event: anything
 * less is not an acknowledgement (a TypeError: the answer is not what this herald expects, exit 1).
 */
export function acknowledged(answer: { results?: unknown } | undefined, sent: number): AppendResult[] {
  const results = answer?.results;
  if (!Array.isArray(results) || results.length !== sent)
    throw new TypeError(`it acknowledges ${Array.isArray(results) ? results.length : 'none'} of the ${sent} events sent`);
  for (const r of results as Partial<AppendResult>[]) {
    const whole =
      typeof r === 'object' &&
      r !== null &&
      typeof r.id === 'string' &&
      typeof r.source === 'string' &&
      typeof r.duplicate === 'boolean' &&
      Number.isSafeInteger(r.partition) &&
      Number.isSafeInteger(r.offset);
    if (!whole) throw new TypeError('an acknowledgement without its id, source, partition, offset or duplicate');
  }
  return results as AppendResult[];
}

/** One non-blank line of the file. */
interface Line {
  number: number;
  text: string;
}

/** `--batch -`: the events come from standard input. */
export const STDIN = '-';

/** The input's non-blank lines, streamed (an input of any size is read in bounded memory). */
async function* linesOf(input: NodeJS.ReadableStream & { destroy?: () => void }): AsyncGenerator<Line> {
  const reader = readline.createInterface({ input, crlfDelay: Infinity });
  let number = 0;
  try {
    for await (const line of reader) {
      number++;
      // A byte order mark (editors on Windows write one) is not part of the first event.
      const text = number === 1 && line.startsWith('\ufeff') ? line.slice(1) : line;
      if (text.trim() !== '') yield { number, text };
    }
  } finally {
    reader.close();
    input.destroy?.();
  }
}

/** Where the events come from, readable as many times as it is iterated, and its name in messages. */
interface BatchInput {
  name: string;
  lines(): AsyncIterable<Line> | Iterable<Line>;
}

/**
 * Opens `--batch FILE`. A regular file is read twice (checked, then sent) in bounded memory. Anything
 * else can be read only once: standard input (`-`), a pipe (`/dev/stdin`, `<(…)`), a FIFO, a device.
 * Such an input is read to its end once and its lines kept in memory, so it is checked whole before
 * anything is sent, as a file is (reading it again gave nothing: "published 0 events", exit 0).
 */
async function openInput(file: string): Promise<BatchInput> {
  if (file === STDIN) return once('standard input', process.stdin);
  // Opening /dev/stdin again fails when it is a socket (ENXIO: a parent process's stdio): it is this process's stdin.
  if (file === '/dev/stdin') return once(file, process.stdin);
  let stat: fs.Stats;
  try {
    await fs.promises.access(file, fs.constants.R_OK);
    stat = await fs.promises.stat(file);
  } catch (err) {
    throw new UsageError(`cannot read --batch ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (stat.isDirectory()) throw new UsageError(`cannot read --batch ${file}: it is a directory`);
  if (stat.isFile()) return { name: file, lines: () => linesOf(fs.createReadStream(file)) };
  return once(file, fs.createReadStream(file));
}

async function once(name: string, input: NodeJS.ReadableStream): Promise<BatchInput> {
  const lines: Line[] = [];
  try {
    for await (const line of linesOf(input)) lines.push(line);
  } catch (err) {
    throw new UsageError(`cannot read --batch ${name}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  return { name, lines: () => lines };
}

/**
 * First pass: every non-blank line must be a JSON object with an `id` (a random one would defeat
 * re-running), or nothing is sent (a usage error naming the line). Returns how many events there are.
 */
async function checkInput(input: BatchInput): Promise<number> {
  let count = 0;
  for await (const line of input.lines()) {
    const wrong = eventOf(line);
    if (typeof wrong === 'string') throw new UsageError(`${input.name}, line ${line.number}: ${wrong}; nothing was sent`);
    count++;
  }
  return count;
}

/** The line's event, or what is wrong with it. */
function eventOf(line: Line): CloudEvent | string {
  let value: unknown;
  try {
    value = JSON.parse(line.text);
  } catch (err) {
    return `not JSON (${(err as Error).message})`;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object (one CloudEvent per line)';
  if (typeof (value as { id?: unknown }).id !== 'string') return 'the event has no string "id"';
  return value as CloudEvent;
}

/**
 * The batch's events, read again as they are sent: a file changed since it was checked is not sent on
 * (CLI probe: a line written meanwhile was sent unchecked, and its JSON error blamed on the gateway).
 */
function eventsOf(name: string, batch: Line[], sofar: { stored: number; duplicates: number }): CloudEvent[] {
  return batch.map((line) => {
    const event = eventOf(line);
    if (typeof event !== 'string') return event;
    throw new ReportedError(
      `herald: ${printable(name)} changed while it was sent: line ${line.number} is ${event} now; nothing from line ${batch[0]!.number} on was sent ` +
        `(before it, ${sofar.stored} events were stored and ${sofar.duplicates} were duplicates)`,
    );
  });
}

/** Groups lines into requests of at most `batchSize` events and `maxRequestBytes` bytes (`[`, `,`s and `]` included). */
async function* batchesOf(input: BatchInput, batchSize: number, maxRequestBytes: number): AsyncGenerator<Line[]> {
  let batch: Line[] = [];
  let bytes = 2;
  for await (const line of input.lines()) {
    const size = Buffer.byteLength(line.text) + 1;
    if (batch.length > 0 && (batch.length >= batchSize || bytes + size > maxRequestBytes)) {
      yield batch;
      batch = [];
      bytes = 2;
    }
    batch.push(line);
    bytes += size;
  }
  if (batch.length > 0) yield batch;
}

/**
 * `publish --batch FILE.jsonl` (or `-`, standard input): checks the whole input, then sends it in order as
 * `application/cloudevents-batch+json` requests. Each request is all or nothing at the gateway;
 * on a refusal the requests before it stay stored, the rest is not sent, and re-running the same
 * file after fixing it stores only what is missing (the others come back as duplicates).
 */
export async function publishBatchFile(ctx: Context, file: string, limits: { batchSize: number; maxRequestBytes: number }): Promise<void> {
  const input = await openInput(file);
  const total = await checkInput(input);
  const { out } = ctx;
  const bar =
    !out.json && out.stderrIsTty && total > 0
      ? new SingleBar({
          format: 'publishing [{bar}] {value}/{total} events | {duplicates} duplicates',
          stream: ctx.streams.stderr,
          hideCursor: true,
        })
      : undefined;
  bar?.start(total, 0, { duplicates: 0 });
  const results: AppendResult[] = [];
  let stored = 0;
  let duplicates = 0;
  try {
    for await (const batch of batchesOf(input, limits.batchSize, limits.maxRequestBytes)) {
      const events = eventsOf(input.name, batch, { stored, duplicates });
      let answer;
      try {
        answer = unwrap(
          await ctx.client.POST('/events', {
            body: events,
            // The lines as written, not re-serialised: what the file says is what is sent.
            bodySerializer: () => `[${batch.map((line) => line.text).join(',')}]`,
            headers: { 'content-type': 'application/cloudevents-batch+json' },
          }),
        );
      } catch (err) {
        bar?.stop();
        throw explainRefusal(err, input.name, batch, { stored, duplicates }, ctx.apiKey !== undefined);
      }
      for (const r of acknowledged(answer, batch.length)) {
        if (r.duplicate) duplicates++;
        else stored++;
        if (out.json) results.push(r);
      }
      bar?.update(stored + duplicates, { duplicates });
    }
  } finally {
    bar?.stop();
  }
  // Cut short at a line's end meanwhile, the file gave fewer lines than were checked (re-probe: exit 0).
  if (stored + duplicates !== total) {
    throw new ReportedError(
      `herald: ${printable(input.name)} changed while it was sent: it had ${total} events when checked and ${stored + duplicates} when sent ` +
        `(${stored} stored, ${duplicates} duplicates)`,
    );
  }
  if (out.json) return out.document({ results, stored, duplicates });
  out.line(
    `published ${stored + duplicates} event${stored + duplicates === 1 ? '' : 's'} from ${input.name}: ` +
      `${stored} stored, ${duplicates} duplicate${duplicates === 1 ? '' : 's'} (already stored)`,
  );
}

/** A refused request explained in the file's terms (line numbers), with what was stored before it. */
function explainRefusal(
  err: unknown,
  file: string,
  batch: Line[],
  sofar: { stored: number; duplicates: number },
  apiKeyGiven: boolean,
): unknown {
  const done = `before it, ${sofar.stored} events were stored and ${sofar.duplicates} were duplicates`;
  const again = 'fix the file and run the same command again: events already stored are skipped as duplicates';
  const [first, last] = [batch[0]!.number, batch[batch.length - 1]!.number];
  // A request of one line (`--batch-size 1`, an event too large to share one, the file's last) names it alone: was `lines 3–3`.
  const range = first === last ? `line ${first}` : `lines ${first}–${last}`;
  if (err instanceof HeraldApiError) {
    const lines = problemLines(err, (index) => `line ${batch[index]?.number ?? `?${index}`}`);
    return new ReportedError(
      [
        `herald: ${file}, ${range} (one request, nothing of it stored): ${printable(refusalMessage(err, apiKeyGiven))}`,
        ...lines.map((l) => `  ${printable(l)}`),
        `herald: ${done}; ${again}`,
      ].join('\n'),
    );
  }
  // Said as it would be alone, with where it happened (a DOMException's message, a timeout's, cannot be set:
  // setting it threw, and the timeout was reported as an answer of another shape).
  let said = '';
  reportError(err, (text) => (said += text), apiKeyGiven);
  return new ReportedError(`${said.trimEnd()} (sending ${file}, ${range}; ${done}; ${again})`);
}
