import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // netns tests create their own namespaces and spawn processes: give them room, and run
    // files in separate processes so a native crash is reported rather than taking the run down.
    pool: 'forks',
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // 2 cores: more workers only add contention and timing noise to the kernel tests.
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ['default'],
  },
});
