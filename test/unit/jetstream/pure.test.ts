import type { StreamInfo } from 'nats';
import { boundsOf, streamWritable } from '../../../src/jetstream/cluster-monitor';
import { FORMAT_HEADER, NewerFormatError, decodeEventMessage, encodeEventMessage, formatOf } from '../../../src/jetstream/codec';
import { idempotencyKey, jetStreamNames } from '../../../src/jetstream/names';
import { clusterUnavailable, isNotFound, isStoreFailure, isWrongLastSequence, natsReason } from '../../../src/jetstream/nats-errors';
import type { CloudEvent } from '../../../src/cloudevents/event';

const attributes = { specversion: '1.0', id: 'e-1', source: '/s', type: 't', count: 3, flag: true };

describe('the event message codec', () => {
  it.each<[string, CloudEvent['data']]>([
    ['no data', { kind: 'none' }],
    ['JSON data', { kind: 'json', value: { a: [1, 'ü', null] } }],
    ['JSON null', { kind: 'json', value: null }],
    ['bytes', { kind: 'bytes', bytes: Buffer.from([0, 255, 10, 13]) }],
    ['base64 data', { kind: 'base64', bytes: Buffer.from('héllo') }],
  ])('round-trips an event with %s, byte for byte', (_label, data) => {
    const event: CloudEvent = { attributes, data };
    expect(decodeEventMessage(encodeEventMessage(event))).toEqual(event);
  });

  it.each<[string, Buffer]>([
    ['an empty payload', Buffer.alloc(0)],
    ['version 0', Buffer.from([0, 0, 0, 0, 0, 0])],
    ['an unknown data kind', Buffer.from([1, 9, 2, 0, 0, 0, 0x7b, 0x7d])],
    ['attributes past the end', Buffer.from([1, 0, 200, 0, 0, 0, 0x7b])],
    ['attributes without id and source', Buffer.concat([Buffer.from([1, 0, 2, 0, 0, 0]), Buffer.from('{}')])],
  ])('refuses %s', (_label, payload) => {
    expect(() => decodeEventMessage(payload)).toThrow(/Herald event message/);
    expect(() => decodeEventMessage(payload)).not.toThrow(NewerFormatError);
  });

  it('takes a message for a later format only when its Herald-Format header says so (a newer node wrote it)', () => {
    const headers = (value?: string) => ({ get: (name: string) => (name === FORMAT_HEADER && value !== undefined ? value : '') });
    expect(formatOf(undefined)).toBe(1);
    expect(formatOf(headers())).toBe(1);
    expect(formatOf(headers('x'))).toBe(1);
    expect(formatOf(headers('2'))).toBe(2);
    const payload = Buffer.from('{"hello":"world"}'); // published by hand: damage, not a newer format
    expect(() => decodeEventMessage(payload)).not.toThrow(NewerFormatError);
    expect(() => decodeEventMessage(payload, 2)).toThrow(/format 2, newer than this Herald reads \(1\)/);
  });
});

describe('names on the cluster', () => {
  it('derives every stream, subject and bucket from the prefix', () => {
    const names = jetStreamNames('hx');
    expect([names.stream(3), names.subject(3), names.idempotencyBucket, names.idempotencyStream, names.metaBucket]).toEqual([
      'hx_p3',
      'hx.p.3',
      'hx_idem',
      'KV_hx_idem',
      'hx_meta',
    ]);
  });

  it('keys source+id by a SHA-256 that cannot confuse where source ends and id begins', () => {
    expect(idempotencyKey('/a', 'b')).toMatch(/^[0-9a-f]{64}$/);
    expect(idempotencyKey('/a', 'b')).toBe(idempotencyKey('/a', 'b'));
    expect(idempotencyKey('/a', 'bc')).not.toBe(idempotencyKey('/ab', 'c'));
  });
});

const info = (
  over: { leader?: string; current?: boolean[]; active?: number[]; replicas?: number; state?: Partial<StreamInfo['state']> } = {},
) =>
  ({
    config: { name: 'hx_p0', num_replicas: over.replicas ?? 3 },
    cluster: {
      name: 'c',
      leader: over.leader,
      replicas: (over.current ?? [true, true]).map((current, i) => ({ name: `n${i}`, current, active: over.active?.[i] ?? 0.3e9 })),
    },
    state: { messages: 0, first_seq: 0, last_seq: 0, bytes: 0, ...over.state },
  }) as unknown as StreamInfo;

describe('whether a stream can take writes', () => {
  it('needs a leader and, with it, a majority of current replicas', () => {
    expect(streamWritable(info({ leader: 'n9' }))).toBeUndefined();
    expect(streamWritable(info({ leader: 'n9', current: [true, false] }))).toBeUndefined();
    expect(streamWritable(info({ leader: 'n9', current: [false, false] }))).toMatch(/1 current of 3 replicas \(needs 2\)/);
    expect(streamWritable(info({ current: [true, true] }))).toMatch(/no leader/);
    expect(streamWritable(info({ leader: 'n9', replicas: 1, current: [] }))).toBeUndefined();
  });

  it('does not count a replica the leader has not heard from for 4 s, though the leader still calls it current', () => {
    // A survivor of two servers SIGKILLed answered so for ~10 s (nats-server 2.9).
    expect(streamWritable(info({ leader: 'n9', active: [0.5e9, 3.9e9] }))).toBeUndefined();
    expect(streamWritable(info({ leader: 'n9', active: [4.1e9, 0.2e9] }))).toBeUndefined();
    expect(streamWritable(info({ leader: 'n9', active: [6e9, 6.3e9] }))).toMatch(/1 current of 3 replicas \(needs 2\)/);
  });

  it('counts, just after a lost connection, only the replicas heard from since (the monitor passes the time since)', () => {
    // 0.7 s after the node lost its connection (its server SIGKILLed with another): replicas last heard 0.8 s ago went with it.
    expect(streamWritable(info({ leader: 'n9', active: [0.8e9, 0.8e9] }), 0.7e9)).toMatch(/1 current of 3 replicas/);
    expect(streamWritable(info({ leader: 'n9', active: [0.3e9, 0.8e9] }), 0.7e9)).toBeUndefined();
  });
});

describe('partition bounds from a stream', () => {
  it('maps sequences to offsets: head = last sequence, first = first sequence − 1, an empty stream starts at its head', () => {
    expect(boundsOf(info({ state: { messages: 0, first_seq: 0, last_seq: 0 } }))).toEqual({ head: 0, first: 0 });
    expect(boundsOf(info({ state: { messages: 5, first_seq: 1, last_seq: 5 } }))).toEqual({ head: 5, first: 0 });
    expect(boundsOf(info({ state: { messages: 2, first_seq: 4, last_seq: 5 } }))).toEqual({ head: 5, first: 3 });
    expect(boundsOf(info({ state: { messages: 0, first_seq: 6, last_seq: 5 } }))).toEqual({ head: 5, first: 5 });
  });
});

describe('NATS errors', () => {
  it('tells a lost create-if-absent race and a missing message from the rest', () => {
    expect(isWrongLastSequence({ api_error: { err_code: 10071 } })).toBe(true);
    expect(isWrongLastSequence(new Error('wrong last sequence: 4'))).toBe(true);
    expect(isWrongLastSequence({ code: 'TIMEOUT', message: 'TIMEOUT' })).toBe(false);
    expect(isNotFound({ code: '404', message: 'message not found' })).toBe(true);
    expect(isNotFound({ code: '503', message: '503' })).toBe(false);
  });

  it('says what a bare 503 means, and that a full stream is storage_full, not a retry later (JetStream probe)', () => {
    // Was "(503)": a deleted subscriptions bucket's every write.
    expect(natsReason({ code: '503', message: '503' })).toMatch(/^503: no stream answered .*missing/);
    // A stream without a leader (servers out of storage: a probe saw every stream so) is not blamed on a deletion.
    expect(natsReason({ code: '503', message: '503' })).toMatch(/without a leader: .*out of storage/);
    expect(natsReason({ code: '503', message: '503' })).not.toMatch(/deleted behind Herald/);
    expect(natsReason({ code: 'TIMEOUT', message: 'timeout' })).toBe('TIMEOUT: timeout');
    const full = clusterUnavailable({ code: '503', message: 'maximum messages exceeded' }, 'store events in stream h_p2');
    expect({ code: full.code, retryAfter: full.retryAfter }).toEqual({ code: 'storage_full', retryAfter: 30 });
    expect(full.message).toContain('store events in stream h_p2: 503: maximum messages exceeded');
    expect(clusterUnavailable({ code: 'TIMEOUT', message: 'TIMEOUT' }, 'store events').code).toBe('unavailable');
    // An account's JetStream limit (store probe) is a full store too; a failed write to the store is not.
    expect(clusterUnavailable({ message: 'resource limits exceeded for account' }, 'store events').code).toBe('storage_full');
    const eio = 'write /s/n1/jetstream/$G/streams/h_p0/msgs/1.blk: input/output error';
    expect(isStoreFailure(eio)).toBe(true);
    expect(isStoreFailure('insufficient resources')).toBe(false);
    // Any other errno of a failed write to the store (a probe: EDQUOT on a leader's block file diverged its replicas
    // as EIO does, while the node stayed ready and answered "retry later").
    for (const errno of ['disk quota exceeded', 'file too large', 'stale NFS file handle', 'bad file descriptor'])
      expect(isStoreFailure(`503: write /s/n1/jetstream/$G/streams/h_p0/msgs/1.blk: ${errno}`)).toBe(true);
    expect(isStoreFailure('503: maximum messages exceeded')).toBe(false);
    expect(isStoreFailure('TIMEOUT')).toBe(false);
    expect(clusterUnavailable({ message: eio }, 'store events').message).toMatch(/replicas may differ.*until it is restarted/);
  });
});
