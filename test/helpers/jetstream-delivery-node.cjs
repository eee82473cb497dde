// A Herald "node" for crash tests: the built JetStream delivery engine (dist/) in a process of its own,
// delivering one subscription. argv[2] is JSON: { servers, prefix, partitions, name, record }.
// Prints "ready" once it pulls; the test SIGKILLs it.
const path = require('node:path');
const { createJetStreamDelivery } = require(path.resolve(__dirname, '..', '..', 'dist', 'jetstream', 'delivery', 'jetstream-delivery.js'));
const { createLogger } = require(path.resolve(__dirname, '..', '..', 'dist', 'logger.js'));

const opts = JSON.parse(process.argv[2]);
(async () => {
  const delivery = await createJetStreamDelivery({
    nats: { servers: opts.servers, replicas: 3, prefix: opts.prefix },
    partitions: opts.partitions,
    log: createLogger(process.env.HERALD_TEST_LOG_LEVEL || 'silent'),
    allowPrivateSinks: true,
    ackUrlBase: () => `http://${opts.name}.invalid`,
  });
  await delivery.add(opts.record, { onGone: () => {} });
  process.stdout.write('ready\n');
})().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
