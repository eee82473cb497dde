/**
 * Turns the first SIGINT (Ctrl-C), SIGTERM or SIGHUP (its terminal closed) into a call of `onSignal`, so a long-running command
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
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
  for (const signal of signals) process.on(signal, handler);
  return {
    dispose() {
      for (const signal of signals) process.off(signal, handler);
    },
  };
}

const stdoutClosedHandlers = new Set<() => void>();

/**
 * While registered, standard output closing under the command (`herald listen | head -1`) calls
 * `onClosed` instead of exiting at once, so the command can clean up (listen deletes its
 * subscription) and then end as it does on Ctrl-C.
 */
export function untilStdoutClosed(onClosed: () => void): { dispose(): void } {
  stdoutClosedHandlers.add(onClosed);
  return { dispose: () => void stdoutClosedHandlers.delete(onClosed) };
}

/**
 * Standard output was closed by its reader (EPIPE). Returns whether a command cleans up first
 * (it then ends by itself); `false`: nothing to clean up, the process may exit at once.
 */
export function stdoutClosed(): boolean {
  if (stdoutClosedHandlers.size === 0) return false;
  for (const handler of [...stdoutClosedHandlers]) handler();
  return true;
}
