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
  /** Milliseconds, monotonic (tests pass their own). */
  now?: () => number;
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

/**
 * A window is served for this long after its read, then read again: it is read-ahead for the pages
 * being drained now, not a cache (a record damaged on disk later is found by the next read).
 */
const MAX_AGE_MS = 1000;

interface Slot {
  buf: Buffer;
  span: Span | undefined;
  usedAt: number;
  readAt: number;
}

/**
 * The last stretches of the log read whole, for a reader that drains many partitions at once (the
 * delivery thread). A partition's page is interleaved with every other partition's records, so a
 * read per record was one system call per event delivered; a window read once serves the records of
 * every partition that lie in it. Only committed bytes are read, so the writer never changes what a
 * window holds; a window is served for a second at most (read-ahead, like a page of decoded events).
 * The buffers are allocated once and reused: decoding must copy what it keeps (record.ts does).
 */
export function createLogWindows(opts: LogWindowsOptions) {
  const windowBytes = opts.windowBytes ?? DEFAULT_WINDOW_BYTES;
  const slots: Slot[] = [];
  const now = opts.now ?? (() => performance.now());
  let clock = 0;
  /** The last window that could not be read: windows over it are not tried again for a while (a bad sector costs once). */
  let failed: { from: number; to: number; at: number } | undefined;

  function slotFor(): Slot {
    if (slots.length < (opts.windows ?? DEFAULT_WINDOWS)) {
      const slot: Slot = { buf: Buffer.allocUnsafeSlow(windowBytes), span: undefined, usedAt: 0, readAt: 0 };
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
      const oldest = now() - MAX_AGE_MS;
      for (const slot of slots) {
        const span = slot.span;
        if (span && position >= span.from && position + length <= span.to && slot.readAt >= oldest) {
          slot.usedAt = ++clock;
          return span;
        }
      }
      return undefined;
    },
    /**
     * Reads the window starting at `position`: undefined when that record is not below the committed
     * end (nothing read), 'failed' when the read failed or came back without all of it (missing bytes).
     */
    load(position: number, length: number): Span | 'failed' | undefined {
      const want = Math.min(windowBytes, opts.readableEnd() - position);
      if (want < length) return undefined;
      const at = now();
      if (failed && position < failed.to && position + want > failed.from && at - failed.at < MAX_AGE_MS) return 'failed';
      const slot = slotFor();
      slot.span = undefined;
      let got: number;
      try {
        got = opts.readInto(position, slot.buf, want);
      } catch {
        got = -1;
      }
      if (got < length) {
        failed = { from: position, to: position + want, at };
        return 'failed';
      }
      slot.span = { buf: slot.buf.subarray(0, got), from: position, to: position + got };
      slot.usedAt = ++clock;
      slot.readAt = at;
      return slot.span;
    },
    /** Retention deletes everything before `through`: windows over it go. */
    dropBefore(through: number): void {
      for (const slot of slots) if (slot.span && slot.span.from < through) slot.span = undefined;
    },
  };
}

export type LogWindows = ReturnType<typeof createLogWindows>;
