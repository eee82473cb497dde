import { ConfigError, configBounds, configDocs, configWarnings, loadConfig } from '../../src/config';

describe('loadConfig', () => {
  it('applies the documented defaults to an empty environment', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      host: '127.0.0.1',
      port: 8080,
      dataDir: './data',
      fsync: 'always',
      fsyncIntervalMs: 50,
      partitions: 16,
      maxBodyBytes: 1024 * 1024,
      segmentBytes: 64 * 1024 * 1024,
      idempotencyWindowMs: 7 * 24 * 3600 * 1000,
      allowUnauthenticated: false,
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('treats empty strings as unset rather than zero', () => {
    expect(loadConfig({ HERALD_PORT: '', HERALD_PARTITIONS: ' ' }).port).toBe(8080);
  });

  it('reads "false" as false for booleans', () => {
    expect(loadConfig({ HERALD_ALLOW_UNAUTHENTICATED: 'false' }).allowUnauthenticated).toBe(false);
    expect(loadConfig({ HERALD_ALLOW_UNAUTHENTICATED: 'true' }).allowUnauthenticated).toBe(true);
  });

  it('reads whole numbers in decimal digits only (no hex, exponent or fraction read as another number)', () => {
    expect(loadConfig({ HERALD_PORT: ' 8081 ', HERALD_PARTITIONS: '16' })).toMatchObject({ port: 8081, partitions: 16 });
    for (const [name, value] of <[string, string][]>[
      ['HERALD_PORT', '0x1F90'],
      ['HERALD_PORT', '1e3'],
      ['HERALD_PARTITIONS', '1e1'],
      ['HERALD_PARTITIONS', '0x10'],
      ['HERALD_PARTITIONS', '16.0'],
      ['HERALD_SHUTDOWN_TIMEOUT_MS', '1e5'],
      ['HERALD_PARTITIONS', '-1'],
    ])
      expect(() => loadConfig({ [name]: value })).toThrow(new RegExp(`${name}: expected a whole number in decimal digits`));
  });

  it('says a HERALD_PUBLIC_URL must be an http or https URL (one that is no URL at all included)', () => {
    for (const url of ['ftp://x', 'x', 'herald.example.com', 'http//herald.example'])
      expect(() => loadConfig({ HERALD_PUBLIC_URL: url })).toThrow(
        new ConfigError('invalid configuration: HERALD_PUBLIC_URL: must be an http or https URL, such as https://herald.example.com'),
      );
  });

  it('refuses a HERALD_PUBLIC_URL whose path begins with //, which would make Location name another host', () => {
    for (const url of ['http://h//double/', 'http://h/\\\\evil.example/x']) {
      expect(() => loadConfig({ HERALD_PUBLIC_URL: url })).toThrow(/HERALD_PUBLIC_URL: must not have a path beginning with \/\//);
    }
    expect(loadConfig({ HERALD_PUBLIC_URL: 'http://h/a//b/' }).publicUrl).toBe('http://h/a//b');
    expect(loadConfig({ HERALD_PUBLIC_URL: 'http://h//' }).publicUrl).toBe('http://h'); // only slashes: no path at all
  });

  it('refuses a HERALD_PUBLIC_URL that callback paths cannot be appended to', () => {
    expect(loadConfig({ HERALD_PUBLIC_URL: 'https://herald.example/api/' }).publicUrl).toBe('https://herald.example/api');
    // Read as a URL parser reads it: receivers resolve the ack URLs built on it the same way.
    expect(loadConfig({ HERALD_PUBLIC_URL: 'http://h/a/..' }).publicUrl).toBe('http://h');
    expect(loadConfig({ HERALD_PUBLIC_URL: 'http://h/a\\' }).publicUrl).toBe('http://h/a');
    expect(loadConfig({ HERALD_PUBLIC_URL: 'http://:@h/' }).publicUrl).toBe('http://h');
    // A bare ? or # too (was accepted: ack URLs then pointed at /).
    for (const url of [
      'http://herald.example/api?tenant=a',
      'http://herald.example/#x',
      'http://user:pw@herald.example/',
      'http://herald.example/?',
      'http://herald.example/api#',
    ])
      expect(() => loadConfig({ HERALD_PUBLIC_URL: url })).toThrow(/HERALD_PUBLIC_URL: must be a base URL without a query/);
  });

  it('parses idempotency windows with units', () => {
    expect(loadConfig({ HERALD_IDEMPOTENCY_WINDOW: '12h' }).idempotencyWindowMs).toBe(12 * 3600 * 1000);
    expect(loadConfig({ HERALD_IDEMPOTENCY_WINDOW: '1500' }).idempotencyWindowMs).toBe(1500);
    expect(loadConfig({ HERALD_IDEMPOTENCY_WINDOW: '36500d' }).idempotencyWindowMs).toBe(36_500 * 86_400_000);
  });

  it('refuses an idempotency window under 1s or past any number (were accepted: 0 stored every resend again)', () => {
    for (const window of ['0', '999', `${'9'.repeat(400)}d`, '36501d', '107000d'])
      expect(() => loadConfig({ HERALD_IDEMPOTENCY_WINDOW: window })).toThrow(/HERALD_IDEMPOTENCY_WINDOW: /);
  });

  it('refuses a duration past 2^53 ms instead of rounding it (ops probe: 99999999999999999999999 was taken)', () => {
    for (const name of ['HERALD_RETENTION', 'HERALD_IDEMPOTENCY_WINDOW'])
      expect(() => loadConfig({ [name]: '99999999999999999999999' })).toThrow(new RegExp(`${name}: must be at most 9007199254740991 ms`));
    expect(loadConfig({ HERALD_RETENTION: '9007199254740991' }).retentionMs).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('takes an IP address or a host name for HERALD_HOST, and says so of anything else (ops probe: "not a host" was refused as not loopback)', () => {
    for (const host of ['127.0.0.1', '::1', '[::1]', '0.0.0.0', 'localhost', 'herald-1.internal', 'herald.example.com.'])
      expect(loadConfig({ HERALD_HOST: host, HERALD_ALLOW_UNAUTHENTICATED: 'true' }).host).toBe(host.replace(/^\[(.*)\]$/, '$1'));
    for (const host of ['not a host', '999.1.1.1', '127.0.0.1:8080', 'http://127.0.0.1', '-x', 'a..b'])
      expect(() => loadConfig({ HERALD_HOST: host })).toThrow(/HERALD_HOST: expected an IP address/);
  });

  it('names every bad variable in one message', () => {
    expect(() => loadConfig({ HERALD_PORT: 'eighty', HERALD_FSYNC: 'sometimes' })).toThrow(ConfigError);
    try {
      loadConfig({ HERALD_PORT: 'eighty', HERALD_FSYNC: 'sometimes' });
    } catch (err) {
      expect((err as Error).message).toMatch(/HERALD_PORT/);
      expect((err as Error).message).toMatch(/HERALD_FSYNC/);
      expect((err as Error).message).not.toMatch(/\n/);
    }
  });

  it('refuses a body limit under the 64 KiB the spec requires intermediaries to forward', () => {
    expect(() => loadConfig({ HERALD_MAX_BODY_BYTES: '1000' })).toThrow(/HERALD_MAX_BODY_BYTES/);
  });

  it('reads every size setting as plain bytes or with a KiB, MiB or GiB suffix', () => {
    const sizes = [
      ['HERALD_MAX_BODY_BYTES', 'maxBodyBytes'],
      ['HERALD_SEGMENT_BYTES', 'segmentBytes'],
      ['HERALD_MAX_LOG_BYTES', 'maxLogBytes'],
      ['HERALD_MIN_FREE_BYTES', 'minFreeBytes'],
    ] as const;
    for (const [name, field] of sizes) {
      expect(loadConfig({ [name]: '1048576' })[field]).toBe(1024 * 1024);
      expect(loadConfig({ [name]: '512KiB' })[field]).toBe(512 * 1024);
      expect(loadConfig({ [name]: '64MiB' })[field]).toBe(64 * 1024 * 1024);
      expect(loadConfig({ [name]: '2MiB' })[field]).toBe(2 * 1024 * 1024);
    }
    expect(loadConfig({ HERALD_SEGMENT_BYTES: '1GiB' }).segmentBytes).toBe(1024 ** 3);
    expect(loadConfig({ HERALD_SEGMENT_BYTES: '4GiB' }).segmentBytes).toBe(4 * 1024 ** 3);
    expect(loadConfig({ HERALD_MAX_LOG_BYTES: '100GiB' }).maxLogBytes).toBe(100 * 1024 ** 3);
    expect(loadConfig({ HERALD_MIN_FREE_BYTES: '1GiB' }).minFreeBytes).toBe(1024 ** 3);
    expect(loadConfig({ HERALD_MAX_BODY_BYTES: '64KiB' }).maxBodyBytes).toBe(64 * 1024);
  });

  it.each(['64MB', '64mib', '64 MiB', '1.5GiB', '-1', 'MiB', '64KB', 'lots', '0x100'])(
    'refuses the size %s with a clear message',
    (value) => {
      for (const name of ['HERALD_MAX_BODY_BYTES', 'HERALD_SEGMENT_BYTES', 'HERALD_MAX_LOG_BYTES', 'HERALD_MIN_FREE_BYTES']) {
        expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
        expect(() => loadConfig({ [name]: value })).toThrow(`${name}: expected bytes or a size such as 64MiB, 1GiB`);
      }
    },
  );

  it('keeps the limits of the size settings, with a readable message', () => {
    expect(() => loadConfig({ HERALD_MAX_BODY_BYTES: '63KiB' })).toThrow('HERALD_MAX_BODY_BYTES: must be at least 64KiB');
    expect(() => loadConfig({ HERALD_MAX_BODY_BYTES: '257MiB' })).toThrow('HERALD_MAX_BODY_BYTES: must be at most 256MiB');
    expect(() => loadConfig({ HERALD_SEGMENT_BYTES: '1024' })).toThrow('HERALD_SEGMENT_BYTES: must be at least 64KiB');
    expect(() => loadConfig({ HERALD_SEGMENT_BYTES: '5GiB' })).toThrow('HERALD_SEGMENT_BYTES: must be at most 4GiB');
    expect(loadConfig({ HERALD_MAX_BODY_BYTES: '256MiB' }).maxBodyBytes).toBe(256 * 1024 * 1024);
    expect(loadConfig({ HERALD_MAX_LOG_BYTES: '0', HERALD_MIN_FREE_BYTES: '0' })).toMatchObject({ maxLogBytes: 0, minFreeBytes: 0 });
  });

  it('defaults the storage settings', () => {
    expect(loadConfig({})).toMatchObject({ retentionMs: 7 * 24 * 3600 * 1000, maxLogBytes: 0, minFreeBytes: 268435456 });
    expect(loadConfig({ HERALD_RETENTION: '', HERALD_MAX_LOG_BYTES: '', HERALD_MIN_FREE_BYTES: ' ' })).toMatchObject({
      retentionMs: 7 * 24 * 3600 * 1000,
      maxLogBytes: 0,
      minFreeBytes: 256 * 1024 * 1024,
    });
  });

  it('parses HERALD_RETENTION with units', () => {
    expect(loadConfig({ HERALD_RETENTION: '30s' }).retentionMs).toBe(30 * 1000);
    expect(loadConfig({ HERALD_RETENTION: '90m' }).retentionMs).toBe(90 * 60 * 1000);
    expect(loadConfig({ HERALD_RETENTION: '12h' }).retentionMs).toBe(12 * 3600 * 1000);
    expect(loadConfig({ HERALD_RETENTION: '7d' }).retentionMs).toBe(7 * 24 * 3600 * 1000);
    expect(loadConfig({ HERALD_RETENTION: '1500' }).retentionMs).toBe(1500);
    expect(() => loadConfig({ HERALD_RETENTION: 'forever' })).toThrow(/HERALD_RETENTION: expected milliseconds or a duration/);
    // 0 would delete every event as soon as it is stored.
    expect(() => loadConfig({ HERALD_RETENTION: '0' })).toThrow(/HERALD_RETENTION: must be at least 1s/);
    expect(() => loadConfig({ HERALD_RETENTION: '999ms' })).toThrow(/HERALD_RETENTION: must be at least 1s/);
    expect(loadConfig({ HERALD_RETENTION: '1s' }).retentionMs).toBe(1000);
  });

  it('shows defaults in the table as an operator writes them', () => {
    const defaults = Object.fromEntries(configDocs().map((row) => [row.name, row.defaultValue]));
    expect(defaults).toMatchObject({
      HERALD_MAX_BODY_BYTES: '1MiB',
      HERALD_SEGMENT_BYTES: '64MiB',
      HERALD_RETENTION: '7d',
      HERALD_MAX_LOG_BYTES: '0',
      HERALD_MIN_FREE_BYTES: '256MiB',
    });
  });

  it('documents every variable', () => {
    for (const row of configDocs()) expect(row.description.length).toBeGreaterThan(10);
  });

  it('says in the description of each setting the least value it takes, where it refuses 1 as too small', () => {
    const bounded: string[] = [];
    for (const row of configDocs()) {
      let message = '';
      try {
        loadConfig({ [row.name]: '1' });
      } catch (err) {
        message = (err as Error).message;
      }
      const least = new RegExp(`${row.name}: must be at least (\\d+)(KiB|MiB|GiB|s)?\\b`).exec(message);
      if (!least) continue;
      bounded.push(row.name);
      // Sizes as the table's range writes them: `Range: 64KiB to 256MiB.`; durations as they are given: `At least 1s.`
      const expected = least[2] === 's' ? `At least ${least[1]}s.` : `Range: ${least[1]}${least[2] ?? ''} to `;
      expect({ name: row.name, description: row.description }).toEqual({
        name: row.name,
        description: expect.stringContaining(expected),
      });
    }
    expect(bounded).toEqual(expect.arrayContaining(['HERALD_MAX_BODY_BYTES', 'HERALD_SEGMENT_BYTES', 'HERALD_RETENTION']));
  });

  it('states in the table every bound a number or size is refused for, both ends', () => {
    // Was: HERALD_PARTITIONS (at most 4096), HERALD_NATS_REPLICAS (1 to 5), HERALD_MAX_STREAMS (at most 10000),
    // HERALD_SHUTDOWN_TIMEOUT_MS and HERALD_BODY_IDLE_TIMEOUT_MS (at least 100), HERALD_FSYNC_INTERVAL_MS (at most
    // 60000) and the sizes' upper bounds were found only by starting the gateway with a bad value.
    const refusal = (name: string, value: string): string => {
      try {
        loadConfig({ [name]: value });
        return '';
      } catch (err) {
        return (err as Error).message;
      }
    };
    const checked: string[] = [];
    for (const row of configDocs()) {
      const bounds = configBounds(row.name as Parameters<typeof configBounds>[0]);
      const tooSmall = refusal(row.name, '0');
      const tooBig = refusal(row.name, '99999999999999');
      // Numbers (`Too small`, `Too big`) and sizes (`must be at least 64KiB`); durations say theirs in words (above).
      const refusesNumbers = /Too (small|big)|must be at (least|most) \d+(KiB|MiB|GiB| bytes)/.test(tooSmall + tooBig);
      if (!refusesNumbers) continue;
      checked.push(row.name);
      expect({ name: row.name, bounds: bounds !== undefined }).toEqual({ name: row.name, bounds: true });
      if (!bounds) continue;
      expect(row.description).toContain(`Range: ${bounds.text}.`);
      // The range is the one enforced: both ends taken, one past each refused.
      expect(refusal(row.name, String(bounds.min))).toBe('');
      expect(refusal(row.name, String(bounds.max))).toBe('');
      if (bounds.min > 0) expect(refusal(row.name, String(bounds.min - 1))).toContain(row.name);
      expect(refusal(row.name, String(bounds.max + 1))).toContain(row.name);
    }
    expect(checked).toEqual(
      expect.arrayContaining([
        'HERALD_NATS_REPLICAS',
        'HERALD_PARTITIONS',
        'HERALD_MAX_STREAMS',
        'HERALD_SHUTDOWN_TIMEOUT_MS',
        'HERALD_BODY_IDLE_TIMEOUT_MS',
        'HERALD_FSYNC_INTERVAL_MS',
        'HERALD_MAX_BODY_BYTES',
      ]),
    );
  });
});

describe('configWarnings', () => {
  const warningsFor = (env: Record<string, string>) => configWarnings(env, loadConfig(env));

  it('names a HERALD_* variable the gateway does not read, and the CLI key set on the server', () => {
    // Was: ignored without a word, so HERALD_API_KEY=ops:s3cret:admin on the server ran it without keys.
    expect(warningsFor({ HERALD_API_KEY: 'ops:s3cret:admin', HERALD_PARTITION: '4' })).toEqual([
      expect.stringContaining('HERALD_API_KEY is the CLI'),
      expect.stringContaining('HERALD_PARTITION is not a Herald setting'),
    ]);
    expect(warningsFor({ HERALD_API_KEY: 'ops:s3cret:admin' }).join()).not.toContain('s3cret');
  });

  it('is quiet about settings, the CLI variables HERALD_URL and HERALD_TIMEOUT, and the test variables', () => {
    expect(warningsFor({ HERALD_PARTITIONS: '4', HERALD_URL: 'http://x', HERALD_TIMEOUT: '5s', HERALD_TEST_LOG_LEVEL: 'info' })).toEqual(
      [],
    );
  });

  it('names settings of a mode the gateway does not run in: NATS under the local engine, an fsync interval without interval', () => {
    expect(warningsFor({ HERALD_NATS_SERVERS: 'nats://127.0.0.1:4222', HERALD_NATS_REPLICAS: '3' })).toEqual([
      expect.stringContaining('HERALD_NATS_REPLICAS, HERALD_NATS_SERVERS are set, but HERALD_STORE is local'),
    ]);
    expect(warningsFor({ HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: 'nats://127.0.0.1:4222' })).toEqual([]);
    expect(warningsFor({ HERALD_FSYNC_INTERVAL_MS: '20' })).toEqual([
      'HERALD_FSYNC_INTERVAL_MS is set, but HERALD_FSYNC is always: it is read only with HERALD_FSYNC=interval',
    ]);
    expect(warningsFor({ HERALD_FSYNC: 'interval', HERALD_FSYNC_INTERVAL_MS: '20' })).toEqual([]);
    // Blank is unset, as the settings read it (re-probe: '   ' was "set").
    expect(warningsFor({ HERALD_NATS_SERVERS: '   ', HERALD_FSYNC_INTERVAL_MS: '  ' })).toEqual([]);
  });

  it('names settings of the local engine set for a JetStream node, which ignores them', () => {
    // JetStream probe: on a JetStream node HERALD_RETENTION=10s deleted nothing, silently.
    const js = { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: 'nats://127.0.0.1:4222' };
    expect(warningsFor({ ...js, HERALD_DELIVERY: 'on', HERALD_RETENTION: '10s', HERALD_DATA_DIR: '/srv/herald' })).toEqual([
      "HERALD_DATA_DIR, HERALD_RETENTION, HERALD_DELIVERY are set, but HERALD_STORE is jetstream: ignored (the local engine's only)",
    ]);
    expect(warningsFor({ ...js, HERALD_RECOVERY: 'recreate-missing' })).toEqual([]);
    expect(warningsFor({ ...js, HERALD_RECOVERY: 'skip-corrupt,recreate-missing' })).toEqual([
      expect.stringContaining('HERALD_RECOVERY is set, but HERALD_STORE is jetstream: ignored'),
    ]);
    expect(warningsFor({ HERALD_DELIVERY: 'off', HERALD_RETENTION: '10s' })).toEqual([]);
  });

  it('names a heap limit below what ingest may hold (limits probe: --max-old-space-size=64 aborted out of memory under a burst)', () => {
    expect(configWarnings({}, loadConfig({}), 64 * 1024 * 1024)).toEqual([
      expect.stringContaining("the JavaScript heap limit (64 MiB; node's --max-old-space-size sets it) is below what ingest may hold"),
    ]);
    expect(configWarnings({}, loadConfig({ HERALD_INGEST_BUFFER_BYTES: '8MiB' }), 128 * 1024 * 1024)).toEqual([]);
    expect(configWarnings({}, loadConfig({}), 4096 * 1024 * 1024)).toEqual([]);
  });

  it('refuses HERALD_DELIVERY=off on a JetStream node, which would deliver all the same', () => {
    // JetStream probe: such a node made 21,697 of 40,205 deliveries; the switch is for receivers that must not be called.
    const js = { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: 'nats://127.0.0.1:4222' };
    expect(() => loadConfig({ ...js, HERALD_DELIVERY: 'off' })).toThrow(
      /HERALD_DELIVERY: off is not supported with HERALD_STORE=jetstream: every node of a cluster delivers/,
    );
    expect(loadConfig({ HERALD_DELIVERY: 'off' }).deliveryEnabled).toBe(false);
  });

  it('names a missing HERALD_PUBLIC_URL when listening on every interface, where receivers would be given 0.0.0.0', () => {
    for (const host of ['0.0.0.0', '::']) {
      expect(warningsFor({ HERALD_HOST: host })).toEqual([expect.stringContaining('HERALD_PUBLIC_URL is not set')]);
      expect(warningsFor({ HERALD_HOST: host, HERALD_PUBLIC_URL: 'https://herald.example.com' })).toEqual([]);
    }
    expect(warningsFor({ HERALD_HOST: '10.0.0.5' })).toEqual([]);
  });
});

describe('loadConfig: the JetStream engine (HERALD_STORE, HERALD_NATS_*)', () => {
  it('keeps the local engine by default and has no NATS settings then', () => {
    const config = loadConfig({ HERALD_NATS_SERVERS: 'nats://127.0.0.1:4222' });
    expect(config.store).toBe('local');
    expect(config.nats).toBeUndefined();
  });

  it('reads the NATS settings with their defaults', () => {
    const config = loadConfig({
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: ' nats://127.0.0.1:4222, tls://[::1]:4223 ,127.0.0.1:4224',
    });
    expect(config.store).toBe('jetstream');
    expect(config.nats).toEqual({
      servers: ['nats://127.0.0.1:4222', 'tls://[::1]:4223', '127.0.0.1:4224'],
      replicas: 3,
      prefix: 'herald',
    });
    expect(Object.isFrozen(config.nats)).toBe(true);
  });

  it('reads replicas, prefix, credentials and the TLS CA', () => {
    const config = loadConfig({
      HERALD_STORE: 'jetstream',
      HERALD_NATS_SERVERS: 'nats://a:4222',
      HERALD_NATS_REPLICAS: '1',
      HERALD_NATS_PREFIX: 'herald-staging_2',
      HERALD_NATS_CREDS: '/etc/herald/herald.creds',
      HERALD_NATS_TLS_CA: '/etc/herald/ca.pem',
    });
    expect(config.nats).toEqual({
      servers: ['nats://a:4222'],
      replicas: 1,
      prefix: 'herald-staging_2',
      credsFile: '/etc/herald/herald.creds',
      tlsCaFile: '/etc/herald/ca.pem',
    });
  });

  it.each<[string, Record<string, string>, RegExp]>([
    ['no servers', { HERALD_STORE: 'jetstream' }, /HERALD_NATS_SERVERS: required with HERALD_STORE=jetstream/],
    ['only commas', { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: ' , ' }, /HERALD_NATS_SERVERS: required/],
    ['a URL of another scheme', { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: 'http://127.0.0.1:4222' }, /HERALD_NATS_SERVERS/],
    ['a URL with a path', { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: 'nats://h:4222/x' }, /HERALD_NATS_SERVERS/],
    ['zero replicas', { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: 'h:1', HERALD_NATS_REPLICAS: '0' }, /HERALD_NATS_REPLICAS/],
    ['six replicas', { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: 'h:1', HERALD_NATS_REPLICAS: '6' }, /HERALD_NATS_REPLICAS/],
    ['a prefix with a dot', { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: 'h:1', HERALD_NATS_PREFIX: 'a.b' }, /HERALD_NATS_PREFIX/],
    ['an unknown engine', { HERALD_STORE: 'kafka' }, /HERALD_STORE/],
  ])('refuses %s with one line naming the variable', (_label, env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
    expect(() => loadConfig(env)).not.toThrow(/\n/);
  });

  // Security probe: nats.js ignores a URL's user info, so `nats://<token>@host` was accepted, never sent (the server
  // answered Authorization Violation), and printed whole by the start-up error and the `herald listening` line.
  it.each(['nats://s3cr3tTok@127.0.0.1:4222', 'tls://herald@h:4222', 's3cr3tTok@h:4222', 'nats://h:4222,wss://s3cr3tTok@h:443'])(
    'refuses user info in %s without repeating it, and names HERALD_NATS_CREDS',
    (servers) => {
      const env = { HERALD_STORE: 'jetstream', HERALD_NATS_SERVERS: servers };
      expect(() => loadConfig(env)).toThrow(ConfigError);
      expect(() => loadConfig(env)).toThrow(/HERALD_NATS_SERVERS.*user info.*HERALD_NATS_CREDS/);
      expect(() => loadConfig(env)).not.toThrow(/s3cr3tTok|herald@/);
    },
  );
});
