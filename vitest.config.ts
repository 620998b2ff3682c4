import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    // Two cores: run the files one after another so that the timing-free tests do not starve each other.
    fileParallelism: false,
  },
});
