import { decodedCharge } from '../wal/reads';

/** Most events in one cursor's page (see `itemAtCursor`). */
export const CURSOR_PAGE_EVENTS = 64;
/** Most stored bytes in one cursor's page: each subscription holds its own page per partition (receiver probe: 14 subscriptions of 256 KiB events held 1.5 GB). */
export const CURSOR_PAGE_BYTES = 256 * 1024;

/**
 * What the pages of one delivery thread's cursors may hold in all, charged as the decoded-record cache
 * charges an event (its memory: about twice its stored bytes plus 1 KiB).
 */
const PAGES_BUDGET = 64 * 1024 * 1024;

/** What a full page may be charged at most: a share this large reads one. */
const FULL_PAGE_CHARGE = decodedCharge(CURSOR_PAGE_BYTES, CURSOR_PAGE_EVENTS);

/** What a page of events of about 1 KiB is charged an event: to turn a share of the budget into a count. */
const TYPICAL_EVENT_CHARGE = decodedCharge(1024);

/**
 * Memory for the pages the cursors of a delivery thread hold: a page per subscription and partition
 * being delivered, read ahead of what is sent. With many subscriptions each at its own place in a
 * backlog, those pages were most of the process (scale probe: 300 subscriptions lagging in 16
 * partitions held 550 MB of 1 KB events; 2,000 in 64 partitions, 4 GB). A page may take an equal share
 * of the budget among the pages held (and no more than is left of it): a full page while that share
 * holds one, fewer events below it, one at least, so delivery goes on at the cost of more reads of the
 * log. Shared out, not first come first served: pages of one event for the cursors that came last cost
 * a tenth of the delivery rate (300 subscriptions), where pages of a few events each cost little more
 * than full ones. A page is charged when read and given back when its cursor drops it (delivered,
 * sought, stopped, paused), so the budget counts only pages held now.
 */
export function createPageBudget(limit = PAGES_BUDGET) {
  let held = 0;
  let pages = 0;
  return {
    /** How much the next page may read: a full page while its share holds one, fewer events below it (one at least). */
    nextPage(): { events: number; bytes: number } {
      const share = Math.min(limit - held, limit / (pages + 1));
      if (share >= FULL_PAGE_CHARGE) return { events: CURSOR_PAGE_EVENTS, bytes: CURSOR_PAGE_BYTES };
      const events = Math.min(CURSOR_PAGE_EVENTS, Math.max(1, Math.floor(share / TYPICAL_EVENT_CHARGE)));
      return { events, bytes: Math.max(0, Math.floor((share - decodedCharge(0, events)) / 2)) };
    },
    /** Charges a page just read: `bytes` stored in `events` records. Returns the charge, for `give`. */
    take(bytes: number, events: number): number {
      if (events === 0) return 0;
      const charge = decodedCharge(bytes, events);
      held += charge;
      pages++;
      return charge;
    },
    give(charge: number): void {
      if (charge === 0) return;
      held = Math.max(0, held - charge);
      pages = Math.max(0, pages - 1);
    },
    /** What the pages held now are charged (diagnostics and tests). */
    held: (): number => held,
  };
}
export type PageBudget = ReturnType<typeof createPageBudget>;
