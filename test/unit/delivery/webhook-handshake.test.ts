import {
  allowedRate,
  carriesAccessToken,
  grantsOrigin,
  handshakeHeaders,
  judgeHandshake,
  requestOrigin,
  requestRatePerMinute,
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
