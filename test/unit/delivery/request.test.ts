import { Webhook } from 'standardwebhooks';
import type { CloudEvent } from '../../../src/cloudevents/event';
import {
  BINARY_HEADER_BUDGET,
  buildDeliveryRequest,
  classifyStatus,
  webhookIdOf,
  type DeliveryRequestInput,
} from '../../../src/delivery/request';
import { newSigningSecret } from '../../../src/webhook-policy';

/** One delivery attempt's HTTP request, and what the receiver's status code means. */

describe('classifyStatus', () => {
  const table: [number[], 'done' | 'await_ack' | 'retry' | 'gone' | 'dead'][] = [
    [[200, 201, 203, 204, 206, 226, 299], 'done'],
    [[202], 'await_ack'],
    [[408, 409, 425, 429], 'retry'],
    [[500, 501, 502, 503, 504, 507, 599], 'retry'],
    [[410], 'gone'],
    [[300, 301, 302, 303, 304, 307, 308], 'dead'],
    [[400, 401, 403, 404, 405, 406, 411, 412, 413, 414, 415, 418, 422, 451, 499], 'dead'],
    // No class of HTTP (a probe's receiver answered 600 and 999: retried until maxAttempts).
    [[600, 700, 999], 'dead'],
  ];
  for (const [statuses, expected] of table) {
    it.each(statuses)(`ackMode auto: %d → ${expected}`, (status) => {
      expect(classifyStatus(status, 'auto')).toBe(expected);
    });
  }

  it.each([200, 201, 202, 204, 299])('ackMode manual: %d → await_ack (any 2xx waits for the callback)', (status) => {
    expect(classifyStatus(status, 'manual')).toBe('await_ack');
  });

  it.each([301, 400, 404, 410, 429, 500, 503])('ackMode manual: %d is classified as in auto mode', (status) => {
    expect(classifyStatus(status, 'manual')).toBe(classifyStatus(status, 'auto'));
  });
});

describe('webhookIdOf', () => {
  it('is stable for one (subscription, partition, offset)', () => {
    expect(webhookIdOf('sub-a', 3, 17)).toBe(webhookIdOf('sub-a', 3, 17));
    expect(webhookIdOf('sub-a', 3, 17)).toMatch(/^msg_[A-Za-z0-9_-]{27}$/);
  });

  it('differs across subscriptions, partitions and offsets', () => {
    const ids = new Set<string>();
    for (const sub of ['sub-a', 'sub-b']) for (let p = 0; p < 4; p++) for (let o = 0; o < 50; o++) ids.add(webhookIdOf(sub, p, o));
    expect(ids.size).toBe(2 * 4 * 50);
    // No ambiguity from concatenation: (1, 23) is not (12, 3).
    expect(webhookIdOf('s', 1, 23)).not.toBe(webhookIdOf('s', 12, 3));
  });
});

describe('buildDeliveryRequest', () => {
  const secret = newSigningSecret();
  const event: CloudEvent = {
    attributes: {
      specversion: '1.0',
      id: 'evt-1',
      source: '/orders',
      type: 'order.created',
      datacontenttype: 'application/json',
      time: '2024-01-02T03:04:05Z',
      comment: 'hello wörld 100%',
      priority: 7,
      urgent: true,
    },
    data: { kind: 'bytes', bytes: Buffer.from('{"n":1}') },
  };
  const input = (overrides: Partial<DeliveryRequestInput> = {}): DeliveryRequestInput => ({
    subscriptionId: 'sub-1',
    secret,
    format: 'binary',
    partition: 2,
    offset: 41,
    previousOffset: 40,
    attempt: 3,
    deliveryId: 'dlv_abc',
    ackUrlBase: 'http://gateway.example:8080',
    redrive: false,
    event,
    nowSeconds: Math.floor(Date.now() / 1000),
    ...overrides,
  });

  it('sends binary mode with every attribute as a ce- header, values percent-encoded', () => {
    const { headers, body } = buildDeliveryRequest(input());
    expect(body.toString()).toBe('{"n":1}');
    expect(headers['content-type']).toBe('application/json');
    expect(headers).toMatchObject({
      'ce-specversion': '1.0',
      'ce-id': 'evt-1',
      'ce-source': '/orders',
      'ce-type': 'order.created',
      'ce-time': '2024-01-02T03:04:05Z',
      'ce-comment': 'hello%20w%C3%B6rld%20100%25',
      'ce-priority': '7',
      'ce-urgent': 'true',
    });
    expect(decodeURIComponent(headers['ce-comment']!)).toBe('hello wörld 100%');
    expect(headers['ce-datacontenttype']).toBeUndefined();
  });

  // Security probe: Standard Webhooks signs `id.timestamp.body` only, so in binary mode (the default) the event's
  // attributes, which travel as ce-* headers, are not signed: an altered ce-type still verifies. Structured mode
  // carries them in the body, where they are signed. The README says so under "Verifying signatures".
  it('signs the body only: binary mode leaves the ce-* attributes unsigned, structured mode signs them', () => {
    const verify = (headers: Record<string, string>, body: Buffer) => {
      try {
        new Webhook(secret.slice('whsec_'.length)).verify(body, headers);
        return true;
      } catch {
        return false;
      }
    };
    const binary = buildDeliveryRequest(input());
    expect(verify({ ...binary.headers, 'ce-type': 'order.refunded', 'ce-source': '/elsewhere' }, binary.body)).toBe(true);
    const structured = buildDeliveryRequest(input({ format: 'structured' }));
    const altered = Buffer.from(structured.body.toString().replace('order.created', 'order.refunded'));
    expect(verify(structured.headers, structured.body)).toBe(true);
    expect(verify(structured.headers, altered)).toBe(false);
  });

  it('sets the Standard Webhooks and Herald headers', () => {
    const { headers } = buildDeliveryRequest(input());
    expect(headers).toMatchObject({
      'webhook-id': webhookIdOf('sub-1', 2, 41),
      'webhook-timestamp': expect.stringMatching(/^\d+$/),
      'webhook-signature': expect.stringMatching(/^v1,/),
      'herald-subscription-id': 'sub-1',
      'herald-partition': '2',
      'herald-offset': '41',
      'herald-previous-offset': '40',
      'herald-attempt': '3',
      'herald-delivery-id': 'dlv_abc',
      'herald-ack-url': 'http://gateway.example:8080/deliveries/dlv_abc/ack',
    });
    expect(headers['herald-redelivery']).toBeUndefined();
  });

  it('leaves herald-previous-offset out for the first matching event of a partition', () => {
    expect(buildDeliveryRequest(input({ previousOffset: null })).headers['herald-previous-offset']).toBeUndefined();
    expect(buildDeliveryRequest(input({ previousOffset: 0 })).headers['herald-previous-offset']).toBe('0');
  });

  it('marks a redelivery of a dead letter', () => {
    expect(buildDeliveryRequest(input({ redrive: true, attempt: 1 })).headers).toMatchObject({
      'herald-redelivery': 'true',
      'herald-attempt': '1',
    });
  });

  it('keeps webhook-id across attempts and changes only the attempt headers', () => {
    const first = buildDeliveryRequest(input({ attempt: 1, deliveryId: 'dlv_1' })).headers;
    const second = buildDeliveryRequest(input({ attempt: 2, deliveryId: 'dlv_2' })).headers;
    expect(second['webhook-id']).toBe(first['webhook-id']);
    expect([first['herald-attempt'], second['herald-attempt']]).toEqual(['1', '2']);
    expect(second['herald-ack-url']).toBe('http://gateway.example:8080/deliveries/dlv_2/ack');
  });

  it('signs the exact body: standardwebhooks verifies it, and not with another secret', () => {
    for (const format of ['binary', 'structured'] as const) {
      const { headers, body } = buildDeliveryRequest(input({ format }));
      expect(() => new Webhook(secret).verify(body, headers)).not.toThrow();
      expect(() => new Webhook(newSigningSecret()).verify(body, headers)).toThrow(/No matching signature/);
    }
  });

  it('serialises an event once per content mode: subscriptions and retries of one decoded event share its body, each signed with its own secret', () => {
    const json: CloudEvent = {
      attributes: { specversion: '1.0', id: 'e-shared', source: '/s', type: 't' },
      data: { kind: 'json', value: { n: [1, 2, 3] } },
    };
    for (const format of ['binary', 'structured'] as const) {
      const otherSecret = newSigningSecret();
      const a = buildDeliveryRequest(input({ event: json, format, subscriptionId: 'sub-a' }));
      const b = buildDeliveryRequest(
        input({ event: json, format, subscriptionId: 'sub-b', secret: otherSecret, headers: { 'x-team': 'b' } }),
      );
      const retry = buildDeliveryRequest(input({ event: json, format, subscriptionId: 'sub-a', attempt: 4 }));
      expect(b.body).toBe(a.body);
      expect(retry.body).toBe(a.body);
      expect(() => new Webhook(secret).verify(a.body, a.headers)).not.toThrow();
      expect(() => new Webhook(otherSecret).verify(b.body, b.headers)).not.toThrow();
      expect(() => new Webhook(secret).verify(b.body, b.headers)).toThrow(/No matching signature/);
      // One subscription's own headers never leak into another's request built from the shared message.
      expect(b.headers['x-team']).toBe('b');
      expect(a.headers['x-team']).toBeUndefined();
    }
    expect(buildDeliveryRequest(input({ event: json, format: 'structured' })).body).not.toBe(
      buildDeliveryRequest(input({ event: json })).body,
    );
  });

  it('sends structured mode as the JSON format when asked', () => {
    const { headers, body } = buildDeliveryRequest(input({ format: 'structured' }));
    expect(headers['content-type']).toBe('application/cloudevents+json; charset=utf-8');
    expect(Object.keys(headers).filter((h) => h.startsWith('ce-'))).toEqual([]);
    expect(JSON.parse(body.toString())).toEqual({ ...event.attributes, data: { n: 1 } });
  });

  it('sends an event without data in structured mode even when binary is asked', () => {
    const noData: CloudEvent = { attributes: { specversion: '1.0', id: 'e0', source: '/s', type: 't' }, data: { kind: 'none' } };
    const { headers, body } = buildDeliveryRequest(input({ event: noData }));
    expect(headers['content-type']).toMatch(/^application\/cloudevents\+json/);
    expect(JSON.parse(body.toString())).toEqual(noData.attributes);
    expect(headers['ce-id']).toBeUndefined();
  });

  it('carries binary data byte for byte: raw in binary mode, data_base64 in structured mode', () => {
    const bytes = Buffer.from([0x00, 0xff, 0x10, 0x80, 0xfe]);
    const binaryEvent: CloudEvent = {
      attributes: { specversion: '1.0', id: 'b1', source: '/s', type: 't', datacontenttype: 'application/octet-stream' },
      data: { kind: 'bytes', bytes },
    };
    const binary = buildDeliveryRequest(input({ event: binaryEvent }));
    expect(binary.body.equals(bytes)).toBe(true);
    expect(binary.headers['content-type']).toBe('application/octet-stream');
    const structured = buildDeliveryRequest(input({ event: binaryEvent, format: 'structured' }));
    expect(JSON.parse(structured.body.toString()).data_base64).toBe(bytes.toString('base64'));
  });

  it.each(['text/plain; note="5 €"', 'text/plain; a="x\ny"', 'text/plain; name="wörld"'])(
    'goes structured when datacontenttype %j cannot be a Content-Type header',
    (datacontenttype) => {
      const odd: CloudEvent = {
        attributes: { specversion: '1.0', id: 'o1', source: '/s', type: 't', datacontenttype },
        data: { kind: 'json', value: 'price' },
      };
      const { headers, body } = buildDeliveryRequest(input({ event: odd }));
      expect(headers['content-type']).toMatch(/^application\/cloudevents\+json/);
      expect(JSON.parse(body.toString())).toEqual({ ...odd.attributes, data: 'price' });
      expect(Object.values(headers).every((v) => /^[\t\x20-\x7e]*$/.test(v))).toBe(true);
    },
  );

  it.each(['application/cloudevents+json', 'Application/CloudEvents-Batch+JSON; charset=utf-8', 'application/cloudevents+xml'])(
    'goes structured when datacontenttype %j would make the binary message read as structured or batched mode (was: a receiver read the data as the event)',
    (datacontenttype) => {
      const inner = { specversion: '1.0', id: 'inner-1', source: '/inner', type: 'com.example.inner', data: { x: 1 } };
      const wrapper: CloudEvent = {
        attributes: { specversion: '1.0', id: 'wrap-1', source: '/wrap', type: 'com.example.wrapper', datacontenttype },
        data: { kind: 'json', value: inner },
      };
      const { headers, body } = buildDeliveryRequest(input({ event: wrapper, format: 'binary' }));
      expect(headers['content-type']).toBe('application/cloudevents+json; charset=utf-8');
      expect(headers['ce-id']).toBeUndefined();
      expect(JSON.parse(body.toString())).toEqual({ ...wrapper.attributes, data: inner });
    },
  );

  it.each([
    ['text/plain; charset=iso-8859-1', 'café'],
    ['text/plain; charset=utf-16le', 'hi'],
    ['application/json; charset="UTF-16LE"', { k: 'v' }],
    ['text/plain; charset=us-ascii', 'café'],
  ])(
    'goes structured when text or JSON data has datacontenttype %j: a UTF-8 body under that charset is wrong',
    (datacontenttype, value) => {
      // Was: binary, the UTF-8 bytes under that Content-Type (a receiver decoding ISO-8859-1 read "cafÃ©").
      const event: CloudEvent = {
        attributes: { specversion: '1.0', id: 'c1', source: '/s', type: 't', datacontenttype },
        data: { kind: 'json', value },
      };
      const { headers, body } = buildDeliveryRequest(input({ event }));
      expect(headers['content-type']).toMatch(/^application\/cloudevents\+json/);
      expect(JSON.parse(body.toString('utf8'))).toEqual({ ...event.attributes, data: value });
    },
  );

  it.each([
    ['text/plain; charset=utf-8', 'café'],
    ['text/plain; charset=UTF8', 'café'],
    ['text/plain; charset=us-ascii', 'plain'],
    ['text/plain', 'café'],
  ])('stays binary for datacontenttype %j when the UTF-8 body is in that charset', (datacontenttype, value) => {
    const event: CloudEvent = {
      attributes: { specversion: '1.0', id: 'c2', source: '/s', type: 't', datacontenttype },
      data: { kind: 'json', value },
    };
    const { headers, body } = buildDeliveryRequest(input({ event }));
    expect(headers['content-type']).toBe(datacontenttype);
    expect(body.toString('utf8')).toBe(value);
  });

  it('sends bytes in their own charset as they are: binary mode carries them byte for byte', () => {
    const latin1 = Buffer.from('café', 'latin1');
    const event: CloudEvent = {
      attributes: { specversion: '1.0', id: 'c3', source: '/s', type: 't', datacontenttype: 'text/plain; charset=iso-8859-1' },
      data: { kind: 'bytes', bytes: latin1 },
    };
    const { headers, body } = buildDeliveryRequest(input({ event }));
    expect(headers['content-type']).toBe('text/plain; charset=iso-8859-1');
    expect(body.equals(latin1)).toBe(true);
  });

  it('sends bytes without a datacontenttype structured, rather than invent a Content-Type the event lacks', () => {
    const untyped: CloudEvent = {
      attributes: { specversion: '1.0', id: 'u1', source: '/s', type: 't' },
      data: { kind: 'bytes', bytes: Buffer.from('xyz') },
    };
    // Was: binary with content-type application/octet-stream, which a receiver reads as its datacontenttype.
    const bytes = buildDeliveryRequest(input({ event: untyped }));
    expect(bytes.headers['content-type']).toMatch(/^application\/cloudevents\+json/);
    expect(JSON.parse(bytes.body.toString())).toEqual({ ...untyped.attributes, data_base64: Buffer.from('xyz').toString('base64') });
    // JSON data without one is application/json (JSON format §3.1.2), so it stays binary.
    const json: CloudEvent = {
      attributes: { specversion: '1.0', id: 'j1', source: '/s', type: 't' },
      data: { kind: 'json', value: { a: 1 } },
    };
    const built = buildDeliveryRequest(input({ event: json }));
    expect(built.headers['content-type']).toBe('application/json');
    expect(JSON.parse(built.body.toString())).toEqual({ a: 1 });
  });

  it(`sends an event structured when its ce-* headers would pass ${BINARY_HEADER_BUDGET} bytes`, () => {
    const event = (length: number): CloudEvent => ({
      attributes: { specversion: '1.0', id: 'h1', source: '/s', type: 't', datacontenttype: 'application/json', big: 'x'.repeat(length) },
      data: { kind: 'json', value: { a: 1 } },
    });
    // Was: a 20 KB ce-big header, which a Node receiver answers 431, and the event was dead-lettered.
    const large = buildDeliveryRequest(input({ event: event(20_000) }));
    expect(large.headers['ce-big']).toBeUndefined();
    expect(large.headers['content-type']).toMatch(/^application\/cloudevents\+json/);
    expect(JSON.parse(large.body.toString())).toEqual({ ...event(20_000).attributes, data: { a: 1 } });
    const justUnder = buildDeliveryRequest(input({ event: event(BINARY_HEADER_BUDGET - 200) }));
    expect(justUnder.headers['ce-big']).toHaveLength(BINARY_HEADER_BUDGET - 200);
    expect(justUnder.headers['content-type']).toBe('application/json');
  });
});
