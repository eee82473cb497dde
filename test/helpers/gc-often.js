// Preloaded (`node --expose-gc -r`) into a command under test: a full garbage collection every 100 ms, so
// what holds only through a WeakRef goes at once, as it does after about 10 s of an idle process.
globalThis.setInterval(() => globalThis.gc(), 100).unref();
