import { setFlagsFromString } from 'node:v8';

/**
 * How far V8 lets a heap grow past what survived its last major collection before it collects
 * again. V8's own factor is up to 4x for a heap that is busy allocating, and a draining backlog is
 * exactly that: the delivery thread's old space was 111–125 MB with 26–36 MB of it live, and the
 * dead Buffers' memory waited for the same collection. With 1.7x the backlog case's resident memory
 * (all threads) fell from 420–444 MB to 289–292 MB at the same drain rate (BENCHMARKS.md). 1.5x
 * kept it at 275–293 MB but cost delivery 4–9 % in more frequent collections.
 *
 * It is set here, before any worker thread starts, because `NODE_OPTIONS` refuses the flag; V8
 * reads it at every collection, so it holds for the main thread too. Set once per process.
 */
export const HEAP_GROWING_PERCENT = 70;

let applied = false;

export function limitHeapGrowth(): void {
  if (applied) return;
  applied = true;
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
