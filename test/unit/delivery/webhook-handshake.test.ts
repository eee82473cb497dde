import {
  allowedRate,
  carriesAccessToken,
  grantsOrigin,
  handshakeHeaders,
  judgeHandshake,
  requestOrigin,
  requestRatePerMinute,
  sinkForLog,
} from '../../../src/webhook-policy';

/** CloudEvents http-webhook §4 (abuse protection): the validation request and what answers mean. */

describe('the validation request', () => {
  it('names the host of HERALD_PUBLIC_URL as its origin, without port or path', () => {
    expect(requestOrigin('https://herald.example.com:8443/base')).toBe('herald.example.com');
    expect(requestOrigin('http://[::1]:3000')).toBe('[::1]');
  });

  it('asks for the rate limit in requests per minute, rounded up, only when there is one', () => {
    expect(requestRatePerMinute(undefined)).toBeUndefined();
    expect(requestRatePerMinute(2)).toBe(120);
    expect(requestRatePerMinute(0.01)).toBe(1);
    expect(requestRatePerMinute(0.5)).toBe(30);
    expect(
      handshakeHeaders({ origin: 'h.example', callbackUrl: 'https://h.example/validations/t', sink: 'https://s.example/?a=1' }),
    ).toEqual({
      'webhook-request-origin': 'h.example',
      'webhook-request-callback': 'https://h.example/validations/t',
    });
    expect(
      handshakeHeaders({ origin: 'h.example', perSecond: 1, callbackUrl: 'x', sink: 'https://s.example/' })['webhook-request-rate'],
    ).toBe('60');
    expect(handshakeHeaders({ origin: 'h.example', callbackUrl: 'x', sink: 'https://s.example/?access_token=t' })['cache-control']).toBe(
      'no-store',
    );
  });
});

describe('a sink with access_token in its query (http-webhook §3.2)', () => {
  it('is told by the parameter of its query, before any fragment', () => {
    expect(carriesAccessToken('https://s.example/hook?access_token=t')).toBe(true);
    expect(carriesAccessToken('https://s.example/hook?p=q&access_token=t')).toBe(true);
    expect(carriesAccessToken('https://s.example/hook?my_access_token=t')).toBe(false);
    expect(carriesAccessToken('https://s.example/hook#?access_token=t')).toBe(false);
    expect(carriesAccessToken('https://s.example/hook?p=q#&access_token=t')).toBe(false);
    // The query starts at the first `?`: this one's only parameter is `a`, whose value holds the text.
    expect(carriesAccessToken('https://s.example/hook?a=b?access_token=t')).toBe(false);
  });
});

describe('a sink as log lines show it', () => {
  it('hides every access_token value and a password, keeping the rest to tell the sink by', () => {
    expect(sinkForLog('https://s.example/hook?access_token=t0k3n')).toBe('https://s.example/hook?access_token=***');
    expect(sinkForLog('https://s.example/hook?p=q&access_token=t0k3n&r=s')).toBe('https://s.example/hook?p=q&access_token=***&r=s');
    expect(sinkForLog('https://s.example/hook?access_token=a&access_token=b#f')).toBe(
      'https://s.example/hook?access_token=***&access_token=***#f',
    );
    expect(sinkForLog('https://user:pw@s.example:8443/hook?x=1')).toBe('https://user:***@s.example:8443/hook?x=1');
    expect(sinkForLog('http://127.0.0.1:9000/hooks/orders?my_access_token=kept')).toBe(
      'http://127.0.0.1:9000/hooks/orders?my_access_token=kept',
    );
    expect(sinkForLog('https://s.example/hook#access_token=fragment')).toBe('https://s.example/hook#access_token=fragment');
  });
});

describe('consent', () => {
  it('is WebHook-Allowed-Origin equal to the origin (case-insensitive) or *', () => {
    expect(grantsOrigin({ 'webhook-allowed-origin': 'h.example' }, 'h.example')).toBe(true);
    expect(grantsOrigin({ 'webhook-allowed-origin': 'H.Example' }, 'h.example')).toBe(true);
    expect(grantsOrigin({ 'webhook-allowed-origin': '*' }, 'h.example')).toBe(true);
    expect(grantsOrigin({ 'webhook-allowed-origin': 'other.example' }, 'h.example')).toBe(false);
    expect(grantsOrigin({}, 'h.example')).toBe(false);
  });

  it('reads WebHook-Allowed-Rate as requests per minute, * as no limit, anything else as absent', () => {
    expect(allowedRate('120')).toEqual({ perSecond: 2 });
    expect(allowedRate('30')).toEqual({ perSecond: 0.5 });
    expect(allowedRate('*')).toBeNull();
    expect(allowedRate(undefined)).toBeUndefined();
    expect(allowedRate('0')).toBeUndefined();
    expect(allowedRate('fast')).toBeUndefined();
  });

  it.each([
    [{ status: 200, headers: { 'webhook-allowed-origin': 'h.example', 'webhook-allowed-rate': '60' } }, 'consent'],
    [{ status: 204, headers: { 'webhook-allowed-origin': '*' } }, 'consent'],
    [{ status: 200, headers: {} }, 'wait'],
    [{ status: 200, headers: { 'webhook-allowed-origin': 'evil.example' } }, 'wait'],
    [{ status: 403, headers: { 'webhook-allowed-origin': 'h.example' } }, 'refused'],
    [{ status: 405 }, 'refused'],
    [{ status: null, error: 'ECONNREFUSED' }, 'refused'],
  ])('judges %j as %s (the status alone never consents)', (answer, kind) => {
    expect(judgeHandshake(answer, 'h.example').kind).toBe(kind);
  });

  it('carries the allowed rate with the consent', () => {
    expect(judgeHandshake({ status: 200, headers: { 'webhook-allowed-origin': '*', 'webhook-allowed-rate': '60' } }, 'h')).toEqual({
      kind: 'consent',
      rateLimit: { perSecond: 1 },
    });
  });
});
