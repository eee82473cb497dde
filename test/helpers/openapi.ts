import fs from 'node:fs';
import path from 'node:path';
import Ajv2020 from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import YAML from 'yaml';
import { mountedRoutes } from '../../src/api/allowed-methods';

/** The published contract, relative to this file so it works from any working directory. */
export const OPENAPI_FILE = path.resolve(__dirname, '..', '..', 'openapi', 'openapi.yaml');

export const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/* The parts of an OpenAPI 3.1 document these helpers read; the rest stays `unknown`. */
export interface OpenApiDoc {
  openapi: string;
  paths: Record<string, PathItem>;
  webhooks?: Record<string, PathItem>;
  components?: Record<string, Record<string, unknown>>;
  [key: string]: unknown;
}
type PathItem = Partial<Record<HttpMethod, OperationObject>> & { parameters?: Ref<ParameterObject>[] };
export interface OperationObject {
  operationId?: string;
  security?: Record<string, string[]>[];
  'x-herald-scope'?: string;
  parameters?: Ref<ParameterObject>[];
  requestBody?: Ref<{ content: Record<string, MediaTypeObject> }>;
  responses: Record<string, Ref<ResponseObject>>;
}
export interface ParameterObject {
  name: string;
  in: 'query' | 'header' | 'path' | 'cookie';
  required?: boolean;
  schema?: Schema;
}
interface ResponseObject {
  description: string;
  headers?: Record<string, Ref<{ required?: boolean; schema?: Schema }>>;
  content?: Record<string, MediaTypeObject>;
}
interface MediaTypeObject {
  schema?: Schema;
}
type Schema = Record<string, unknown>;
type Ref<T> = T | { $ref: string };

/** A fresh parse of `openapi/openapi.yaml` (swagger-parser mutates what it is given). */
export function loadContract(): OpenApiDoc {
  return YAML.parse(fs.readFileSync(OPENAPI_FILE, 'utf8')) as OpenApiDoc;
}

export interface DocumentedOperation {
  method: HttpMethod;
  path: string;
  operationId: string;
  operation: OperationObject;
  /** Path-level and operation-level parameters, `$ref`s resolved. */
  parameters: ParameterObject[];
}

/** Every operation under `paths`, in document order. */
export function documentedOperations(doc: OpenApiDoc): DocumentedOperation[] {
  const out: DocumentedOperation[] = [];
  for (const [p, item] of Object.entries(doc.paths)) {
    for (const method of HTTP_METHODS) {
      const operation = item[method];
      if (!operation) continue;
      const parameters = [...(item.parameters ?? []), ...(operation.parameters ?? [])].map((x) => deref(doc, x));
      out.push({ method, path: p, operationId: operation.operationId ?? `${method} ${p}`, operation, parameters });
    }
  }
  return out;
}

/** Resolves a local `$ref` (`#/components/...`), following chains. */
export function deref<T>(doc: OpenApiDoc, value: Ref<T>): T {
  let current: unknown = value;
  for (let hops = 0; hops < 10 && current && typeof current === 'object' && '$ref' in current; hops++) {
    current = pointer(doc, (current as { $ref: string }).$ref);
  }
  return current as T;
}

function pointer(doc: unknown, ref: string): unknown {
  if (!ref.startsWith('#/')) throw new Error(`only local $refs are supported, got ${ref}`);
  return ref
    .slice(2)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce<unknown>((node, key) => {
      if (node === null || typeof node !== 'object' || !(key in node)) throw new Error(`unresolvable $ref ${ref}`);
      return (node as Record<string, unknown>)[key];
    }, doc);
}

const escapePointer = (s: string) => s.replace(/~/g, '~0').replace(/\//g, '~1');

// ---- Express routes ------------------------------------------------------------------------

export interface Route {
  method: string;
  /** OpenAPI style: `/subscriptions/{id}`. */
  path: string;
  /** The scope its first handler checks (`requireScope` in src/api/routing.ts); undefined if it does not start with one. */
  scope?: string;
}

/**
 * Every method+path an express 5 app (or router) registers (`mountedRoutes`, as the gateway reads
 * them for `Allow`). Paths come out in OpenAPI style (`:id` → `{id}`). Throws on anything it cannot
 * translate faithfully (regexp or wildcard paths, unknown mounts, `router.all`) rather than silently
 * leaving a route out of the comparison.
 */
export function listRoutes(app: { router: { stack: unknown[] } } | { stack: unknown[] }): Route[] {
  const stack = 'router' in app ? app.router.stack : app.stack;
  return mountedRoutes(stack as Parameters<typeof mountedRoutes>[0]).flatMap(({ path, methods, firstHandler }) => {
    if (path === undefined) throw new Error('cannot list a route (or a router) mounted on a path that is not a string');
    const full = toOpenApiPath(path);
    const scope = (firstHandler as { scope?: unknown } | undefined)?.scope;
    return methods.map((method) => {
      if (method === '_all') throw new Error(`cannot list router.all('${full}')`);
      return { method: method.toLowerCase(), path: full, scope: typeof scope === 'string' ? scope : undefined };
    });
  });
}

/** `/subscriptions/:id` → `/subscriptions/{id}`. */
export function toOpenApiPath(expressPath: string): string {
  if (/[*?(){}]/.test(expressPath)) throw new Error(`express path ${expressPath} uses syntax this comparison does not translate`);
  return expressPath.replace(/:([A-Za-z0-9_]+)/g, '{$1}');
}

/** A concrete path for a template: `{partition}` → `0`, anything else → `x`. */
export function examplePath(template: string, values: Record<string, string> = {}): string {
  return template.replace(/\{([^}]+)\}/g, (_m, name: string) => values[name] ?? (name === 'partition' ? '0' : 'x'));
}

// ---- Response validation ------------------------------------------------------------------

/** One HTTP exchange as a test saw it. */
export interface Exchange {
  method: string;
  /** Path with or without a query string, as requested. */
  url: string;
  status: number;
  headers: Headers;
  body: string;
}

const mediaTypeOf = (contentType: string | null | undefined) => contentType?.split(';', 1)[0]!.trim().toLowerCase() || undefined;
const isJson = (mediaType: string) => mediaType === 'application/json' || mediaType.endsWith('+json');

function matches(documented: string, actual: string): boolean {
  if (documented === '*/*' || documented === actual) return true;
  return documented.endsWith('/*') && actual.startsWith(documented.slice(0, -1));
}

/**
 * Validates real responses (and webhook requests) against the contract with ajv (JSON Schema
 * 2020-12, as OpenAPI 3.1 uses), and records which documented responses were seen.
 * The whole document is registered as one schema so `$ref`s resolve exactly as written.
 */
export function createContractChecker(doc: OpenApiDoc) {
  const ajv = new Ajv2020({ allErrors: true, strict: true, strictRequired: false, allowUnionTypes: true });
  addFormats(ajv);
  // OpenAPI's own schema keywords and formats, which JSON Schema does not define.
  ajv.addVocabulary(['example', 'discriminator', 'xml', 'externalDocs']);
  ajv.addFormat('binary', true);
  // The document is registered whole so `$ref`s resolve as written; its top-level members are
  // not schema keywords, so they are declared as inert ones (strict mode stays on for the schemas).
  ajv.addVocabulary(Object.keys(doc).filter((k) => !ajv.getKeyword(k)));
  ajv.addSchema({ $id: 'contract', ...doc } as never, undefined, undefined, false);
  const validators = new Map<string, ReturnType<typeof ajv.compile>>();
  const covered = new Set<string>();
  const operations = documentedOperations(doc);
  // Most specific first, so `/dead-letters/redeliver` wins over `/dead-letters/{deadLetterId}`.
  const byLiteralness = [...operations].sort((a, b) => countParams(a.path) - countParams(b.path));

  function validatorFor(jsonPointer: string) {
    let validate = validators.get(jsonPointer);
    if (!validate) {
      validate = ajv.compile({ $ref: `contract#${jsonPointer}` });
      validators.set(jsonPointer, validate);
    }
    return validate;
  }

  function validateValue(jsonPointer: string, value: unknown, what: string): void {
    const validate = validatorFor(jsonPointer);
    if (!validate(value)) {
      throw new Error(
        `${what} does not match the contract (${jsonPointer}):\n${ajv.errorsText(validate.errors, { separator: '\n' })}\nvalue: ${JSON.stringify(value, null, 2).slice(0, 2000)}`,
      );
    }
  }

  function findOperation(method: string, url: string): DocumentedOperation {
    const pathname = new URL(url, 'http://x').pathname;
    const found = byLiteralness.find((o) => o.method === method.toLowerCase() && templateRegex(o.path).test(pathname));
    if (!found) throw new Error(`${method} ${pathname} is not in the contract`);
    return found;
  }

  /** Throws a readable error unless the response is documented and matches; returns the operation and response key. */
  function checkResponse(ex: Exchange): { operationId: string; responseKey: string } {
    const op = findOperation(ex.method, ex.url);
    const where = `${ex.method.toUpperCase()} ${ex.url} → ${ex.status} (${op.operationId})`;
    const responses = op.operation.responses;
    const key = [String(ex.status), `${String(ex.status)[0]}XX`, 'default'].find((k) => k in responses);
    if (!key)
      throw new Error(
        `${where}: status ${ex.status} is not documented; documented: ${Object.keys(responses).join(', ')}\nbody: ${ex.body.slice(0, 500)}`,
      );
    const responsePointer = `/paths/${escapePointer(op.path)}/${op.method}/responses/${key}`;
    const response = deref<ResponseObject>(doc, responses[key]!);
    const resolvedPointer = '$ref' in responses[key]! ? (responses[key] as { $ref: string }).$ref.slice(1) : responsePointer;

    for (const [name, headerRef] of Object.entries(response.headers ?? {})) {
      const header = deref(doc, headerRef);
      const value = ex.headers.get(name);
      if (value === null) {
        if (header.required) throw new Error(`${where}: required response header ${name} is missing`);
        continue;
      }
      if (header.schema) {
        const typed = header.schema.type === 'integer' || header.schema.type === 'number' ? Number(value) : value;
        validateHeaderValue(header.schema, typed, `${where}: header ${name}`);
      }
    }

    const mediaType = mediaTypeOf(ex.headers.get('content-type'));
    if (!response.content) {
      if (ex.body.length > 0 || mediaType)
        throw new Error(`${where}: documented without a body, but got ${mediaType ?? 'no content-type'} "${ex.body.slice(0, 200)}"`);
    } else {
      if (!mediaType) throw new Error(`${where}: no content-type; documented: ${Object.keys(response.content).join(', ')}`);
      const documented = Object.keys(response.content).find((k) => matches(k, mediaType));
      if (!documented)
        throw new Error(`${where}: content-type ${mediaType} is not documented; documented: ${Object.keys(response.content).join(', ')}`);
      if (response.content[documented]!.schema) {
        let value: unknown = ex.body;
        if (isJson(mediaType)) {
          try {
            value = JSON.parse(ex.body);
          } catch {
            throw new Error(`${where}: ${mediaType} body is not JSON: ${ex.body.slice(0, 200)}`);
          }
        }
        validateValue(`${resolvedPointer}/content/${escapePointer(documented)}/schema`, value, `${where}: body`);
      }
    }
    covered.add(`${op.operationId} ${key}`);
    return { operationId: op.operationId, responseKey: key };
  }

  function validateHeaderValue(schema: Schema, value: unknown, what: string): void {
    const validate = ajv.compile(schema);
    if (!validate(value))
      throw new Error(`${what} = ${JSON.stringify(value)} does not match ${JSON.stringify(schema)}: ${ajv.errorsText(validate.errors)}`);
  }

  /**
   * Checks a webhook request Herald sent against `webhooks.<name>.post`: every required header is
   * there, every `ce-*`, `webhook-*`, `herald-*`, `traceparent` and `tracestate` header is documented and
   * valid, and the body
   * matches the documented content type.
   */
  function checkWebhookRequest(
    req: { headers: Record<string, string | string[] | undefined>; body: Buffer },
    webhook = 'eventDelivery',
  ): void {
    const operation = doc.webhooks?.[webhook]?.post;
    if (!operation) throw new Error(`webhook ${webhook} is not in the contract`);
    const params = (operation.parameters ?? []).map((p) => deref(doc, p)).filter((p) => p.in === 'header');
    const documented = new Map(params.map((p) => [p.name.toLowerCase(), p]));
    const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k.toLowerCase(), Array.isArray(v) ? v.join(', ') : v]));
    const binary = Object.keys(headers).some((k) => k.startsWith('ce-'));
    for (const p of params) {
      if (p.required && headers[p.name.toLowerCase()] === undefined) throw new Error(`webhook request lacks required header ${p.name}`);
    }
    for (const [name, value] of Object.entries(headers)) {
      if (value === undefined) continue;
      const param = documented.get(name);
      if (!param) {
        // Extension attributes are ce-<anything>; Herald's own headers (the W3C trace headers it copies from
        // the event among them) must all be documented.
        if (/^(webhook-|herald-|traceparent$|tracestate$)/.test(name)) throw new Error(`webhook request header ${name} is not documented`);
        continue;
      }
      if (param.schema) validateHeaderValue(param.schema, value, `webhook request header ${name}`);
    }
    if (binary) {
      for (const core of ['ce-specversion', 'ce-id', 'ce-source', 'ce-type']) {
        if (headers[core] === undefined) throw new Error(`binary-mode webhook request lacks ${core}`);
      }
    }
    const body = deref(doc, operation.requestBody!);
    const mediaType = mediaTypeOf(headers['content-type']);
    if (!mediaType) throw new Error('webhook request has no content-type');
    const key = Object.keys(body.content).find((k) => matches(k, mediaType));
    if (!key) throw new Error(`webhook request content-type ${mediaType} is not documented`);
    if (!binary && key !== 'application/cloudevents+json')
      throw new Error(`a structured webhook request must be application/cloudevents+json, got ${mediaType}`);
    const schema = body.content[key]!.schema;
    if (schema && isJson(mediaType)) {
      validateValue(
        `/webhooks/${escapePointer(webhook)}/post/requestBody/content/${escapePointer(key)}/schema`,
        JSON.parse(req.body.toString('utf8')),
        'webhook request body',
      );
    }
  }

  /** JSON pointers of every schema in the document: components, parameters, bodies, responses, headers. */
  function schemaPointers(): string[] {
    const found: string[] = [];
    const visit = (node: unknown, at: string) => {
      if (node === null || typeof node !== 'object') return;
      for (const [k, v] of Object.entries(node)) {
        const here = `${at}/${escapePointer(k)}`;
        if (k === 'schema' && v && typeof v === 'object') found.push(here);
        else visit(v, here);
      }
    };
    visit({ paths: doc.paths, webhooks: doc.webhooks, components: { ...doc.components, schemas: undefined } }, '');
    for (const name of Object.keys(doc.components?.schemas ?? {})) found.push(`/components/schemas/${escapePointer(name)}`);
    return found;
  }

  /** `operationId status` for every response the document lists. */
  function documentedResponses(): string[] {
    return operations.flatMap((o) => Object.keys(o.operation.responses).map((k) => `${o.operationId} ${k}`));
  }

  return {
    checkResponse,
    checkWebhookRequest,
    documentedResponses,
    covered,
    validateValue,
    findOperation,
    schemaPointers,
    compile: validatorFor,
  };
}
export type ContractChecker = ReturnType<typeof createContractChecker>;

function countParams(template: string): number {
  return (template.match(/\{/g) ?? []).length;
}

function templateRegex(template: string): RegExp {
  const source = template
    .split(/(\{[^}]+\})/)
    .map((part) => (part.startsWith('{') ? '[^/]+' : part.replace(/[.*+?^$()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`); // routes are strict: `/console/` is not `/console`
}

/**
 * `fetch` plus contract checking: every answer is validated before the test sees it.
 * `json` sends a JSON body; `body` sends raw bytes or text with the given headers.
 */
/** The body; of a live stream (`text/event-stream`, which never ends by itself) only its first chunk. */
async function readAnswer(res: Response): Promise<string> {
  if (mediaTypeOf(res.headers.get('content-type')) !== 'text/event-stream' || !res.body) return res.text();
  const reader = res.body.getReader();
  const first = await reader.read();
  await reader.cancel();
  return first.value ? Buffer.from(first.value).toString('utf8') : '';
}

export function createContractClient(baseUrl: string, checker: ContractChecker) {
  return async function call(
    method: string,
    url: string,
    opts: { headers?: Record<string, string>; json?: unknown; body?: string | Buffer } = {},
  ): Promise<{ status: number; headers: Headers; text: string; body: any; operationId: string }> {
    const headers: Record<string, string> = { ...opts.headers };
    let body: string | Buffer | undefined = opts.body;
    if (opts.json !== undefined) {
      body = JSON.stringify(opts.json);
      headers['content-type'] ??= 'application/json';
    }
    const res = await fetch(baseUrl + url, { method, headers, body, redirect: 'manual' });
    const text = await readAnswer(res);
    const { operationId } = checker.checkResponse({ method, url, status: res.status, headers: res.headers, body: text });
    let parsed: unknown = text;
    if (isJson(mediaTypeOf(res.headers.get('content-type')) ?? '')) parsed = JSON.parse(text);
    return { status: res.status, headers: res.headers, text, body: parsed, operationId };
  };
}
export type ContractClient = ReturnType<typeof createContractClient>;
