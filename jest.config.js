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
  // two workers took the whole suite from about 15 to 12½ minutes on the 2-core CI machine with other load beside it.
  maxWorkers: 2,
  testTimeout: 60000,
};
