import type { LoadResult, LoadSpec } from '../procs/loadgen';
import { forkRpc } from './children';

export type { LoadResult, LoadSpec };

export interface RunningLoad {
  /** Stop issuing; the result arrives once what is in flight is answered (or the drain timeout passes). */
  stop(): Promise<void>;
  result: Promise<LoadResult>;
}

/** Starts a load generator in a new process. */
export async function startLoad(spec: LoadSpec): Promise<RunningLoad> {
  const gen = await forkRpc('loadgen');
  const result = gen
    .call<{ result: LoadResult }>('start', { spec })
    .then((r) => r.result)
    .finally(() => gen.stop());
  return {
    async stop() {
      await gen.call('stop').catch(() => undefined);
    },
    result,
  };
}

/** Runs a load generator to completion (duration or request count in the spec). */
export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  return (await startLoad(spec)).result;
}
