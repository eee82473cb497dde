import type { HttpSender, ProbeResult } from './http-sender';

/**
 * The main thread's sender, which only probes sinks (validation handshakes; the delivery thread has
 * its own). The sender and undici are loaded at the first probe, not at every start: about 0.2 s of
 * CPU a start, which most gateways never need.
 */
export function createProbeSender(opts: { allowPrivate: boolean }) {
  let loading: Promise<HttpSender> | undefined;
  const sender = () => (loading ??= import('./http-sender').then((m) => m.createHttpSender(opts)));
  return {
    probe: async (sink: string, headers: Record<string, string>, timeoutMs: number): Promise<ProbeResult> =>
      (await sender()).probe(sink, headers, timeoutMs),
    async close(deadline: number): Promise<void> {
      if (loading) await (await loading).close(deadline);
    },
  };
}
