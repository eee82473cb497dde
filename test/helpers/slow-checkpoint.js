// Preloaded (`NODE_OPTIONS=--require`) into a gateway under test, in every thread it starts: a checkpoint of
// herald.db's WAL run by a thread other than the main one (its checkpointer thread) keeps that thread blocked for
// HERALD_TEST_SLOW_CHECKPOINT_MS once its pages are copied, as a slow disk's fsync at the end of a checkpoint does
// (the slow-disk probe delayed fsync with strace, which CI does not have). Other files and the main thread are untouched.
// With HERALD_TEST_SLOW_CHECKPOINT_COPIES=1, closer to such a disk: only a checkpoint that copied pages into herald.db
// (its mtime moved; one with nothing to copy syncs nothing) is slowed, in every thread, the main one included.
const fs = require('node:fs');
const { isMainThread } = require('node:worker_threads');
const ms = Number(process.env.HERALD_TEST_SLOW_CHECKPOINT_MS) || 0;
const copiesOnly = process.env.HERALD_TEST_SLOW_CHECKPOINT_COPIES === '1';
if ((copiesOnly || !isMainThread) && ms > 0) {
  const Database = require('better-sqlite3');
  const pragma = Database.prototype.pragma;
  Database.prototype.pragma = function (source, options) {
    const checkpoint = /wal_checkpoint/i.test(source) && /herald\.db$/.test(this.name);
    const before = checkpoint && copiesOnly ? fs.statSync(this.name).mtimeMs : 0;
    const result = pragma.call(this, source, options);
    if (checkpoint && (!copiesOnly || fs.statSync(this.name).mtimeMs !== before))
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    return result;
  };
}
