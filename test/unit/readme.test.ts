import fs from 'node:fs';
import path from 'node:path';
import { Webhook } from 'standardwebhooks';
import ts from 'typescript';
import { configTable } from '../../src/config';
import { buildDeliveryRequest } from '../../src/delivery/request';
import { newSigningSecret } from '../../src/webhook-policy';

const readme = fs.readFileSync(path.resolve(__dirname, '..', '..', 'README.md'), 'utf8');

describe('README', () => {
  it('carries the configuration table generated from the config schema', () => {
    expect(readme).toContain(configTable());
  });

  it('keeps the two-command quick start', () => {
    expect(readme).toContain('npm install && npm start');
    expect(readme).toContain('npm test');
  });

  it('names in its code map only files and directories that exist', () => {
    const root = path.resolve(__dirname, '..', '..');
    const map = readme.slice(readme.indexOf('## Code map'), readme.indexOf('## Benchmarks'));
    const named: string[] = [];
    let dir = '';
    for (const line of map.split('\n')) {
      const top = /^([\w.-]+\/[\w./-]*|[\w-]+\.\w+)\s/.exec(line)?.[1];
      const sub = /^ {2}([\w-]+(?:\.\w+|\/))\s/.exec(line)?.[1];
      if (top) {
        if (top.endsWith('/')) dir = top;
        named.push(top);
      } else if (sub) named.push(dir + sub);
    }
    // Files the prose names (`consumer-config.ts`, …) exist somewhere in the code.
    const files = (dir: string) => fs.readdirSync(path.join(root, dir), { recursive: true }).map((f) => path.basename(String(f)));
    const sources = new Set(['src', 'console', 'test/helpers'].flatMap(files));
    const mentioned = [...map.matchAll(/(?<![\w.-])([a-z][\w-]*\.tsx?)\b/g)].map((m) => m[1]!);
    expect(named.length).toBeGreaterThan(40);
    expect(mentioned.length).toBeGreaterThan(40);
    expect(named.filter((p) => !fs.existsSync(path.join(root, p)))).toEqual([]);
    expect(mentioned.filter((f) => !sources.has(f))).toEqual([]);
  });
});

describe('README: Verify signatures', () => {
  type Verify = (secret: string, headers: Record<string, string | undefined>, body: Buffer, toleranceSeconds?: number) => boolean;

  /** The `node:crypto` snippet exactly as the README shows it, compiled and loaded. */
  function snippet(): Verify {
    const section = readme.slice(readme.indexOf('### Verify signatures'), readme.indexOf('## Delivery semantics'));
    const code = [...section.matchAll(/```ts\n([^]*?)```/g)].map((m) => m[1]!).find((c) => c.includes('node:crypto'));
    if (!code) throw new Error('no node:crypto snippet under "Verify signatures"');
    const js = ts.transpileModule(`${code}\nmodule.exports = verifyWebhook;`, {
      compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const module: { exports: unknown } = { exports: {} };
    new Function('require', 'module', 'exports', js)(require, module, module.exports);
    return module.exports as Verify;
  }

  /** A real delivery request, as the dispatcher builds and signs it. */
  const delivery = (
    secret: string,
    data: Buffer,
    contentType: string,
    format: 'binary' | 'structured' = 'binary',
    nowSeconds = Math.floor(Date.now() / 1000),
  ) =>
    buildDeliveryRequest({
      subscriptionId: '6f1c2f0e-3b5a-4c1e-9a51-0d9b8f3f2a10',
      secret,
      format,
      partition: 3,
      offset: 41,
      previousOffset: null,
      attempt: 1,
      deliveryId: 'dlv_' + 'a'.repeat(24),
      ackUrlBase: 'http://127.0.0.1:8080',
      redrive: false,
      event: {
        attributes: { specversion: '1.0', id: 'e1', source: '/s', type: 't', datacontenttype: contentType },
        data: { kind: 'bytes', bytes: data },
      },
      nowSeconds,
    });

  const bytes = Buffer.from([0x00, 0xff, 0xfe, 0x80, 0x41, 0xc3]);

  it('verifies a real delivery whose body is not UTF-8, and refuses a changed body, secret or stale timestamp', () => {
    const verify = snippet();
    const secret = newSigningSecret();
    const { headers, body } = delivery(secret, bytes, 'application/octet-stream');
    expect(body.equals(bytes)).toBe(true);
    expect(verify(secret, headers, body)).toBe(true);
    expect(verify(secret, headers, Buffer.concat([body, Buffer.from([0])]))).toBe(false);
    expect(verify(newSigningSecret(), headers, body)).toBe(false);
    expect(verify(secret, { ...headers, 'webhook-id': 'msg_other' }, body)).toBe(false);
    const stale = delivery(secret, bytes, 'application/octet-stream', 'binary', Math.floor(Date.now() / 1000) - 3600);
    expect(verify(secret, stale.headers, stale.body)).toBe(false);
    expect(verify(secret, stale.headers, stale.body, 7200)).toBe(true);
    expect(verify(secret, { ...headers, 'webhook-signature': `v1,${'A'.repeat(43)}= ${headers['webhook-signature']}` }, body)).toBe(true); // several signatures
    expect(verify(secret, { ...headers, 'webhook-signature': undefined }, body)).toBe(false);
  });

  it('is right that standardwebhooks cannot check such a delivery, and checks the structured one', () => {
    const secret = newSigningSecret();
    const wh = new Webhook(secret);
    const binary = delivery(secret, bytes, 'application/octet-stream');
    expect(() => wh.verify(binary.body, binary.headers)).toThrow(/No matching signature/); // the bytes are decoded as UTF-8 first
    const text = delivery(secret, Buffer.from('plain text'), 'text/plain');
    expect(snippet()(secret, text.headers, text.body)).toBe(true);
    expect(() => wh.verify(text.body, text.headers)).toThrow(SyntaxError); // then parsed as JSON
    expect(wh.verify(text.body, text.headers, { jsonParse: false })).toBeUndefined();
    const structured = delivery(secret, bytes, 'application/octet-stream', 'structured');
    expect(wh.verify(structured.body, structured.headers)).toMatchObject({ id: 'e1', data_base64: bytes.toString('base64') });
    expect(snippet()(secret, structured.headers, structured.body)).toBe(true);
  });
});
