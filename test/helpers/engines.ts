import { startJetStreamTestGateway, startTestGateway, type Env } from './gateway';
import { describeWithNats, startNatsCluster, uniquePrefix, type NatsCluster } from './nats-cluster';
import { cleanupTmpDirs } from './tmp';

/**
 * Running a contract suite against both engines (HERALD_STORE=local and jetstream): what a client
 * sees must not depend on the engine. `describeEngine` names the block (and skips or fails the
 * JetStream one without nats-server, see `describeWithNats`); `useEngineGateway` runs one gateway on
 * that engine for the whole block.
 */

export type Engine = 'local' | 'jetstream';
export const ENGINES = ['local', 'jetstream'] as const;

export const describeEngine = (engine: Engine, fn: () => void): void =>
  engine === 'local' ? describe('on the local engine', fn) : describeWithNats('on the jetstream engine', fn);

export interface EngineGateway {
  readonly url: string;
  /**
   * Closes the gateway and starts a new one on the same storage (the local data dir, or the same
   * cluster and HERALD_NATS_PREFIX); `url` is the new one's afterwards.
   */
  restart(): Promise<void>;
}

/** One gateway (and, for JetStream, one 3-server cluster) for the engine's whole describe block. */
export function useEngineGateway(engine: Engine, env: Env = {}): EngineGateway {
  let url: string | undefined;
  let close: (() => Promise<void>) | undefined;
  let cluster: NatsCluster | undefined;
  let storage: Env = {};

  async function start(): Promise<void> {
    if (engine === 'local') {
      const gw = await startTestGateway({ ...env, ...storage });
      storage = { HERALD_DATA_DIR: gw.dataDir };
      [url, close] = [gw.url, gw.close];
      return;
    }
    cluster ??= await startNatsCluster();
    storage = { HERALD_NATS_PREFIX: storage.HERALD_NATS_PREFIX ?? env.HERALD_NATS_PREFIX ?? uniquePrefix('contract') };
    const gw = await startJetStreamTestGateway(cluster.serversEnv, { ...env, ...storage });
    [url, close] = [gw.url, gw.close];
  }

  beforeAll(start, 120_000);
  afterAll(async () => {
    await close?.();
    await cluster?.stop();
    cleanupTmpDirs();
  }, 60_000);
  return {
    get url() {
      if (!url) throw new Error('the gateway is not running: read url inside a test or hook');
      return url;
    },
    async restart() {
      const closing = close;
      [url, close] = [undefined, undefined];
      await closing?.();
      await start();
    },
  };
}
