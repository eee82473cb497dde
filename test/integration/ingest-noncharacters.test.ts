import request from 'supertest';
import { useGatewayForFile } from '../helpers/gateway';
import { postEventsRaw } from '../helpers/http';

/**
 * The String type disallows "code points identified as noncharacters by Unicode" (spec.md, Type System),
 * as it does lone surrogates, which Herald refuses. Spec probe: `"subject":"a\uFFFE"` and a `ce-subject`
 * of `%EF%BF%BE` were stored.
 */
const gw = useGatewayForFile();
const heads = async () => (await request(gw.url).get('/partitions')).body;
const event = (id: string, extra: Record<string, unknown>) => ({
  specversion: '1.0',
  id,
  source: '/nonchar',
  type: 'com.example.nonchar',
  ...extra,
});

describe('Unicode noncharacters in a string attribute', () => {
  it.each([
    ['subject', 'a\ufffe'],
    ['subject', '\uffff'],
    ['id', 'x\ufdd0'],
    ['ext', 'plane 1: \u{1fffe}'],
    ['ext', 'plane 16: \u{10ffff}'],
  ])('is a 400 naming %s in structured mode (%j)', async (attribute, value) => {
    const before = await heads();
    const res = await postEventsRaw(
      gw.url,
      { 'content-type': 'application/cloudevents+json' },
      JSON.stringify(event(`nc-${attribute}`, { [attribute]: value })),
    );
    expect(res.status).toBe(400);
    expect(res.body.errors).toContainEqual({ attribute, message: expect.stringMatching(/noncharacter/) });
    expect(await heads()).toEqual(before);
  });

  it('is a 400 in binary mode once percent-decoded', async () => {
    const headers = {
      'ce-specversion': '1.0',
      'ce-id': 'nc-binary',
      'ce-source': '/nonchar',
      'ce-type': 'com.example.nonchar',
      'ce-subject': 'a%EF%BF%BE',
    };
    const res = await postEventsRaw(gw.url, headers, '', { allowEmptyBody: true });
    expect(res.status).toBe(400);
    expect(res.body.errors).toContainEqual({ attribute: 'subject', message: expect.stringMatching(/noncharacter/) });
  });

  it('still takes the characters next to them: U+FDCF, U+FDF0, U+FFFD, U+1FFFD, emoji', async () => {
    const res = await postEventsRaw(
      gw.url,
      { 'content-type': 'application/cloudevents+json' },
      JSON.stringify(event('nc-neighbours', { subject: '\ufdcf\ufdf0\ufffd\u{1fffd}\u{1f600}' })),
    );
    expect(res.status).toBe(202);
  });
});
