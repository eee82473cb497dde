import fc from 'fast-check';
import { repeatedMembers } from '../../../src/cloudevents/json-members';

/** An object's text written member by member, so a name may repeat (JSON.stringify cannot write that). */
const objectText = (members: [string, unknown][], escape: boolean) =>
  `{${members.map(([name, value]) => `${escape ? JSON.stringify(name).replace(/[a-z]/, (c) => `\\u00${c.charCodeAt(0).toString(16)}`) : JSON.stringify(name)} : ${JSON.stringify(value)}`).join(' , ')}}`;

/** The names given more than once, in the order of their second appearance. */
const expected = (members: [string, unknown][]) => {
  const seen = new Set<string>();
  const twice: string[] = [];
  for (const [name] of members) {
    if (seen.has(name) && !twice.includes(name)) twice.push(name);
    seen.add(name);
  }
  return twice;
};

const members = fc.array(fc.tuple(fc.constantFrom('id', 'type', 'data', 'ext', 'a"b', 'x\\y', '{', '['), fc.jsonValue()), { maxLength: 8 });

describe('repeatedMembers', () => {
  it('finds exactly the event members given more than once, escaped or not, whatever data holds', () => {
    fc.assert(
      fc.property(members, fc.boolean(), (list, escape) => {
        const text = objectText(list, escape);
        expect(JSON.parse(text)).toBeDefined();
        const twice = expected(list);
        expect(repeatedMembers(text, false)?.get(0) ?? []).toEqual(twice);
      }),
    );
  });

  it('reads a batch event by event, by index, elements that are no objects counted too', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            members.map((m) => ({ members: m })),
            fc.jsonValue().map((value) => ({ value })),
          ),
          { maxLength: 6 },
        ),
        (items) => {
          const text = `[${items.map((item) => ('members' in item ? objectText(item.members, false) : JSON.stringify(item.value))).join(',')}]`;
          expect(JSON.parse(text)).toHaveLength(items.length);
          const found = repeatedMembers(text, true);
          items.forEach((item, index) => expect(found?.get(index) ?? []).toEqual('members' in item ? expected(item.members) : []));
        },
      ),
    );
  });
});
