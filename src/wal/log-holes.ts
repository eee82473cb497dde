/**
 * Where `HERALD_RECOVERY=skip-corrupt` set log bytes aside (`log_holes` in herald.db's and index.db's
 * meta): `from` is the first position set aside, `to` the position after the last (absent in what
 * versions before this one wrote: they kept `from` alone). A hole at a segment's end is a gap before
 * the next segment that a start or a backup must accept, and only that gap: a later gap starting at
 * the same position (the next segment deleted as well) is bytes lost, not this hole (a probe).
 */
export interface LogHole {
  from: number;
  to?: number;
}

/** `log_holes` as stored: `[from, to]` pairs, or a bare `from` as older versions wrote it. Anything else is ignored. */
export function parseHoles(text: string | undefined): LogHole[] {
  if (text === undefined) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return [];
  }
  if (!Array.isArray(parsed)) return [];
  const holes: LogHole[] = [];
  for (const entry of parsed) {
    if (Number.isSafeInteger(entry)) holes.push({ from: entry as number });
    else if (Array.isArray(entry) && entry.length === 2 && entry.every((n) => Number.isSafeInteger(n)))
      holes.push({ from: entry[0] as number, to: entry[1] as number });
  }
  return holes;
}

/** The holes of both lists, one per `from` (with its `to` where either list knows it), in log order. */
export function mergeHoles(...lists: readonly (readonly LogHole[])[]): LogHole[] {
  const byFrom = new Map<number, LogHole>();
  for (const list of lists) for (const hole of list) if (byFrom.get(hole.from)?.to === undefined) byFrom.set(hole.from, hole);
  return [...byFrom.values()].sort((a, b) => a.from - b.from);
}

export function formatHoles(holes: readonly LogHole[]): string {
  return JSON.stringify(holes.map((h) => (h.to === undefined ? h.from : [h.from, h.to])));
}

/**
 * Whether the gap from `end` (where a segment ends) to `next` (where the next one starts) is a known
 * hole: one starting there whose bytes reach at least to `next` (a set-aside that ran into the next
 * segment padded its start). A hole an older version recorded without its end is taken as it was.
 */
export function isKnownGap(holes: ReadonlyMap<number, number | undefined> | undefined, end: number, next: number): boolean {
  if (!holes?.has(end)) return false;
  const to = holes.get(end);
  return to === undefined || next <= to;
}

/** The holes keyed by `from`, as {@link isKnownGap} reads them. */
export function holeMap(holes: readonly LogHole[]): ReadonlyMap<number, number | undefined> {
  return new Map(holes.map((h) => [h.from, h.to]));
}
