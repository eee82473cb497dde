import { parseRoute } from '../../console/route';

/** The console's hash routes: the view, and the id it names (which goes into request paths). */
describe('the console route', () => {
  it('names the subscription or dead letters of an id', () => {
    expect(parseRoute('#/subscriptions/abc')).toEqual({ view: 'subscription', id: 'abc' });
    expect(parseRoute('#/dead-letters/a%2Fb')).toEqual({ view: 'dead-letters', id: 'a/b' });
  });

  it.each(['.', '..', '%2E', '%2e%2E', ''])('takes %j for no id: a dot segment would read another path (console probe: GET /)', (id) => {
    expect(parseRoute(`#/subscriptions/${id}`)).toEqual({ view: 'subscriptions' });
    expect(parseRoute(`#/dead-letters/${id}`)).toEqual({ view: 'dead-letters' });
  });
});
