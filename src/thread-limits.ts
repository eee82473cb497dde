import type { ResourceLimits } from 'node:worker_threads';

/**
 * Heap bounds of Herald's worker threads. V8 sizes a thread's young generation for throughput (up
 * to 48 MiB each) and lets its old generation grow well past its live set between major
 * collections; with four isolates that was most of the gateway's resident memory while a backlog
 * drained. Each bound sits far above the thread's live set: a thread that outgrew one anyway dies
 * and is restarted like any other crash of that thread (see each thread's owner).
 *
 * The delivery thread has none: any resource limit on it (even only an old-generation cap) changed
 * how V8 sized its young generation and more than doubled its time in GC (20 % of the thread against
 * 8.5 % while delivering 50,000 events); its heap is bounded by what it holds instead, and by the
 * growing factor every thread gets (see heap-growth.ts).
 */
export const THREAD_LIMITS = {
  /** Index writes (a group's columns at a time) and key filter builds (paged). */
  indexer: { maxYoungGenerationSizeMb: 8, maxOldGenerationSizeMb: 256 },
  /** A timer and a pragma. */
  checkpointer: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 32 },
} as const satisfies Record<string, ResourceLimits>;
