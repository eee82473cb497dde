import { ConfigError, configDocs, loadConfig } from '../../src/config';

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

  it('parses idempotency windows with units', () => {
    expect(loadConfig({ HERALD_IDEMPOTENCY_WINDOW: '12h' }).idempotencyWindowMs).toBe(12 * 3600 * 1000);
    expect(loadConfig({ HERALD_IDEMPOTENCY_WINDOW: '1500' }).idempotencyWindowMs).toBe(1500);
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

  it('documents every variable', () => {
    for (const row of configDocs()) expect(row.description.length).toBeGreaterThan(10);
  });
});
