import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Builds dist/ once: the fault and ops suites spawn the real server process.
    globalSetup: ['test/helpers/global-setup.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Integration and e2e suites start real servers and external daemons; two workers match the 2-core machine.
    maxWorkers: 2,
    reporters: ['default'],
  },
});
