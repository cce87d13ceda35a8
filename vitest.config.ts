import { defineConfig } from 'vitest/config';

/**
 * Two suites: `unit` (npm test: everything that needs no browser) and `browser` (npm run test:browser:
 * test/browser/*, real Chromium). CI (.ci/run) runs both.
 *
 * Speed on small machines: vitest's default is one worker per core minus one, which is a single
 * worker on 2 cores; most of our test time is spent waiting on child processes (the CLI through tsx)
 * or in onnxruntime, so two workers overlap that wait. Processes (forks), not threads: the native
 * bindings (onnxruntime-node, tokenizers) are not safe to load in several threads of one process.
 */
export default defineConfig({
  test: {
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    projects: [
      {
        extends: true,
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/browser/**'],
        },
      },
      {
        extends: true,
        test: {
          name: 'browser',
          include: ['test/browser/**/*.test.ts'],
          // One file at a time: each rebuilds dist/web in its beforeAll and drives its own Chromium.
          maxWorkers: 1,
        },
      },
    ],
  },
});
