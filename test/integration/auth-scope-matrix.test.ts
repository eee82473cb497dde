import { startTestGateway, type TestGateway } from '../helpers/gateway';
import { sendRaw, type RawResponse } from '../helpers/http';
import { documentedOperations, loadContract, type DocumentedOperation } from '../helpers/openapi';
import { cleanupTmpDirs } from '../helpers/tmp';

/**
 * Every documented operation × every kind of key × spellings of its path, generated from
 * `x-herald-scope` in openapi/openapi.yaml. The canonical path, its absolute form and the path with
 * a `#fragment` must all be authorised exactly as the scope says; a path that only looks like the
 * route (other letter case, a trailing slash, a percent-encoded letter) is no route at all: 404 for
 * every key, never a 2xx. Requests go out over node:http so each target reaches the server as written.
 */

const operations = documentedOperations(loadContract());

const SECRETS = { publish: 'matrix-publish-key', read: 'matrix-read-key', admin: 'matrix-admin-key' } as const;
type KeyKind = keyof typeof SECRETS | 'none' | 'invalid';
const KEYS: { kind: KeyKind; authorization?: string }[] = [
  { kind: 'publish', authorization: `Bearer ${SECRETS.publish}` },
  { kind: 'read', authorization: `Bearer ${SECRETS.read}` },
  { kind: 'admin', authorization: `Bearer ${SECRETS.admin}` },
  { kind: 'none' },
  { kind: 'invalid', authorization: 'Bearer not-a-configured-key' },
];

/** 401 or 403 when the key may not call an operation of this scope; undefined when it may. */
function refusal(key: KeyKind, scope: string): 401 | 403 | undefined {
  if (scope === 'none') return undefined;
  if (key === 'none' || key === 'invalid') return 401;
  if (key === scope || (scope === 'read' && key === 'admin')) return undefined;
  return 403;
}

/** A path template's literal segments (not `{params}`), by index. */
const literalSegments = (template: string) =>
  template
    .split('/')
    .map((segment, index) => ({ segment, index }))
    .filter(({ segment }) => segment !== '' && !segment.startsWith('{'));

function rewriteSegment(template: string, pick: 'first' | 'last', change: (segment: string) => string): string {
  const literals = literalSegments(template);
  const { index } = pick === 'first' ? literals[0]! : literals[literals.length - 1]!;
  return template
    .split('/')
    .map((segment, i) => (i === index ? change(segment) : segment))
    .join('/');
}

const firstLetter = /[a-z]/;
const pctEncodeFirstLetter = (s: string) => s.replace(firstLetter, (c) => `%${c.charCodeAt(0).toString(16)}`);
const capitaliseFirstLetter = (s: string) => s.replace(firstLetter, (c) => c.toUpperCase());

interface Variant {
  name: string;
  /** Whether the server must treat it exactly like the canonical target; otherwise it must be a 404. */
  sameRoute: boolean;
  /** The path template → the request target (before the query string and fragment are added). */
  path: (template: string) => string;
  suffix?: string;
  absolute?: (base: string) => string;
}

const VARIANTS: Variant[] = [
  { name: 'canonical', sameRoute: true, path: (t) => t },
  { name: 'absolute-form', sameRoute: true, path: (t) => t, absolute: (base) => base },
  { name: 'absolute-form, another host and scheme case', sameRoute: true, path: (t) => t, absolute: () => 'HTTP://other.example:1' },
  { name: '#fragment', sameRoute: true, path: (t) => t, suffix: '#section' },
  {
    name: 'upper case',
    sameRoute: false,
    path: (t) =>
      t
        .split('/')
        .map((s) => (s.startsWith('{') ? s : s.toUpperCase()))
        .join('/'),
  },
  { name: 'capitalised first segment', sameRoute: false, path: (t) => rewriteSegment(t, 'first', capitaliseFirstLetter) },
  { name: 'capitalised last segment', sameRoute: false, path: (t) => rewriteSegment(t, 'last', capitaliseFirstLetter) },
  { name: 'percent-encoded letter, first segment', sameRoute: false, path: (t) => rewriteSegment(t, 'first', pctEncodeFirstLetter) },
  { name: 'percent-encoded letter, last segment', sameRoute: false, path: (t) => rewriteSegment(t, 'last', pctEncodeFirstLetter) },
  { name: 'trailing slash', sameRoute: false, path: (t) => `${t}/` },
];

/** `/docs/` is the one documented alias: the reference page answers there too. */
const isDocsAlias = (op: DocumentedOperation, variant: Variant) => op.operationId === 'getDocs' && variant.name === 'trailing slash';
/** A spelling that is another documented operation's path (`/console/`, a redirect to `/console`): that operation's row tests it. */
const isDocumentedElsewhere = (op: DocumentedOperation, variant: Variant) =>
  variant.name === 'trailing slash' && operations.some((o) => o.method === op.method && o.path === `${op.path}/`);

let gw: TestGateway;
let subscriptionId: string;
let seq = 0;

async function createSubscription(): Promise<string> {
  const res = await sendRaw(gw.url, 'POST', '/subscriptions', {
    headers: { authorization: `Bearer ${SECRETS.admin}`, 'content-type': 'application/json' },
    body: JSON.stringify({ sink: 'http://127.0.0.1:9/matrix', filters: [{ exact: { source: '/matrix/never' } }] }),
  });
  expect(res.status).toBe(201);
  return res.body.id as string;
}

/** Parameter values, query string, headers and body that make a well-formed call of each operation. */
async function requestFor(
  op: DocumentedOperation,
): Promise<{ values: Record<string, string>; query: string; headers: Record<string, string>; body?: string }> {
  // Destructive operations get a throwaway subscription, so the matrix does not depend on its own order.
  const id = op.operationId === 'deleteSubscription' ? await createSubscription() : subscriptionId;
  const values = { id, partition: '0', deliveryId: 'dlv_matrix_unknown', deadLetterId: '1' };
  const json = (value: unknown) => ({ headers: { 'content-type': 'application/json' }, body: JSON.stringify(value) });
  switch (op.operationId) {
    case 'publishEvents':
      return {
        values,
        query: '',
        headers: {
          'ce-specversion': '1.0',
          'ce-id': `matrix-${++seq}`,
          'ce-source': '/matrix',
          'ce-type': 'com.example.matrix',
          'content-type': 'application/json',
        },
        body: '{"n":1}',
      };
    case 'getEvent':
      return { values, query: '?source=%2Fmatrix&id=matrix-1', headers: {} };
    case 'createSubscription':
      return { values, query: '', ...json({ sink: 'http://127.0.0.1:9/matrix', filters: [{ exact: { source: '/matrix/never' } }] }) };
    case 'updateSubscription':
      return { values, query: '', ...json({ delivery: { maxInFlight: 2 } }) };
    case 'extendDelivery':
      return { values, query: '', ...json({ ms: 1000 }) };
    case 'nackDelivery':
    case 'rejectDelivery':
    case 'redeliverDeadLetters':
      return { values, query: '', ...json({}) };
    default:
      return { values, query: '', headers: {} };
  }
}

/**
 * A spelling that is another route's path (`…/dead-letters/Redeliver` is the dead letter named
 * "Redeliver") is a 405 whose `Allow` lacks the method: the route it was meant for was not reached.
 */
const isOtherRoutesPath = (res: RawResponse, method: string) =>
  res.status === 405 &&
  res.body?.code === 'method_not_allowed' &&
  !String(res.headers.allow ?? '')
    .split(', ')
    .includes(method.toUpperCase());

const fill = (template: string, values: Record<string, string>) =>
  template.replace(/\{([^}]+)\}/g, (_m, name: string) => values[name] ?? 'x');

beforeAll(async () => {
  gw = await startTestGateway({
    HERALD_PARTITIONS: '2',
    HERALD_API_KEYS: `pub:${SECRETS.publish}:publish,rd:${SECRETS.read}:read,adm:${SECRETS.admin}:admin`,
  });
  subscriptionId = await createSubscription();
});

afterAll(async () => {
  await gw?.close();
  cleanupTmpDirs();
});

describe('authorisation matrix generated from x-herald-scope', () => {
  it('covers every operation, each with a scope', () => {
    expect(operations.length).toBeGreaterThan(20);
    for (const op of operations)
      expect([op.operationId, op.operation['x-herald-scope']]).toEqual([
        op.operationId,
        expect.stringMatching(/^(publish|read|admin|none)$/),
      ]);
  });

  it.each(operations.map((op) => [`${op.method.toUpperCase()} ${op.path}`, op] as const))(
    '%s answers exactly as its scope says, under every spelling',
    async (_name, op) => {
      const scope = op.operation['x-herald-scope']!;
      const failures: string[] = [];
      for (const variant of VARIANTS) {
        for (const key of KEYS) {
          const call = await requestFor(op);
          const path = fill(variant.path(op.path), call.values);
          const target = `${variant.absolute ? variant.absolute(gw.url) : ''}${path}${call.query}${variant.suffix ?? ''}`;
          const headers = { ...call.headers, ...(key.authorization ? { authorization: key.authorization } : {}) };
          const res: RawResponse = await sendRaw(gw.url, op.method.toUpperCase(), target, { headers, body: call.body });
          const seen = `${variant.name}, ${key.kind} key: ${op.method.toUpperCase()} ${target} → ${res.status} ${res.text.slice(0, 160)}`;

          if (variant.sameRoute || isDocsAlias(op, variant)) {
            const refused = isDocsAlias(op, variant) ? undefined : refusal(key.kind, scope);
            if (refused !== undefined) {
              if (res.status !== refused) failures.push(`expected ${refused}; ${seen}`);
              continue;
            }
            // A spelling that missed its route is a 404 "no route", or a 405 when it is another route's path.
            const routeMissing =
              (res.status === 404 && typeof res.body === 'object' && /^no route for/.test(res.body?.detail ?? '')) ||
              (res.status === 405 && res.body?.code === 'method_not_allowed');
            const ok =
              (res.status >= 200 && res.status < 300) ||
              (res.status >= 300 && res.status < 400 && String(res.status) in op.operation.responses) ||
              (res.status >= 400 && res.status < 500 && res.status !== 401 && res.status !== 403 && !routeMissing);
            if (!ok) failures.push(`expected 2xx or a business 4xx; ${seen}`);
          } else if (isDocumentedElsewhere(op, variant)) {
            continue;
          } else if (res.status !== 404 && !isOtherRoutesPath(res, op.method)) {
            failures.push(`expected 404 (no such route), or 405 for another route's path; ${seen}`);
          }
        }
      }
      expect(failures).toEqual([]);
    },
  );
});
