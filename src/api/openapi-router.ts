import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { RequestHandler, Router } from 'express';
import YAML from 'yaml';
import { AppError } from '../errors';
import { newRouter, requireScope } from './routing';

/** `openapi/openapi.yaml` at the repository root: two levels up from both `src/api` and `dist/api`. */
export const OPENAPI_FILE = path.resolve(__dirname, '..', '..', 'openapi', 'openapi.yaml');

const REDOC_BUNDLE = 'redoc/bundles/redoc.standalone.js';
const SCRIPT_ROUTE = '/docs/assets/redoc.standalone.js';
/**
 * Redoc's footer shows Redocly's logo from its CDN, and no Redoc option turns it off (2.5: the footer
 * has none). The served bundle names `data:,` instead: an image that fails at once without any
 * request, which Redoc's own `onError` then hides. The test of /docs in a browser fails should a
 * newer Redoc fetch anything else from elsewhere.
 */
const CDN_LOGO = '"https://cdn.redoc.ly/redoc/logo-mini.svg"';
const NO_LOGO = '"data:,"';
/**
 * The reference page is not framed by other sites (console probe: it could be) nor sends a referrer.
 * Its scripts and styles are not restricted: Redoc injects styles and starts its search worker from a blob.
 */
const DOCS_SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'content-security-policy': "frame-ancestors 'none'; object-src 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
};
/** `GET /docs/`: the same page as `GET /docs`, the one route served but not documented separately. */
export const DOCS_ALIAS = '/docs/';

/**
 * The published contract: `GET /openapi.yaml` (the file as written), `GET /openapi.json` (the same,
 * parsed) and `GET /docs`, a Redoc reference page whose script is served from the installed `redoc`
 * package (its CDN logo taken out), so the page works offline and loads nothing from a CDN.
 * The file is read once, here, and a missing file or Redoc bundle fails start-up. Parsing the YAML
 * (about 0.2 s of CPU) and preparing the 1 MB bundle wait for the first request that needs them,
 * once per process: every gateway start, child process or test, would otherwise pay for them twice
 * (the starting server and the gateway each mount this router).
 */
export function createOpenApiRouter(opts: { file?: string } = {}): Router {
  const file = opts.file ?? OPENAPI_FILE;
  const yamlText = fs.readFileSync(file, 'utf8');
  let bundle: string;
  try {
    bundle = require.resolve(REDOC_BUNDLE);
  } catch (err) {
    throw new Error(`cannot serve /docs: ${REDOC_BUNDLE} is not installed (run npm ci)`, { cause: err });
  }
  const contract = () => parsedContract(yamlText);
  const prepared = preparedBodies();

  const router = newRouter();
  const open = requireScope('none');
  // Each answer is one Buffer made once, with its ETag: sent as a string, express copied it into a
  // Buffer of its own per request and hashed it, and a client pipelining ~1,600 GETs in one 64 KiB
  // write (node parses a whole read before its backpressure stops reading) without reading the
  // answers held ~190 MB per connection, no key needed (HTTP probe: 8 such connections, 1.7 GB).
  router.get('/openapi.yaml', open, (_req, res) => {
    const { body, etag } = prepared('yaml', () => yamlText);
    res.type('application/yaml').set('etag', etag).send(body);
  });
  router.get('/openapi.json', open, (_req, res) => {
    const { body, etag } = prepared('json', () => contract().jsonText);
    res.type('application/json').set('etag', etag).send(body);
  });
  const docs: RequestHandler = (req, res) => {
    // Relative URL so the page also works behind a reverse proxy that adds a path prefix.
    const scriptUrl = req.path.endsWith('/') ? 'assets/redoc.standalone.js' : 'docs/assets/redoc.standalone.js';
    const { body, etag } = prepared(`docs:${scriptUrl}`, () => {
      const { title, jsonText } = contract();
      return docsPage(title, scriptUrl, jsonText);
    });
    res.type('html').set(DOCS_SECURITY_HEADERS).set('etag', etag).send(body);
  };
  router.get('/docs', open, docs);
  // Routing is strict about trailing slashes; the page alone answers at both (see DOCS_ALIAS).
  router.get(DOCS_ALIAS, open, docs);
  router.get(SCRIPT_ROUTE, open, (_req, res) => {
    // Redoc's bundle builds its search worker from a blob, so this one file is the whole renderer (served without its CDN logo).
    const { body: script, etag } = prepared('redoc', () => fs.readFileSync(bundle, 'utf8').replaceAll(CDN_LOGO, NO_LOGO));
    res.type('text/javascript; charset=utf-8').set({ 'cache-control': 'public, max-age=86400', etag }).send(script);
  });
  return router;
}

const parsed = new Map<string, { jsonText: string; title: string } | AppError>();

/** Answers' bytes and ETags, each made once by `make` on first use (what it throws is not kept). */
function preparedBodies(): (key: string, make: () => string) => { body: Buffer; etag: string } {
  const bodies = new Map<string, { body: Buffer; etag: string }>();
  return (key, make) => {
    let found = bodies.get(key);
    if (!found) {
      const body = Buffer.from(make());
      found = { body, etag: `"${createHash('sha256').update(body).digest('base64url')}"` };
      bodies.set(key, found);
    }
    return found;
  };
}

/**
 * The document as JSON and its title, parsed once per distinct text in this process. A text that
 * does not parse (a damaged install) fails once with its own error, logged, then with a short one,
 * never parsed again: each request would otherwise cost the parse and a logged stack.
 */
function parsedContract(yamlText: string): { jsonText: string; title: string } {
  const found = parsed.get(yamlText);
  if (found instanceof AppError) throw found;
  if (found) return found;
  try {
    const document = YAML.parse(yamlText) as { info?: { title?: string } };
    const contract = { jsonText: JSON.stringify(document), title: document.info?.title ?? 'API reference' };
    parsed.set(yamlText, contract);
    return contract;
  } catch (err) {
    parsed.set(yamlText, new AppError('internal', 'the API document (openapi/openapi.yaml) does not parse: the installation is damaged'));
    throw err;
  }
}

/** The spec is inlined (one request fewer, no base-URL guessing); `<` is escaped so it cannot close the script. */
function docsPage(title: string, scriptUrl: string, specJson: string): string {
  const inline = specJson
    .replace(/</g, '\\u003c')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)}</title>
<style>body { margin: 0; padding: 0; }</style>
</head>
<body>
<div id="redoc"></div>
<script src="${scriptUrl}"></script>
<script>
Redoc.init(${inline}, { expandResponses: '200,201,202', jsonSampleExpandLevel: 3, hideDownloadButton: false }, document.getElementById('redoc'));
</script>
</body>
</html>
`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
