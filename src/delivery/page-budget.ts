import { decodedCharge } from '../wal/reads';

/** Most events in one cursor's page (see `itemAtCursor`). */
export const CURSOR_PAGE_EVENTS = 64;
/** Most stored bytes in one cursor's page: each subscription holds its own page per partition (receiver probe: 14 subscriptions of 256 KiB events held 1.5 GB). */
export const CURSOR_PAGE_BYTES = 256 * 1024;

/**
 * What the pages of one delivery thread's cursors may hold in all, charged as the decoded-record cache
 * charges an event (its memory: about twice its stored bytes plus 1 KiB).
 */
export const PAGES_BUDGET = 64 * 1024 * 1024;

/**
 * Memory for the pages the cursors of a delivery thread hold: a page per subscription and partition
 * being delivered, read ahead of what is sent. With many subscriptions each at its own place in a
 * backlog, those pages were most of the process (scale probe: 300 subscriptions lagging in 16
 * partitions held 550 MB of 1 KB events; 2,000 in 64 partitions, 4 GB). While the pages held come to
 * less than the budget a page is a full one; near it, pages shrink, down to one event: delivery goes
 * on at the cost of a read of the log per event. A page is charged when read and given back when its
 * cursor drops it (delivered, sought, stopped, paused), so the budget counts only pages held now.
 */
export function createPageBudget(limit = PAGES_BUDGET) {
  let held = 0;
  return {
    /** How much the next page may read: a full page while there is room for one, less near the limit (one event at least). */
    nextPage(): { events: number; bytes: number } {
      const room = limit - held;
      if (room >= decodedCharge(CURSOR_PAGE_BYTES, CURSOR_PAGE_EVENTS)) return { events: CURSOR_PAGE_EVENTS, bytes: CURSOR_PAGE_BYTES };
      const events = Math.min(CURSOR_PAGE_EVENTS, Math.max(1, Math.floor(room / decodedCharge(0))));
      return { events, bytes: Math.max(0, Math.floor((room - decodedCharge(0, events)) / 2)) };
    },
    /** Charges a page just read: `bytes` stored in `events` records. Returns the charge, for `give`. */
    take(bytes: number, events: number): number {
      const charge = decodedCharge(bytes, events);
      held += charge;
      return charge;
    },
    give(charge: number): void {
      held = Math.max(0, held - charge);
    },
    /** What the pages held now are charged (diagnostics and tests). */
    held: (): number => held,
  };
}
export type PageBudget = ReturnType<typeof createPageBudget>;
