/** Bytes of the log from `from` to `to`, read at once (`buf` holds exactly them). */
export interface Span {
  buf: Buffer;
  from: number;
  to: number;
}

export interface LogWindowsOptions {
  /** Reads up to `length` bytes at log position `position` into `buf`; fewer at the end of a segment's file. */
  readInto(position: number, buf: Buffer, length: number): number;
  /** Log position before which every byte is committed: a window never reads past it (a group being written may yet be undone). */
  readableEnd(): number;
  windowBytes?: number;
  windows?: number;
}

/** 256 KiB from the page cache cost about three single-record reads; one window holds ~200 records of 1 KiB. */
const DEFAULT_WINDOW_BYTES = 256 * 1024;
/**
 * 2 MiB in all. A page's records are read window after window; the windows kept besides serve other
 * partitions' pages over the same stretch (several subscriptions at one position, or partitions
 * draining side by side).
 */
const DEFAULT_WINDOWS = 8;

interface Slot {
  buf: Buffer;
  span: Span | undefined;
  usedAt: number;
}

/**
 * The last stretches of the log read whole, for a reader that drains many partitions at once (the
 * delivery thread). A partition's page is interleaved with every other partition's records, so a
 * read per record was one system call per event delivered; a window read once serves the records of
 * every partition that lie in it. Only committed bytes are read, so a window never holds bytes that
 * change later. The buffers are allocated once and reused: decoding copies what it keeps.
 */
export function createLogWindows(opts: LogWindowsOptions) {
  const windowBytes = opts.windowBytes ?? DEFAULT_WINDOW_BYTES;
  const slots: Slot[] = [];
  let clock = 0;

  function slotFor(): Slot {
    if (slots.length < (opts.windows ?? DEFAULT_WINDOWS)) {
      const slot: Slot = { buf: Buffer.allocUnsafeSlow(windowBytes), span: undefined, usedAt: 0 };
      slots.push(slot);
      return slot;
    }
    let oldest = slots[0]!;
    for (const slot of slots) if (slot.usedAt < oldest.usedAt) oldest = slot;
    return oldest;
  }

  return {
    windowBytes,
    /** A window holding all of `[position, position + length)`, if one was read. */
    holding(position: number, length: number): Span | undefined {
      for (const slot of slots) {
        const span = slot.span;
        if (span && position >= span.from && position + length <= span.to) {
          slot.usedAt = ++clock;
          return span;
        }
      }
      return undefined;
    },
    /** Reads the window starting at `position`; undefined when it cannot hold that record (not all there, or unreadable). */
    load(position: number, length: number): Span | undefined {
      const want = Math.min(windowBytes, opts.readableEnd() - position);
      if (want < length) return undefined;
      const slot = slotFor();
      slot.span = undefined;
      let got: number;
      try {
        got = opts.readInto(position, slot.buf, want);
      } catch {
        return undefined;
      }
      if (got < length) return undefined;
      slot.span = { buf: slot.buf.subarray(0, got), from: position, to: position + got };
      slot.usedAt = ++clock;
      return slot.span;
    },
    /** Retention deletes everything before `through`: windows over it go. */
    dropBefore(through: number): void {
      for (const slot of slots) if (slot.span && slot.span.from < through) slot.span = undefined;
    },
  };
}

export type LogWindows = ReturnType<typeof createLogWindows>;
