import { defineConfig } from 'vitest/config';

/**
 * Three suites: `unit` (npm test: everything run in-process), `cli` (npm run test:cli: the attnscope
 * command as real processes — every option, bad input, exports, the cache, no litter) and `browser`
 * (npm run test:browser: test/browser/*, real Chromium). CI (.ci/run) runs all three.
 *
 * Speed on small machines: vitest's default is one worker per core minus one, which is a single
 * worker on 2 cores; most of our test time is spent waiting on child processes (the CLI through tsx)
 * or in onnxruntime, so two workers overlap that wait. Processes (forks), not threads: the native
 * bindings (onnxruntime-node, tokenizers) are not safe to load in several threads of one process.
 * The unit suite runs its files without isolation (each worker process runs file after file with
 * one module cache): a fresh process per file re-imported our modules and onnxruntime 124 times,
 * about half the CPU of the suite's 52 shortest files. Tests that change process.env restore it.
 */
/** Suites that run the command as processes (test/helpers/cli.ts: the build when current, else tsx). */
const CLI_SUITES = ['test/cli*.test.ts', 'test/export-cli.test.ts', 'test/bad-input.test.ts', 'test/cache-cli.test.ts', 'test/no-litter.test.ts'];

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
          exclude: ['test/browser/**', ...CLI_SUITES],
          isolate: false,
        },
      },
      {
        extends: true,
        test: {
          name: 'cli',
          include: CLI_SUITES,
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
