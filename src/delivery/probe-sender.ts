import type { HttpSender, ProbeResult } from './http-sender';

/**
 * The main thread's sender, which only probes sinks (validation handshakes; the delivery thread has
 * its own). The sender and undici are loaded at the first probe, not at every start: about 0.2 s of
 * CPU a start, which most gateways never need.
 */
export function createProbeSender(opts: { allowPrivate: boolean }) {
  let loading: Promise<HttpSender> | undefined;
  // A load that failed (no descriptor left to read the module with: `EMFILE`) is tried again at the next
  // probe: kept, it failed every later handshake until a restart, and the shutdown with it.
  const sender = () =>
    (loading ??= import('./http-sender').then(
      (m) => m.createHttpSender(opts),
      (err: unknown) => {
        loading = undefined;
        throw err;
      },
    ));
  return {
    probe: async (sink: string, headers: Record<string, string>, timeoutMs: number): Promise<ProbeResult> =>
      (await sender()).probe(sink, headers, timeoutMs),
    async close(deadline: number): Promise<void> {
      const loaded = await loading?.catch(() => undefined);
      await loaded?.close(deadline);
    },
  };
}
