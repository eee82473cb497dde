import { createHash, timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import { ConfigError } from '../config';
import { AppError } from '../errors';

export type Scope = 'publish' | 'read' | 'admin';
const SCOPES: readonly Scope[] = ['publish', 'read', 'admin'];

export interface ApiKey {
  name: string;
  digest: Buffer;
  scopes: ReadonlySet<Scope>;
  /** Its secret is shorter than {@link SHORT_SECRET}: the gateway warns at start (failed keys are not throttled). */
  short: boolean;
}

/** Secrets shorter than this are warned about: a security probe guessed 5,536 keys in 3 s from one local client. */
export const SHORT_SECRET = 16;

/**
 * Parses `HERALD_API_KEYS`: entries `name:secret:scopes`, separated by `,`, `;`
 * or new lines; scopes joined by `+`, `|`, `,` or spaces (`ci:s3cret:publish+read`).
 * A `,`-separated token without a colon is another scope of the entry before it.
 * @throws ConfigError naming the bad entry by name (never by secret)
 */
export function parseApiKeys(raw: string | undefined): ApiKey[] {
  if (raw === undefined) return [];
  const entries: string[] = [];
  for (const token of raw
    .split(/[;\n]|,/)
    .map((t) => t.trim())
    .filter(Boolean)) {
    if (!token.includes(':') && entries.length > 0) entries[entries.length - 1] += `+${token}`;
    else entries.push(token);
  }
  // Set but holding no entry (`;`, `,,`): running open is not what the operator asked for.
  if (entries.length === 0) {
    throw new ConfigError('HERALD_API_KEYS: is set but holds no key (expected name:secret:scopes, …); unset it to run without keys');
  }
  const names = new Set<string>();
  const secrets = new Set<string>();
  return entries.map((entry, i) => {
    const fields = entry.split(':');
    const [name, secret, scopeList, ...rest] = fields;
    if (!name || !secret || !scopeList || rest.length > 0) {
      // With fewer than three fields the first may be the secret (`s3cret:read`): it is named only by number then.
      const label = fields.length >= 3 && name ? ` ("${name}")` : '';
      throw new ConfigError(`HERALD_API_KEYS: entry ${i + 1}${label} must be name:secret:scopes`);
    }
    // A key is presented as `Bearer <key>` with no white space in it: such a secret could never authenticate.
    if (/\s/.test(secret))
      throw new ConfigError(`HERALD_API_KEYS: the secret of key "${name}" holds white space, which no request can send`);
    // Header values travel as bytes, and clients encode other characters differently (UTF-8, Latin-1, or not at all):
    // such a key authenticated one client and not the next, and the console cannot send it.
    if (!/^[\x21-\x7e]+$/.test(secret))
      throw new ConfigError(
        `HERALD_API_KEYS: the secret of key "${name}" holds characters other than visible ASCII, which requests do not send alike; use letters, digits and punctuation`,
      );
    const scopes = scopeList.split(/[+| ]/).filter(Boolean);
    const unknown = scopes.filter((s) => !SCOPES.includes(s as Scope));
    if (unknown.length > 0 || scopes.length === 0) {
      throw new ConfigError(
        `HERALD_API_KEYS: key "${name}" has unknown scope(s) ${unknown.map((u) => shownScope(u, scopes.indexOf(u))).join(', ') || '(none)'}; use publish, read, admin`,
      );
    }
    if (names.has(name)) throw new ConfigError(`HERALD_API_KEYS: key name "${name}" appears twice`);
    names.add(name);
    // A secret shared by two keys would authenticate as only one of them (its scopes, its name in the logs).
    const hashed = digest(secret);
    const hex = hashed.toString('hex');
    if (secrets.has(hex)) throw new ConfigError(`HERALD_API_KEYS: key "${name}" has the secret of another key`);
    secrets.add(hex);
    return { name, digest: hashed, scopes: new Set(scopes as Scope[]), short: secret.length < SHORT_SECRET };
  });
}

function digest(secret: string): Buffer {
  return createHash('sha256').update(secret, 'utf8').digest();
}

/**
 * The scope a route needs, declared where the route is mounted (`requireScope` in `./routing`);
 * `none` for routes open to all: health, the contract, the docs page and the delivery callbacks,
 * which the unguessable delivery id authorises.
 */
export type RouteScope = Scope | 'none';

/** `read` is granted by `read` or `admin`; other scopes only by themselves. */
function grants(key: ApiKey, scope: Scope): boolean {
  return key.scopes.has(scope) || (scope === 'read' && key.scopes.has('admin'));
}

/**
 * Checks a request's `Authorization` header against the scope of the route it matched. Open when
 * no keys are configured (start-up has already refused that on a non-loopback address unless
 * explicitly allowed). Every key is compared, in constant time, so timing reveals nothing.
 * @throws AppError `unauthorized` (401) for a missing or unknown key, `forbidden` (403) for a key without the scope
 */
export function createAuthorizer(keys: ApiKey[]) {
  return function authorize(scope: Scope, authorization: string | undefined, rawHeaders?: readonly string[]): ApiKey | null {
    if (keys.length === 0) return null;
    // Node keeps the first of repeated Authorization headers; a proxy may act on the last: which key speaks for the
    // request must not depend on that, so more than one is refused.
    if (rawHeaders && countHeader(rawHeaders, 'authorization') > 1) {
      throw new AppError('unauthorized', 'send one Authorization header, not several', {
        details: [{ attribute: 'authorization', message: 'repeated header' }],
        headers: { 'www-authenticate': 'Bearer realm="herald", error="invalid_request"' },
      });
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!match) {
      throw new AppError('unauthorized', 'this endpoint needs an API key: send Authorization: Bearer <key>', {
        headers: { 'www-authenticate': 'Bearer realm="herald"' },
      });
    }
    const presented = digest(match[1]!);
    let found: ApiKey | null = null;
    for (const key of keys) if (timingSafeEqual(key.digest, presented)) found = key;
    if (!found) {
      throw new AppError('unauthorized', 'the API key is not valid', {
        headers: { 'www-authenticate': 'Bearer realm="herald", error="invalid_token"' },
      });
    }
    if (!grants(found, scope)) {
      throw new AppError('forbidden', `API key "${found.name}" lacks the "${scope}" scope this endpoint needs`, {
        details: [{ attribute: 'authorization', message: `required scope: ${scope}` }],
      });
    }
    return found;
  };
}
export type Authorizer = ReturnType<typeof createAuthorizer>;

/** How many times a header (lower-case `name`) appears in `IncomingMessage.rawHeaders`. */
function countHeader(rawHeaders: readonly string[], name: string): number {
  let n = 0;
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.length === name.length && rawHeaders[i]!.toLowerCase() === name) n++;
  return n;
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/**
 * Whether a listen address is loopback, in any spelling: `LOCALHOST`, `localhost.`, `[::1]`, `::1%lo`,
 * `0:0:0:0:0:0:0:1`, `::ffff:7f00:1` (re-probe: compared as strings, these were refused as exposed).
 */
export function isLoopback(host: string): boolean {
  const bare = host
    .replace(/^\[(.*)\]$/, '$1')
    .replace(/%.*$/, '')
    .replace(/\.$/, '')
    .toLowerCase();
  if (bare === 'localhost') return true;
  const family = net.isIP(bare);
  return family !== 0 && LOOPBACK.check(bare, family === 4 ? 'ipv4' : 'ipv6');
}

/** An open gateway is allowed only on loopback, unless the operator says otherwise. */
export function checkExposure(host: string, keys: ApiKey[], allowUnauthenticated: boolean): void {
  if (keys.length > 0 || allowUnauthenticated || isLoopback(host)) return;
  throw new ConfigError(
    `refusing to listen on ${host} without API keys: set HERALD_API_KEYS (name:secret:scopes), or HERALD_ALLOW_UNAUTHENTICATED=true to run open`,
  );
}

/**
 * An unknown scope as a refusal names it: by its value only when that is a scope in other letter case;
 * otherwise by its place, since it may be a secret pasted without its `name:` (after a `,` it is read as
 * a scope of the key before; security probe: `ops:s3cret:admin,S3cretReaderKey222` printed the second).
 */
const shownScope = (scope: string, at: number): string =>
  SCOPES.includes(scope.toLowerCase() as Scope) ? `"${scope}" (scopes are lower case)` : `number ${at + 1} (not shown: it may be a secret)`;
