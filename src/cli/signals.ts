/**
 * Turns the first SIGINT (Ctrl-C) or SIGTERM into a call of `onSignal`, so a long-running command
 * (`events tail`, `listen`) can clean up and exit 0. A second signal while it cleans up exits at
 * once with status 1 (after `onForce`, which says what was left undone).
 */
export function untilSignal(onSignal: (signal: NodeJS.Signals) => void, onForce?: () => void): { dispose(): void } {
  let received = false;
  const handler = (signal: NodeJS.Signals) => {
    if (received) {
      onForce?.();
      process.exit(1);
    }
    received = true;
    onSignal(signal);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
