import { heraldJson, runHerald, type RunningCli } from './cli';
import { startTestGateway, type TestGateway } from './gateway';
import { startReceiver, type Receiver, type ReceivedRequest, type Reply } from './receiver';
import { cleanupTmpDirs } from './tmp';

/** What the command-line test files share: a gateway, a receiver, and the CLIs a test left running. */
export interface CliGateway {
  readonly gw: TestGateway;
  readonly receiver: Receiver;
  /** Long-running CLIs (`listen`, `events tail`) a test started: killed after each test. */
  readonly running: RunningCli[];
  /** Runs `herald …` against the gateway. */
  herald(...args: string[]): ReturnType<typeof runHerald>;
  /** Runs `herald … --json` against the gateway and parses its output. */
  json(...args: string[]): ReturnType<typeof heraldJson>;
}

/**
 * Starts a gateway with `env` and a receiver answering with `answer` for the whole test file
 * (`beforeAll`), kills the CLIs a test left in `running` after it, and closes both and removes the
 * temp dirs after the file. Read `gw` and `receiver` inside tests and hooks.
 */
export function useCliGateway(env: Record<string, string>, answer: (req: ReceivedRequest) => Reply): CliGateway {
  let gw: TestGateway | undefined;
  let receiver: Receiver | undefined;
  const running: RunningCli[] = [];
  beforeAll(async () => {
    gw = await startTestGateway(env);
    receiver = await startReceiver(answer);
  });
  afterEach(async () => {
    for (const cli of running.splice(0)) await cli.kill();
  });
  afterAll(async () => {
    await receiver?.close();
    await gw?.close();
    cleanupTmpDirs();
  });
  const started = <T>(value: T | undefined): T => {
    if (value === undefined) throw new Error('the CLI test gateway is not running: read it inside a test or hook');
    return value;
  };
  return {
    get gw() {
      return started(gw);
    },
    get receiver() {
      return started(receiver);
    },
    running,
    herald: (...args) => runHerald(args, { url: started(gw).url }),
    json: (...args) => heraldJson(args, { url: started(gw).url }),
  };
}
