import type { MetaRepo } from './meta-repo';

/** `meta` key in herald.db: per partition, the offset past the newest event retention has deleted. */
const KEY = 'retention_floors';
/** `meta` key in herald.db: the log position retention deleted up to (the base of the oldest segment it kept). */
const LOG_START_KEY = 'retention_log_start';
/** Set once herald.db's record is whole: made with it, or copied from an index.db that kept it before. */
const WHOLE_KEY = 'retention_recorded';

/**
 * Retention's floors, kept in herald.db beside the delivery state: index.db (where heads live) can be
 * rebuilt from the log, but the log no longer holds what retention deleted. A partition whose every
 * event went would otherwise restart at offset 0 after index.db is lost, reusing offsets readers saw.
 */
export function createRetentionFloors(meta: MetaRepo) {
  function load(): number[] {
    const raw = meta.get(KEY);
    if (raw === undefined) return [];
    const parsed: unknown = JSON.parse(raw);
    return Array.isArray(parsed) ? parsed.map((n) => (Number.isSafeInteger(n) && n > 0 ? (n as number) : 0)) : [];
  }
  return {
    /** Per partition (index), the lowest next offset retention allows; missing or 0: none. */
    load,
    /** Raises the floors to `floors` where they are higher (a floor never moves back). */
    raise(floors: readonly number[]): void {
      const current = load();
      const next = floors.map((f, p) => Math.max(f, current[p] ?? 0));
      for (let p = floors.length; p < current.length; p++) next.push(current[p]!);
      if (next.some((f, p) => f !== (current[p] ?? 0))) meta.set(KEY, JSON.stringify(next));
    },
    /**
     * Where retention deleted the log up to, recorded before its files go; undefined when this data dir
     * has no record of it (retention never deleted, or only a version before this record did).
     */
    logStart(): number | undefined {
      const raw = meta.get(LOG_START_KEY);
      return raw === undefined ? undefined : Number(raw);
    },
    /**
     * Whether the record is whole: this herald.db was made by a version that keeps it, or had an
     * index.db with the record of older ones beside it; else retention may have run unrecorded here.
     */
    whole: (): boolean => meta.get(WHOLE_KEY) === '1',
    markWhole(): void {
      meta.set(WHOLE_KEY, '1');
    },
    /** Raises the recorded log start to `through` (it never moves back). */
    raiseLogStart(through: number): void {
      const current = this.logStart();
      if (current === undefined || through > current) meta.set(LOG_START_KEY, through);
    },
  };
}
export type RetentionFloors = ReturnType<typeof createRetentionFloors>;
