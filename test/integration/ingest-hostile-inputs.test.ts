import { startTestGateway } from '../helpers/gateway';
import { cleanupTmpDirs } from '../helpers/tmp';
afterAll(cleanupTmpDirs);

// Inputs a hostile producer sends (found by the hardening review): each gets a 4xx or a 2xx, never a 500.
it('bad inputs never get a 500', async () => {
  const gw = await startTestGateway({ HERALD_PARTITIONS: '3' });
  const bad: string[] = [];
  const h = (extra: Record<string, string>) => ({
    'ce-specversion': '1.0',
    'ce-id': 'x' + Math.random(),
    'ce-source': '/s',
    'ce-type': 't',
    ...extra,
  });
  const cases: [string, RequestInit, string?][] = [
    ['bin json invalid', { method: 'POST', headers: h({ 'content-type': 'application/json' }), body: '{' }],
    ['bin +json invalid', { method: 'POST', headers: h({ 'content-type': 'application/foo+json' }), body: '\xff\xfe' }],
    ['bin json bom', { method: 'POST', headers: h({ 'content-type': 'application/json' }), body: '\ufeff{}' }],
    ['bin json charset', { method: 'POST', headers: h({ 'content-type': 'application/json; charset=utf-16' }), body: '{}' }],
    [
      'structured proto',
      {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: '{"specversion":"1.0","id":"p","source":"/s","type":"t","__proto__":{"x":1}}',
      },
    ],
    [
      'structured b64 bad',
      {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: '{"specversion":"1.0","id":"b","source":"/s","type":"t","data_base64":"!!!"}',
      },
    ],
    [
      'structured both',
      {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: '{"specversion":"1.0","id":"b2","source":"/s","type":"t","data_base64":"AA==","data":1}',
      },
    ],
    [
      'structured ext obj',
      {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: '{"specversion":"1.0","id":"b3","source":"/s","type":"t","myext":{"a":1}}',
      },
    ],
    [
      'structured partkey num',
      {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: '{"specversion":"1.0","id":"b4","source":"/s","type":"t","partitionkey":5}',
      },
    ],
    [
      'structured lone surrogate',
      {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: '{"specversion":"1.0","id":"\\ud800","source":"/s","type":"t"}',
      },
    ],
    [
      'structured id toString',
      {
        method: 'POST',
        headers: { 'content-type': 'application/cloudevents+json' },
        body: '{"specversion":"1.0","id":"toString","source":"constructor","type":"t","time":"2020-13-45T99:00:00Z"}',
      },
    ],
    ['batch empty', { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: '[]' }],
    ['batch nested batch', { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: '[[]]' }],
    ['batch null', { method: 'POST', headers: { 'content-type': 'application/cloudevents-batch+json' }, body: 'null' }],
    ['hdr ce-dataschema bad', { method: 'POST', headers: h({ 'ce-dataschema': '::::', 'content-type': 'text/plain' }), body: 'x' }],
    ['hdr ext bad name', { method: 'POST', headers: h({ 'ce-MY_EXT': 'v', 'content-type': 'text/plain' }), body: 'x' }],
    ['hdr pct', { method: 'POST', headers: h({ 'ce-subject': '%C3%28', 'content-type': 'text/plain' }), body: 'x' }],
    ['hdr time', { method: 'POST', headers: h({ 'ce-time': '99999-01-01T00:00:00Z', 'content-type': 'text/plain' }), body: 'x' }],
    ['no ct', { method: 'POST', headers: h({}), body: 'x' }],
    ['ct weird', { method: 'POST', headers: h({ 'content-type': ';;;' }), body: 'x' }],
    ['gzip', { method: 'POST', headers: h({ 'content-type': 'text/plain', 'content-encoding': 'gzip' }), body: 'x' }],
  ];
  for (const [name, init] of cases) {
    const res = await fetch(`${gw.url}/events`, init);
    const text = await res.text();
    if (res.status >= 500) bad.push(`${name}: ${res.status} ${text.slice(0, 200)}`);
  }
  for (const path of [
    '/events?source=%ff&id=1',
    '/events?source=a&id=%00',
    '/partitions/1/events?from=9007199254740991',
    '/partitions/1/events?from=9007199254740991&limit=1000',
    '/partitions/99999999999999999999/events',
    '/subscriptions/%ff',
    '/subscriptions/..%2f',
    '/deliveries/%zz/ack',
    '/openapi.json?x=%zz',
  ]) {
    const res = await fetch(`${gw.url}${path}`);
    const text = await res.text();
    if (res.status >= 500) bad.push(`GET ${path}: ${res.status} ${text.slice(0, 200)}`);
  }
  // after each structured id, look them up
  for (const q of ['source=constructor&id=toString', 'source=%2Fs&id=%ED%A0%80']) {
    const res = await fetch(`${gw.url}/events?${q}`);
    if (res.status >= 500) bad.push(`lookup ${q}: ${res.status} ${(await res.text()).slice(0, 200)}`);
  }
  await gw.close();
  expect(bad).toEqual([]);
});
