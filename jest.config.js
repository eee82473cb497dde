/** @type {import('jest').Config} */
const tsJest = ['ts-jest', { tsconfig: 'tsconfig.json', diagnostics: { warnOnly: false } }];
module.exports = {
  projects: [
    { displayName: 'unit', testEnvironment: 'node', transform: { '^.+\\.ts$': tsJest }, testMatch: ['<rootDir>/test/unit/**/*.test.ts'] },
    {
      displayName: 'integration',
      testEnvironment: 'node',
      transform: { '^.+\\.ts$': tsJest },
      testMatch: ['<rootDir>/test/integration/**/*.test.ts'],
      slowTestThreshold: 30,
    },
  ],
  globalSetup: '<rootDir>/test/global-setup.js',
  // Jest's default on 2 cores is one worker. Most suites wait on child processes, servers and timers, not the CPU:
  // two workers take the fresh-clone CI from about 15 minutes to about 9 on the 2-core CI machine.
  maxWorkers: 2,
  testTimeout: 60000,
};
