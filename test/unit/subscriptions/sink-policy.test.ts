import dns from 'node:dns';
import { loadConfig } from '../../../src/config';
import { AppError } from '../../../src/errors';
import { guardedLookup, refuseLiteral, restrictedKind, SINK_NOT_ALLOWED, SinkNotAllowedError } from '../../../src/sink-guard';
import { createSinkPolicy } from '../../../src/subscriptions/sink-policy';

/** SSRF protection: which addresses a sink may not reach when HERALD_SINK_ALLOW_PRIVATE=false. No traffic is sent. */

describe('HERALD_SINK_ALLOW_PRIVATE', () => {
  it('defaults to true and reads "false" as false', () => {
    expect(loadConfig({}).sinkAllowPrivate).toBe(true);
    expect(loadConfig({ HERALD_SINK_ALLOW_PRIVATE: '' }).sinkAllowPrivate).toBe(true);
    expect(loadConfig({ HERALD_SINK_ALLOW_PRIVATE: 'false' }).sinkAllowPrivate).toBe(false);
    expect(loadConfig({ HERALD_SINK_ALLOW_PRIVATE: '0' }).sinkAllowPrivate).toBe(false);
    expect(() => loadConfig({ HERALD_SINK_ALLOW_PRIVATE: 'maybe' })).toThrow(/HERALD_SINK_ALLOW_PRIVATE/);
  });
});

describe('restrictedKind', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['fc00::1', 'private'],
    ['fd12:3456::1', 'private'],
    ['::ffff:10.1.2.3', 'private'],
    ['169.254.169.254', 'link-local'],
    ['169.254.0.1', 'link-local'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['0.0.0.0', 'unspecified'],
    ['::', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'multicast'],
    ['100.100.100.200', 'private'],
    ['198.18.0.1', 'private'],
    ['fec0::1', 'private'],
    ['64:ff9b::a9fe:a9fe', 'link-local'], // NAT64 form of 169.254.169.254
    ['64:ff9b::127.0.0.1', 'loopback'],
    ['2002:7f00:1::', 'loopback'], // 6to4 form of 127.0.0.1
    ['2002:c0a8:101::1', 'private'],
    // Probe: these reached a sink through the check.
    ['::127.0.0.1', 'loopback'], // IPv4-compatible
    ['::ffff:0:127.0.0.1', 'loopback'], // SIIT IPv4-translated
    ['::ffff:0:a9fe:a9fe', 'link-local'],
    ['64:ff9b:1::7f00:1', 'private'], // RFC 8215 local-use translation prefix
    ['2001:0:4136:e378:8000:63bf:80ff:fffe', 'loopback'], // Teredo, client 127.0.0.1 (inverted)
    // Security probe: accepted as a sink. IETF protocol assignments (RFC 6890, not globally reachable), where Oracle
    // Cloud Classic serves instance metadata (192.0.0.192).
    ['192.0.0.192', 'private'],
    ['192.0.0.8', 'private'],
    ['::ffff:192.0.0.192', 'private'],
    ['64:ff9b::c000:c0', 'private'],
  ])('%s is %s', (ip, kind) => {
    expect(restrictedKind(ip)).toBe(kind);
  });

  it.each([
    '8.8.8.8',
    '203.0.113.5',
    '172.32.0.1',
    '172.15.255.255',
    '192.169.0.1',
    '192.0.1.1',
    '191.255.255.255',
    '169.255.0.1',
    '2001:db8::1',
    '2606:4700::1111',
    '64:ff9b::808:808',
    '2002:808:808::1',
    '::808:808',
    '::ffff:0:808:808',
    '2001:0:4136:e378:8000:63bf:f7f7:f7f7', // Teredo, client 8.8.8.8
  ])('%s is allowed', (ip) => {
    expect(restrictedKind(ip)).toBeNull();
  });

  it('is null for anything that is not an IP address', () => {
    expect(restrictedKind('localhost')).toBeNull();
    expect(restrictedKind('[::1]')).toBeNull();
  });
});

describe('refuseLiteral', () => {
  it('checks IP literals, bracketed IPv6 included, and leaves names alone', () => {
    expect(refuseLiteral('[::1]')).toBeInstanceOf(SinkNotAllowedError);
    expect(refuseLiteral('10.0.0.1')!.message).toBe('10.0.0.1 is a private address, and HERALD_SINK_ALLOW_PRIVATE=false refuses it');
    expect(refuseLiteral('203.0.113.5')).toBeUndefined();
    expect(refuseLiteral('localhost')).toBeUndefined();
  });
});

describe('guardedLookup', () => {
  const fakeDns = (answers: dns.LookupAddress[]) =>
    ((_host: string, _options: unknown, callback: (err: Error | null, addresses: dns.LookupAddress[]) => void) =>
      callback(null, answers)) as unknown as typeof dns.lookup;
  const run = (answers: dns.LookupAddress[], all: boolean) =>
    new Promise<{ err: NodeJS.ErrnoException | null; address: unknown; family?: number }>((resolve) =>
      guardedLookup(fakeDns(answers))('sink.example', { all }, (err, address, family) => resolve({ err, address, family })),
    );

  it('passes allowed addresses through, as one address or all of them', async () => {
    const answers = [
      { address: '203.0.113.5', family: 4 },
      { address: '2001:db8::1', family: 6 },
    ];
    expect(await run(answers, false)).toEqual({ err: null, address: '203.0.113.5', family: 4 });
    expect(await run(answers, true)).toMatchObject({ err: null, address: answers });
  });

  it('fails when any address is restricted, naming it', async () => {
    const { err } = await run(
      [
        { address: '203.0.113.5', family: 4 },
        { address: '169.254.169.254', family: 4 },
      ],
      true,
    );
    expect(err).toBeInstanceOf(SinkNotAllowedError);
    expect(err!.code).toBe(SINK_NOT_ALLOWED);
    expect(err!.message).toBe(
      'sink.example resolves to 169.254.169.254, which is a link-local address, and HERALD_SINK_ALLOW_PRIVATE=false refuses it',
    );
  });
});

describe('createSinkPolicy', () => {
  const lookup = async (host: string) =>
    ({ 'rebind.example': ['203.0.113.5', '127.0.0.1'], 'public.example': ['203.0.113.5'] })[host] ?? [];

  it('allows everything when private sinks are allowed, without looking anything up', async () => {
    const policy = createSinkPolicy({ allowPrivate: true, lookup: () => Promise.reject(new Error('no lookups')) });
    await expect(policy.check('http://127.0.0.1:9/hook')).resolves.toBeUndefined();
    await expect(policy.check('http://localhost/')).resolves.toBeUndefined();
  });

  it('refuses a restricted literal or a name resolving to one (any address) with 400 sink_not_allowed naming sink', async () => {
    const policy = createSinkPolicy({ allowPrivate: false, lookup });
    for (const sink of [
      'http://127.0.0.1:9/hook',
      'http://[::1]:9/',
      'http://169.254.169.254/latest/meta-data/',
      'https://rebind.example/',
    ]) {
      const err: AppError = await policy.check(sink).then(
        () => {
          throw new Error(`${sink} was allowed`);
        },
        (e: AppError) => e,
      );
      expect([sink, err.code, err.status, err.details[0]!.attribute]).toEqual([sink, 'sink_not_allowed', 400, 'sink']);
    }
    await expect(policy.check('https://public.example/hook')).resolves.toBeUndefined();
    await expect(policy.check('http://203.0.113.5/')).resolves.toBeUndefined();
    // Unresolvable now: accepted, since every connection is checked again.
    await expect(policy.check('http://nowhere.example/')).resolves.toBeUndefined();
  });
});
