import path from 'node:path';
import { migrate, openDatabase } from '../../../src/store/db';
import { createSkippedOffsetsRepo } from '../../../src/store/skipped-offsets-repo';
import { cleanupTmpDirs, tmpDir } from '../../helpers/tmp';

/** The offsets starts skipped (herald.db `skipped_offsets`), as delivery asks about a missing range. */
afterAll(cleanupTmpDirs);

describe('the skipped offsets repository', () => {
  const repo = () => {
    const db = openDatabase(path.join(tmpDir(), 'herald.db'));
    migrate(db);
    return createSkippedOffsetsRepo(db);
  };

  it('tells where the skipped part of a missing range begins: all, none, or the part above lost events', () => {
    const skipped = repo();
    skipped.record({ partition: 0, from: 10, to: 4106 });
    expect(skipped.read().skippedFrom(0, 10, 4106)).toBe(10);
    expect(skipped.read().skippedFrom(0, 20, 4106)).toBe(20); // a cursor inside the range
    expect(skipped.read().skippedFrom(0, 6, 4106)).toBe(10); // 6..9 lost, below it
    expect(skipped.read().skippedFrom(0, 4106, 4200)).toBe(4200); // none of it
    expect(skipped.read().skippedFrom(1, 10, 4106)).toBe(4106); // another partition's
  });

  it('follows ranges that meet end to end (review: two unclean stops in a row named the first range lost events)', () => {
    const skipped = repo();
    skipped.record({ partition: 0, from: 10, to: 4106 });
    skipped.record({ partition: 0, from: 4106, to: 8202 });
    expect(skipped.read().skippedFrom(0, 10, 8202)).toBe(10);
    expect(skipped.read().skippedFrom(0, 6, 8202)).toBe(10);
  });

  it('counts the skipped offsets within a range, for the lag: the overlap of each range, per partition', () => {
    const skipped = repo();
    skipped.record({ partition: 0, from: 10, to: 4106 });
    skipped.record({ partition: 0, from: 4106, to: 8202 });
    skipped.record({ partition: 1, from: 3, to: 7 });
    const within = skipped.read().countWithin;
    expect(within(0, 10, 8202)).toBe(8192);
    expect(within(0, 0, 8300)).toBe(8192); // events below and above count as events
    expect(within(0, 4000, 4200)).toBe(200); // across the two ranges
    expect(within(0, 8202, 8300)).toBe(0);
    expect(within(1, 5, 100)).toBe(2);
    expect(within(2, 0, 100)).toBe(0);
  });

  it('keeps the wider of two ranges from the same offset (review: a later start whose range began where an earlier one did kept the narrower)', () => {
    const skipped = repo();
    skipped.record({ partition: 0, from: 10, to: 4106 });
    skipped.record({ partition: 0, from: 10, to: 8202 });
    skipped.record({ partition: 0, from: 10, to: 5000 });
    expect(skipped.read().skippedFrom(0, 10, 8202)).toBe(10);
    expect(skipped.read().countWithin(0, 0, 9000)).toBe(8192);
  });

  it('forgets the ranges retention is past', () => {
    const skipped = repo();
    skipped.record({ partition: 0, from: 10, to: 4106 });
    skipped.prune([4106]);
    expect(skipped.read().skippedFrom(0, 10, 4106)).toBe(4106);
  });
});
