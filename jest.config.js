/** @type {import('jest').Config} */
// ts-jest only transpiles each file (tsconfig.json sets isolatedModules): the type-check is one `tsc --noEmit` over
// src, test and bench in `npm run lint`, instead of a language service per Jest worker re-checking what each suite imports.
const tsJest = ['ts-jest', { tsconfig: 'tsconfig.json' }];
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
