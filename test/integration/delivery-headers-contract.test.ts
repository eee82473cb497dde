import Ajv2020 from 'ajv/dist/2020';
import { api } from '../helpers/http';
import { useGatewayForFile } from '../helpers/gateway';
import { loadContract } from '../helpers/openapi';

/**
 * `DeliveryHeadersInput` in the contract takes exactly the header values the server takes. Its values had
 * no pattern, so a client validating against the contract sent `" a"` or `"é"` and got a 400 the schema
 * did not predict (the text said "visible ASCII, spaces and tabs only inside").
 */
const gateway = useGatewayForFile();
const schema = loadContract().components!.schemas!.DeliveryHeadersInput as object;
const validate = new Ajv2020({ strict: false }).compile(schema);

it('agrees with the server on which delivery header values are valid', async () => {
  const values = ['', 'x', 'a b', 'a\tb', ' a', 'a ', '\ta', 'é', 'a\u0000b', 'a\nb', '\u007f', '~!', '***x'];
  for (const value of values) {
    const created = await api(gateway.url, 'POST', '/subscriptions', {
      sink: 'http://127.0.0.1:9/hook',
      delivery: { headers: { 'x-key': value } },
    });
    expect([value, created.status]).toEqual([value, validate({ 'x-key': value }) ? 201 : 400]);
  }
});
