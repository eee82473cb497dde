/**
 * Everything ever sent to one data dir, so that after crashes and restarts the
 * log can be checked exactly: every event answered 2xx is in the log once, and
 * no event is in it twice.
 */
import type { Check } from './common';
import type { LoadResult } from './load';
import { scanLog } from './log-scan';
import { parseId } from './payload';

export interface History {
  loads: { tag: string; result: LoadResult; batchSize?: number }[];
}

export function acknowledged(h: History): number {
  return h.loads.reduce((n, l) => n + l.result.okEvents, 0);
}

export function verifyLog(dataDir: string, h: History, headsSum: number): Check[] {
  const byTag = new Map<string, { batch: number; conns: Uint8Array[] }>();
  for (const l of h.loads) {
    const batch = l.batchSize ?? 1;
    byTag.set(l.tag, { batch, conns: (l.result.tracks ?? []).map((t) => new Uint8Array(t.sent * batch)) });
  }
  let foreign = 0;
  let duplicates = 0;
  const scan = scanLog(dataDir, (id) => {
    const p = parseId(id);
    const entry = p && byTag.get(p.tag);
    const arr = p && entry?.conns[p.conn];
    const idx = p ? p.seq * (entry?.batch ?? 1) + (p.index ?? 0) : -1;
    if (!arr || idx >= arr.length) {
      foreign++;
      return;
    }
    if (arr[idx]! >= 1) duplicates++;
    if (arr[idx]! < 255) arr[idx]!++;
  });
  let acked = 0;
  let missing = 0;
  let unackedStored = 0;
  const missingSample: string[] = [];
  for (const l of h.loads) {
    const entry = byTag.get(l.tag)!;
    for (const [conn, t] of (l.result.tracks ?? []).entries()) {
      const failed = new Set(t.failed);
      const arr = entry.conns[conn]!;
      for (let seq = 0; seq < t.sent; seq++) {
        for (let i = 0; i < entry.batch; i++) {
          const count = arr[seq * entry.batch + i]!;
          if (failed.has(seq)) {
            if (count > 0) unackedStored++;
            continue;
          }
          acked++;
          if (count === 0) {
            missing++;
            if (missingSample.length < 5) missingSample.push(`${l.tag}-${conn}-${seq}${entry.batch > 1 ? `-${i}` : ''}`);
          }
        }
      }
    }
  }
  return [
    {
      name: 'log scan: no torn or corrupt frame after recovery',
      ok: scan.bad === 0,
      detail: { records: scan.records, bytes: scan.bytes, bad: scan.bad },
    },
    {
      name: 'every event answered 2xx is in the log',
      ok: missing === 0 && acked === acknowledged(h),
      detail: { acknowledged: acked, missing, missingSample, storedThoughNotAcknowledged: unackedStored },
    },
    { name: 'no event is in the log twice', ok: duplicates === 0, detail: { duplicates, foreign } },
    {
      name: 'sum of partition heads = records in the log',
      ok: headsSum === scan.records,
      detail: { heads: headsSum, records: scan.records },
    },
  ];
}
