import fs from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import { parseAllDocuments } from 'yaml';
import { encodeHeaderValue } from '../../src/cloudevents/headers';
import { startTestGateway, type TestGateway as Gw } from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * CloudEvents conformance data (github cloudevents/conformance), kept outside the repo in
 * ../shared/reference (see its README). Every event must be accepted in both content modes and
 * read back identical; the HTTP binding's Gherkin scenarios run from the feature file's own values.
 */
const REFERENCE = path.resolve(__dirname, '..', '..', '..', 'shared', 'reference', 'cloudevents-conformance');
const present = fs.existsSync(REFERENCE);
if (!present) console.warn(`conformance tests skipped: reference data not found at ${REFERENCE} (see ../shared/reference/README.md)`);
const describeIfPresent = present ? describe : describe.skip;

let gw: Gw;
beforeEach(async () => {
  // Conformance events reuse source+id across documents: each case gets its own gateway.
  gw = await startTestGateway();
});
afterEach(async () => {
  await gw.close();
});
afterAll(cleanupTmpDirs);

/** POST /events with headers and body exactly as given (no client-side serialisation). */
const post = (headers: Record<string, string>, body: string) => postEventsRaw(gw.url, headers, body);

async function readBack(source: string, id: string): Promise<Record<string, unknown>> {
  const res = await request(gw.url).get('/events').query({ source, id });
  expect(res.status).toBe(200);
  return res.body.event;
}

const mediaType = (contentType: string | undefined) => contentType?.split(';')[0]!.trim().toLowerCase();
const isJson = (contentType: string | undefined) => /\/(.+\+)?json$/.test(mediaType(contentType) ?? '');
const isText = (contentType: string | undefined) => /^text\/|\/(.+\+)?xml$/.test(mediaType(contentType) ?? '');

// ---------------------------------------------------------------- YAML events

interface ConformanceEvent {
  name: string;
  attributes: Record<string, string>;
  transportHeaders: Record<string, string>;
  data?: string;
}

/**
 * Loads the YAML documents. The failsafe schema keeps every scalar as its source text, so
 * `specversion: 1.0` stays "1.0" (the core schema would read the number 1).
 */
function loadEvents(file: string): ConformanceEvent[] {
  if (!present) return [];
  const docs = parseAllDocuments(fs.readFileSync(path.join(REFERENCE, file), 'utf8'), { schema: 'failsafe' });
  return docs.map((doc, i) => {
    const js = doc.toJS() as {
      Mode?: string;
      ContextAttributes: Record<string, unknown>;
      TransportExtensions?: Record<string, string>;
      Data?: string;
    };
    const { Extensions, ...context } = js.ContextAttributes as Record<string, string> & { Extensions?: Record<string, string> };
    const attributes = Object.fromEntries(Object.entries({ ...context, ...Extensions }).map(([k, v]) => [k, String(v)]));
    return {
      name: `${file}#${i} (${attributes.id}, declared ${js.Mode ?? 'binary'} mode)`,
      attributes,
      transportHeaders: js.TransportExtensions ?? {},
      data: js.Data,
    };
  });
}

const events = [...loadEvents('v1.yaml'), ...loadEvents('v1_minimum.yaml')];

/** How the gateway documents reading back a binary-mode body: JSON value, text, or base64 bytes. */
function binaryReadBack(contentType: string | undefined, data: string | undefined): Record<string, unknown> {
  if (data === undefined) return {};
  if (isJson(contentType)) return { data: JSON.parse(data) };
  if (isText(contentType)) return { data };
  return { data_base64: Buffer.from(data, 'utf8').toString('base64') };
}

/** The event in the JSON format: JSON payloads (declared, or by the format's application/json default) as values, others as text. */
function structuredData(contentType: string | undefined, data: string | undefined): Record<string, unknown> {
  if (data === undefined) return {};
  if (contentType === undefined || isJson(contentType)) return { data: JSON.parse(data) };
  return { data };
}

describeIfPresent('CloudEvents conformance events', () => {
  it('finds every document of v1.yaml and v1_minimum.yaml', () => {
    expect(events).toHaveLength(8);
  });

  // Without the reference data the table is empty, and jest refuses an empty .each even inside a skipped describe.
  describe.each(present ? events.map((e) => [e.name, e] as const) : [['(no reference data)', undefined as never] as const])(
    '%s',
    (_name, e) => {
      it('is accepted in binary mode and read back with identical attributes and data', async () => {
        const { datacontenttype, ...rest } = e.attributes;
        const headers: Record<string, string> = { ...e.transportHeaders };
        for (const [name, value] of Object.entries(rest)) headers[`ce-${name}`] = encodeHeaderValue(value);
        if (datacontenttype !== undefined) headers['content-type'] = datacontenttype;
        const res = await post(headers, e.data ?? '');
        expect(res.status).toBe(202);
        expect(res.body.results).toEqual([
          { id: e.attributes.id, source: e.attributes.source, partition: expect.any(Number), offset: 0, duplicate: false },
        ]);
        expect(await readBack(e.attributes.source!, e.attributes.id!)).toEqual({
          ...e.attributes,
          ...binaryReadBack(datacontenttype, e.data),
        });
      });

      it('is accepted in structured mode and read back with identical attributes and data', async () => {
        const structured = { ...e.attributes, ...structuredData(e.attributes.datacontenttype, e.data) };
        const res = await post(
          { ...e.transportHeaders, 'content-type': 'application/cloudevents+json; charset=utf-8' },
          JSON.stringify(structured),
        );
        expect(res.status).toBe(202);
        expect(res.body.results).toEqual([
          { id: e.attributes.id, source: e.attributes.source, partition: expect.any(Number), offset: 0, duplicate: false },
        ]);
        expect(await readBack(e.attributes.source!, e.attributes.id!)).toEqual(structured);
      });
    },
  );
});

// ---------------------------------------------------------------- Gherkin scenarios

interface Scenario {
  name: string;
  request: string;
  attributes: [string, string][];
  data: unknown;
  examples: Record<string, string>[];
}

/** Just enough Gherkin for http-protocol-binding.feature: Scenario Outlines with doc strings and tables. */
function loadScenarios(): Scenario[] {
  if (!present) return [];
  const lines = fs.readFileSync(path.join(REFERENCE, 'http-protocol-binding.feature'), 'utf8').split(/\r?\n/);
  const scenarios: Scenario[] = [];
  let current: { name: string; docs: string[]; tables: string[][][] } | undefined;
  const finish = () => {
    if (!current) return;
    const [attributeTable, exampleTable] = current.tables;
    const [header, ...rows] = exampleTable!;
    scenarios.push({
      name: current.name,
      request: current.docs[0]!,
      attributes: attributeTable!.slice(1).map(([k, v]) => [k!, v!]),
      data: JSON.parse(current.docs[1]!),
      examples: rows.map((row) => Object.fromEntries(header!.map((h, i) => [h, row[i]!]))),
    });
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    const trimmed = line.trim();
    if (trimmed.startsWith('Scenario Outline:')) {
      finish();
      current = { name: trimmed.slice('Scenario Outline:'.length).trim(), docs: [], tables: [] };
    } else if (current && trimmed === '"""') {
      const indent = line.indexOf('"""');
      const body: string[] = [];
      while (lines[++i]!.trim() !== '"""') body.push(lines[i]!.slice(indent));
      current.docs.push(body.join('\n'));
    } else if (current && trimmed.startsWith('|')) {
      const table: string[][] = [];
      for (; i < lines.length && lines[i]!.trim().startsWith('|'); i++)
        table.push(
          lines[i]!.trim()
            .slice(1, -1)
            .split('|')
            .map((c) => c.trim()),
        );
      i--;
      current.tables.push(table);
    }
  }
  finish();
  return scenarios;
}

/** Splits a raw HTTP/1.1 request into its header fields and body. */
function parseHttpRequest(raw: string): { headers: [string, string][]; body: string } {
  const blank = raw.indexOf('\n\n');
  const [, ...fieldLines] = raw.slice(0, blank).split('\n');
  const headers = fieldLines.map((l): [string, string] => [l.slice(0, l.indexOf(':')).trim(), l.slice(l.indexOf(':') + 1).trim()]);
  return { headers, body: raw.slice(blank + 2) };
}

const fill = (template: string, values: Record<string, string>) => template.replace(/<(\w+)>/g, (_, name: string) => values[name]!);
const cases = loadScenarios().flatMap((s) => s.examples.map((values) => [fill(s.name, values), s, values] as const));

describeIfPresent('HTTP protocol binding scenarios (http-protocol-binding.feature)', () => {
  it('finds the binary and structured scenario outlines with two examples each', () => {
    expect(cases.map(([name]) => name)).toEqual([
      'Binary content mode (application/json)',
      'Binary content mode (application/json; charset=utf-8)',
      'Structured content mode (application/cloudevents+json)',
      'Structured content mode (application/cloudevents+json; charset=utf-8)',
    ]);
  });

  it.each(present ? cases : [['(no reference data)', undefined as never, undefined as never] as const])(
    '%s: the request is accepted and parsed into the listed attributes and data',
    async (_name, scenario, values) => {
      const { headers, body } = parseHttpRequest(fill(scenario.request, values));
      const declaredLength = headers.find(([k]) => k.toLowerCase() === 'content-length')?.[1];
      // The doc string is the request byte for byte: its own Content-Length proves the parse.
      expect(Buffer.byteLength(body)).toBe(Number(declaredLength));
      const sent = Object.fromEntries(headers.filter(([k]) => !['host', 'content-length'].includes(k.toLowerCase())));
      const res = await post(sent, body);
      expect(res.status).toBe(202);
      const attributes = Object.fromEntries(scenario.attributes.map(([k, v]) => [k, fill(v, values)]));
      expect(await readBack(attributes.source!, attributes.id!)).toEqual({ ...attributes, data: scenario.data });
    },
  );
});
