import { Worker } from 'node:worker_threads';
import { HOLD_INTERVALS, niceFor, startBacklogPriority, type Interval } from '../../../src/delivery/backlog-priority';
import { canRestorePriority, niceOfThisThread } from '../../../src/thread-priority';

describe('niceFor: ingest first while a backlog drains', () => {
  it.each<[string, Interval, number]>([
    ['backlog reads while producers store events', { backlogReads: 3, committedGroups: 10 }, 10],
    ['a drain with no ingest (nothing of Herald competes)', { backlogReads: 3, committedGroups: 0 }, 0],
    ['ingest while the subscriber keeps up (fresh reads only)', { backlogReads: 0, committedGroups: 10 }, 0],
    ['an idle gateway', { backlogReads: 0, committedGroups: 0 }, 0],
  ])('%s', (_what, seen, nice) => {
    expect(niceFor(seen, 10)).toBe(nice);
  });
});

describe('startBacklogPriority', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  const INTERVAL = 250;
  function governor(backlogNice = 10, base = 0) {
    const counts: Interval = { backlogReads: 0, committedGroups: 0 };
    const applied: number[] = [];
    const gov = startBacklogPriority({
      backlogNice,
      base,
      counts: () => ({ ...counts }),
      apply: (nice) => (applied.push(nice), true),
      intervalMs: INTERVAL,
    });
    const ticks = (n: number) => jest.advanceTimersByTime(INTERVAL * n);
    /** One interval with a backlog page read and a committed group. */
    const drainUnderIngest = () => {
      counts.backlogReads++;
      counts.committedGroups++;
      ticks(1);
    };
    return { counts, applied, gov, ticks, drainUnderIngest };
  }

  it('raises the nice value at once, holds it while the drain goes on, and restores it after HOLD_INTERVALS quiet intervals', () => {
    const { counts, applied, gov, ticks, drainUnderIngest } = governor();
    drainUnderIngest();
    drainUnderIngest();
    expect(applied).toEqual([10]); // applied once, not every interval
    counts.committedGroups++; // ingest goes on, but no page read in this interval
    ticks(1);
    expect(gov.nice()).toBe(10);
    ticks(HOLD_INTERVALS - 2);
    expect(applied).toEqual([10]);
    ticks(1);
    expect(applied).toEqual([10, 0]);
    expect(gov.nice()).toBe(0);
    gov.stop();
    expect(applied).toEqual([10, 0]);
  });

  it('is relative to the nice value the thread started with, and never past 19', () => {
    const at5 = governor(10, 5);
    at5.drainUnderIngest();
    at5.gov.stop();
    expect(at5.applied).toEqual([15, 5]);
    const at15 = governor(10, 15);
    at15.drainUnderIngest();
    expect(at15.gov.nice()).toBe(19);
    at15.gov.stop();
    expect(at15.applied).toEqual([19, 15]);
  });

  it('tries a refused change again at the next interval', () => {
    const counts: Interval = { backlogReads: 0, committedGroups: 0 };
    const tried: number[] = [];
    let allow = false;
    const gov = startBacklogPriority({
      backlogNice: 10,
      base: 0,
      counts: () => ({ ...counts }),
      apply: (n) => (tried.push(n), allow),
      intervalMs: INTERVAL,
    });
    counts.backlogReads++;
    counts.committedGroups++;
    jest.advanceTimersByTime(INTERVAL);
    expect(gov.nice()).toBe(0);
    allow = true;
    counts.backlogReads++;
    counts.committedGroups++;
    jest.advanceTimersByTime(INTERVAL);
    expect(tried).toEqual([10, 10]);
    expect(gov.nice()).toBe(10);
    gov.stop();
  });

  it('restores the starting value on stop', () => {
    const { applied, gov, drainUnderIngest } = governor();
    drainUnderIngest();
    gov.stop();
    expect(applied).toEqual([10, 0]);
  });

  it('never touches the priority when HERALD_BACKLOG_NICE is 0', () => {
    const { applied, gov, drainUnderIngest } = governor(0);
    drainUnderIngest();
    drainUnderIngest();
    gov.stop();
    expect(applied).toEqual([]);
  });
});

describe('niceThisThread', () => {
  it('sets the nice value of the calling thread only, and the thread returns to 0 when the process may', async () => {
    const before = niceOfThisThread();
    const source = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { niceOfThisThread, niceThisThread } = require(workerData.module);
      const set = niceThisThread(7);
      const lowered = niceOfThisThread();
      const restored = niceThisThread(0);
      parentPort.postMessage({ set, lowered, restored, after: niceOfThisThread() });
    `;
    const w = new Worker(source, { eval: true, workerData: { module: require.resolve('../../../dist/thread-priority') } });
    const result = await new Promise<Record<string, unknown>>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await w.terminate(); // not left for the test run to wait out
    // Back to 0 needs CAP_SYS_NICE or RLIMIT_NICE >= 20 (CI runs as root); the gateway checks first.
    const restorable = canRestorePriority();
    expect(result).toEqual({ set: true, lowered: 7, restored: restorable, after: restorable ? 0 : 7 });
    expect(niceOfThisThread()).toBe(before);
  });
});
