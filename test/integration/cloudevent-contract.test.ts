import { useGatewayForFile } from '../helpers/gateway';
import { createContractChecker, loadContract } from '../helpers/openapi';

/**
 * The contract's `CloudEvent` schema refuses what ingest refuses, for the attributes JSON Schema can say:
 * an integer extension value past 32 bits, a `time` with a space for its `T` (JSON Schema's date-time
 * takes one, RFC 3339's grammar does not), and `data_base64` that is not padded base64. Each was valid
 * by the schema and a 400 from the server.
 */
const gateway = useGatewayForFile();
const checker = createContractChecker(loadContract());
const isValid = (event: unknown) => {
  try {
    checker.validateValue('/components/schemas/CloudEvent', event, 'event');
    return true;
  } catch {
    return false;
  }
};

it('agrees with ingest on extension integers, time and data_base64', async () => {
  const cases: Record<string, unknown>[] = [
    { ext: 2147483647 },
    { ext: -2147483648 },
    { ext: 2147483648 },
    { ext: -2147483649 },
    { time: '2026-01-01T00:00:00Z' },
    { time: '2026-01-01t00:00:00.5+05:30' },
    { time: '2026-01-01 00:00:00Z' },
    { data_base64: 'aGk=' },
    { data_base64: '' },
    { data_base64: 'aGk' },
    { data_base64: 'aG k=' },
    { data_base64: '!!!!' },
  ];
  let n = 0;
  for (const extra of cases) {
    const event = { specversion: '1.0', id: `ce-${n++}`, source: '/contract/cloudevent', type: 't', ...extra };
    const res = await fetch(`${gateway.url}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/cloudevents+json' },
      body: JSON.stringify(event),
    });
    expect([extra, res.status]).toEqual([extra, isValid(event) ? 202 : 400]);
  }
});
