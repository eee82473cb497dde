import path from 'node:path';
import { migrate, openDatabase } from '../../../src/store/db';
import { createSubscriptionsRepo } from '../../../src/store/subscriptions-repo';
import { subscriptionRecord } from '../../helpers/subscription-record';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/** The `subscriptions` table as herald.db keeps it: a record read back is the record written. */
afterAll(cleanupTmpDirs);

describe('the subscriptions repository', () => {
  it("keeps the sink's grant (allowedRate) through an insert, an update and a reopen", () => {
    const file = path.join(tmpDir(), 'herald.db');
    let db = openDatabase(file);
    migrate(db);
    const repo = createSubscriptionsRepo(db);
    const none = subscriptionRecord({ allowedRate: null });
    const granted = subscriptionRecord({ allowedRate: { perSecond: 0.5 } });
    repo.insert(none);
    repo.insert(granted);
    expect([repo.get(none.id), repo.get(granted.id)]).toEqual([none, granted]);

    repo.update({ ...none, allowedRate: { perSecond: 2 } });
    repo.update({ ...granted, allowedRate: null });
    db.close();
    db = openDatabase(file);
    const reopened = createSubscriptionsRepo(db);
    expect(reopened.get(none.id)?.allowedRate).toEqual({ perSecond: 2 });
    expect(reopened.get(granted.id)?.allowedRate).toBeNull();
    db.close();
  });
});
