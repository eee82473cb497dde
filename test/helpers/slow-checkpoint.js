// Preloaded (`NODE_OPTIONS=--require`) into a gateway under test, in every thread it starts: a checkpoint of
// herald.db's WAL run by a thread other than the main one (its checkpointer thread) keeps that thread blocked for
// HERALD_TEST_SLOW_CHECKPOINT_MS once its pages are copied, as a slow disk's fsync at the end of a checkpoint does
// (the slow-disk probe delayed fsync with strace, which CI does not have). Other files and the main thread are untouched.
const { isMainThread } = require('node:worker_threads');
const ms = Number(process.env.HERALD_TEST_SLOW_CHECKPOINT_MS) || 0;
if (!isMainThread && ms > 0) {
  const Database = require('better-sqlite3');
  const pragma = Database.prototype.pragma;
  Database.prototype.pragma = function (source, options) {
    const result = pragma.call(this, source, options);
    if (/wal_checkpoint/i.test(source) && /herald\.db$/.test(this.name)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    return result;
  };
}
