import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { parse } from 'yaml';
import { CesqlError, cesqlMatches, compileCesql } from '../../../src/filters/cesql';

/** The official CESQL TCK, shared by the workspace rather than vendored into the repository. */
const TCK_DIR = path.resolve(__dirname, '../../../../shared/reference/cesql-tck');

interface TckCase {
  file: string;
  name: string;
  expression: string;
  event: Record<string, string | number | boolean>;
  result?: string | number | boolean;
  error?: string;
}

/** Any valid event will do where a case gives none; required attributes must be there for EXISTS. */
const BASE_EVENT = { specversion: '1.0', id: 'tck-id', source: 'https://tck.example/source', type: 'tck.type' };

/**
 * Every case of every TCK file, or `undefined` if the TCK folder is absent.
 * Expressions are read with YAML's failsafe schema: the core schema would turn
 * `expression: TRUE` or `expression: 0` into a boolean or a number, losing the
 * exact text under test. Results and events keep their typed values.
 */
function loadTck(): TckCase[] | undefined {
  if (!fs.existsSync(TCK_DIR)) return undefined;
  const files = fs
    .readdirSync(TCK_DIR)
    .filter((f) => f.endsWith('.yaml'))
    .sort();
  return files.flatMap((file) => {
    const text = fs.readFileSync(path.join(TCK_DIR, file), 'utf8');
    const typed = parse(text) as { tests: Array<Record<string, unknown>> };
    const raw = parse(text, { schema: 'failsafe' }) as { tests: Array<{ expression: string }> };
    return typed.tests.map((test, i) => {
      const event = (test.event as TckCase['event'] | undefined) ?? {
        ...BASE_EVENT,
        ...(test.eventOverrides as TckCase['event'] | undefined),
      };
      const testCase: TckCase = { file: file.replace(/\.yaml$/, ''), name: String(test.name), expression: raw.tests[i]!.expression, event };
      if ('result' in test) testCase.result = test.result as TckCase['result'];
      if (typeof test.error === 'string') testCase.error = test.error;
      return testCase;
    });
  });
}

const cases = loadTck();
if (cases === undefined) console.warn(`CESQL TCK not found at ${TCK_DIR}: skipping the conformance suite`);
const describeTck = cases === undefined ? describe.skip : describe;

function compileError(expression: string): unknown {
  try {
    compileCesql(expression);
  } catch (err) {
    return err;
  }
  return undefined;
}

function check(c: TckCase): void {
  if (c.error === 'parse') {
    const err = compileError(c.expression);
    expect(err).toBeInstanceOf(CesqlError);
    expect((err as CesqlError).kind).toBe('parse');
    return;
  }
  const expression = compileCesql(c.expression);
  const { value, errors } = expression.evaluate(c.event);
  for (const e of errors) expect(e).toBeInstanceOf(CesqlError);
  // Every reported error must be of the expected kind: `missing / 0` is a
  // missing attribute, and must not also report a division by zero.
  expect([...new Set(errors.map((e) => e.kind))]).toEqual(c.error === undefined ? [] : [c.error]);
  if (c.result !== undefined) expect(value).toStrictEqual(c.result);
  expect(cesqlMatches(expression, c.event)).toBe(value === true && errors.length === 0);
}

describeTck('CESQL TCK', () => {
  const byFile = new Map<string, TckCase[]>();
  for (const c of cases ?? []) byFile.set(c.file, [...(byFile.get(c.file) ?? []), c]);

  for (const [file, fileCases] of byFile) {
    describe(file, () => {
      for (const c of fileCases) {
        it(`${c.name}: ${c.expression}`, () => check(c));
      }
    });
  }
});

describeTck('CESQL TCK expressions on arbitrary events', () => {
  const names = [
    'id',
    'source',
    'type',
    'specversion',
    'subject',
    'time',
    'myext',
    'myint',
    'mybool',
    'missing',
    'x',
    'hop',
    'ttl',
    'sequence',
    'firstname',
  ];
  const attributeValue = fc.oneof(
    fc.string(),
    fc.constantFrom('true', 'FALSE', '0', '-2147483648', '2147483648', '+7', '', '%', '\\'),
    fc.integer({ min: -2147483648, max: 2147483647 }),
    fc.constantFrom(-2147483648, 2147483647, 0),
    fc.boolean(),
    // Not CESQL integers, but a caller could still pass them.
    fc.double(),
    fc.maxSafeInteger(),
  );
  const events = fc.dictionary(fc.oneof(fc.constantFrom(...names), fc.stringMatching(/^[a-z0-9]{1,8}$/)), attributeValue);
  const compiled = (cases ?? []).filter((c) => c.error !== 'parse').map((c) => compileCesql(c.expression));

  it('evaluates every compiled TCK expression against any attributes without throwing', () => {
    fc.assert(
      fc.property(events, (event) => {
        // Plain checks rather than expect(): this loop runs tens of thousands of times.
        for (const expression of compiled) {
          const { value, errors } = expression.evaluate(event);
          const wellTyped =
            typeof value === 'number' ? Object.is(value, value | 0) : typeof value === 'string' || typeof value === 'boolean';
          if (!wellTyped || !errors.every((e) => e instanceof CesqlError)) return false;
          if (typeof cesqlMatches(expression, event) !== 'boolean') return false;
        }
        return true;
      }),
      { numRuns: 200 },
    );
  });
});
