import type { Logger } from 'pino';

/**
 * Shutdown steps that each run even if an earlier one failed (a failing disk at shutdown must not
 * leave SQLite or a connection open); every failure is logged and the first is rethrown once all
 * have run, so the process exits non-zero. Used by both composition roots.
 */
export function shutdownSteps(log: Logger) {
  const failures: unknown[] = [];
  return {
    async step(what: string, fn: () => unknown): Promise<void> {
      try {
        await fn();
      } catch (err) {
        failures.push(err);
        log.error({ err }, `shutdown: ${what} failed`);
      }
    },
    rethrow(): void {
      if (failures.length > 0) throw failures[0];
    },
  };
}

/** Waits for `work`, or until `deadline` (epoch ms; none: for as long as it takes), whichever comes first. */
export async function untilDeadline(work: Promise<unknown>, deadline = Number.POSITIVE_INFINITY): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<void>((resolve) => {
    if (Number.isFinite(deadline)) timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
  });
  await Promise.race([work, late]);
  clearTimeout(timer);
}
