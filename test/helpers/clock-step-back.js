// Preloaded (`NODE_OPTIONS=--require`) into a gateway under test, in every thread it starts: once the file
// named by HERALD_TEST_CLOCK_STEP_FILE exists, Date.now() runs that many milliseconds off (negative: a wall
// clock that NTP stepped back). Monotonic time (performance.now, timers) is untouched, as on a real host.
const fs = require('node:fs');
const file = process.env.HERALD_TEST_CLOCK_STEP_FILE;
const realNow = Date.now;
let offset = 0;
let checkedAt = 0;
Date.now = () => {
  const now = realNow();
  if (now - checkedAt >= 20 || now < checkedAt) {
    checkedAt = now;
    try {
      offset = Number(fs.readFileSync(file, 'utf8')) || 0;
    } catch {
      offset = 0;
    }
  }
  return now + offset;
};
