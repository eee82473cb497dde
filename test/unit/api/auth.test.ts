import { checkExposure, createAuthorizer, isLoopback, parseApiKeys } from '../../../src/api/auth';
import pino from 'pino';
import { logListening } from '../../../src/api/gateway-http';
import { ConfigError, loadConfig } from '../../../src/config';
import { AppError } from '../../../src/errors';

describe('parseApiKeys', () => {
  it('reads name:secret:scopes entries with several scope separators', () => {
    const keys = parseApiKeys('ci:s3cret:publish+read; ops:xyz:admin,reader:r1:read|publish');
    expect(keys.map((k) => [k.name, [...k.scopes].sort()])).toEqual([
      ['ci', ['publish', 'read']],
      ['ops', ['admin']],
      ['reader', ['publish', 'read']],
    ]);
  });

  it('treats a comma-separated token without a colon as another scope of the previous key', () => {
    const keys = parseApiKeys('ci:s3cret:publish,read,ops:xyz:admin');
    expect(keys.map((k) => [k.name, [...k.scopes].sort()])).toEqual([
      ['ci', ['publish', 'read']],
      ['ops', ['admin']],
    ]);
  });

  it('refuses malformed entries and unknown scopes without echoing the secret', () => {
    expect(() => parseApiKeys('ci:topsecret')).toThrow(ConfigError);
    try {
      parseApiKeys('ci:topsecret:superuser');
    } catch (err) {
      expect((err as Error).message).toMatch(/"ci" has unknown scope\(s\) number 1/);
      expect((err as Error).message).not.toMatch(/topsecret/);
    }
    expect(() => parseApiKeys('a:x:read,a:y:read')).toThrow(/appears twice/);
    // A secret pasted without its name after a comma reads as a scope of the key before: it is not printed.
    expect(() => parseApiKeys('ops:S3cretAdminKey111:admin,S3cretReaderKey222')).toThrow(
      'HERALD_API_KEYS: key "ops" has unknown scope(s) number 2 (not shown: it may be a secret); use publish, read, admin',
    );
    // A secret of a few lower-case letters is not shown either; a scope in other letter case is (re-probe).
    expect(() => parseApiKeys('ops:k:admin,abcdefgh')).toThrow(/unknown scope\(s\) number 2 \(not shown/);
    expect(() => parseApiKeys('ops:k:Admin')).toThrow(/unknown scope\(s\) "Admin" \(scopes are lower case\);/);
    // An entry missing its name: its first field is the secret, never printed.
    expect(() => parseApiKeys('sec ret9Q7Z:read')).toThrow(/^HERALD_API_KEYS: entry 1 must be name:secret:scopes$/);
  });

  it('refuses a value that holds no key, and a secret shared by two keys (it would authenticate as one of them only)', () => {
    expect(() => parseApiKeys(';')).toThrow(/holds no key/);
    // Empty too: an empty templated secret ran the gateway open.
    expect(() => parseApiKeys('')).toThrow(/holds no key/);
    expect(() => parseApiKeys('  ')).toThrow(/holds no key/);
    expect(() => parseApiKeys(' , ;')).toThrow(/holds no key/);
    expect(() => parseApiKeys('ops:s3cret:admin,ci:s3cret:read')).toThrow(/"ci" has the secret of another key/);
    expect(() => parseApiKeys('ops:s3cret:admin,ci:s3cret:read')).not.toThrow(/s3cret/);
  });

  it('refuses a secret holding characters other than visible ASCII, which clients send differently (probe: a key no client could send started)', () => {
    for (const raw of ['ops:café-key:admin', 'ops:ключ-key:admin', 'ops:bell\u0007key:admin', 'ops:del\u007fkey:admin']) {
      expect(() => parseApiKeys(raw)).toThrow(/"ops" holds characters other than visible ASCII/);
      expect(() => parseApiKeys(raw)).not.toThrow(/key:/);
    }
    expect(parseApiKeys('ops:Az09-._~+/=!#$%&*?@^`|{}[]<>():admin')).toHaveLength(1);
  });

  it('refuses a secret holding white space, which no Authorization header can carry', () => {
    for (const raw of ['ops: s3cret :admin', 'ops:s3 cret:admin', 'ops:s3cret\t:admin']) {
      expect(() => parseApiKeys(raw)).toThrow(/"ops" holds white space/);
      expect(() => parseApiKeys(raw)).not.toThrow(/s3/);
    }
  });

  it('returns no keys when unset', () => {
    expect(parseApiKeys(undefined)).toEqual([]);
  });
});

describe('createAuthorizer', () => {
  const authorize = createAuthorizer(parseApiKeys('pub:p1:publish,adm:a1:admin,rd:r1:read'));
  const statusOf = (fn: () => unknown) => {
    try {
      fn();
      return 200;
    } catch (err) {
      return (err as AppError).status;
    }
  };

  it('answers 401 with WWW-Authenticate when the key is missing or wrong', () => {
    try {
      authorize('publish', undefined);
      throw new Error('expected a 401');
    } catch (err) {
      expect((err as AppError).status).toBe(401);
      expect((err as AppError).headers?.['www-authenticate']).toMatch(/^Bearer/);
    }
    expect(statusOf(() => authorize('publish', 'Bearer nope'))).toBe(401);
    expect(statusOf(() => authorize('publish', 'Basic cDE='))).toBe(401);
  });

  it('answers 403 for a key without the scope', () => {
    expect(statusOf(() => authorize('publish', 'Bearer r1'))).toBe(403);
    expect(statusOf(() => authorize('admin', 'Bearer p1'))).toBe(403);
    expect(statusOf(() => authorize('admin', 'Bearer r1'))).toBe(403);
    expect(statusOf(() => authorize('read', 'Bearer p1'))).toBe(403);
    expect(statusOf(() => authorize('publish', 'Bearer a1'))).toBe(403);
  });

  it('grants publish, read (to read and admin keys) and admin', () => {
    expect(statusOf(() => authorize('publish', 'Bearer p1'))).toBe(200);
    expect(statusOf(() => authorize('read', 'Bearer r1'))).toBe(200);
    expect(statusOf(() => authorize('read', 'Bearer a1'))).toBe(200);
    expect(statusOf(() => authorize('admin', 'bearer a1'))).toBe(200);
  });

  it('is open when no keys are configured', () => {
    expect(createAuthorizer([])('admin', undefined)).toBeNull();
  });
});

describe('checkExposure', () => {
  it('recognises loopback addresses', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost']) expect(isLoopback(host)).toBe(true);
    for (const host of ['0.0.0.0', '::', '10.0.0.1', 'example.com']) expect(isLoopback(host)).toBe(false);
    // Other spellings of loopback (re-probe: refused as exposed), and near misses.
    for (const host of ['LOCALHOST', 'localhost.', '::1%lo', '[::1%lo]', '0:0:0:0:0:0:0:1', '::0:1', '::ffff:7f00:1', '::ffff:127.0.0.1'])
      expect(isLoopback(host)).toBe(true);
    for (const host of ['::2', '128.0.0.1', '::ffff:10.0.0.1', 'localhost.example.com']) expect(isLoopback(host)).toBe(false);
  });

  it('refuses an open gateway on a non-loopback address unless allowed', () => {
    expect(() => checkExposure('0.0.0.0', [], false)).toThrow(/HERALD_API_KEYS/);
    expect(() => checkExposure('0.0.0.0', [], true)).not.toThrow();
    expect(() => checkExposure('0.0.0.0', parseApiKeys('a:b:read'), false)).not.toThrow();
    expect(() => checkExposure('127.0.0.1', [], false)).not.toThrow();
  });
});

describe('short secrets', () => {
  it('are warned about at start, by key name, never by secret (failed keys are not throttled: a probe guessed 5,536 in 3 s)', () => {
    const keys = parseApiKeys('ci:abc:publish; ops:0123456789abcdef:admin; two:short2:read');
    expect(keys.map((k) => [k.name, k.short])).toEqual([
      ['ci', true],
      ['ops', false],
      ['two', true],
    ]);
    const lines: { level: number; msg: string; apiKeys?: string[] }[] = [];
    const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    logListening(log, loadConfig({}), 'http://127.0.0.1:1', keys);
    const warned = lines.filter((l) => l.level === 40);
    expect(warned).toEqual([
      expect.objectContaining({ apiKeys: ['ci', 'two'], msg: expect.stringMatching(/shorter than 16 characters \(ci, two\)/) }),
    ]);
    expect(JSON.stringify(lines)).not.toMatch(/abc|short2/);
    lines.length = 0;
    logListening(log, loadConfig({}), 'http://127.0.0.1:1', parseApiKeys('ops:0123456789abcdef:admin'));
    expect(lines.filter((l) => l.level === 40)).toEqual([]);
  });
});
