// Network namespaces for the privileged tests: src/dev/netns.ts, plus `describeNetns`.
import { describe } from 'vitest';

export * from '../../src/dev/netns.js';

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** `describe` for tests that need root (netns, netfilter). Skipped with a visible reason otherwise. */
export const describeNetns: typeof describe = (isRoot
  ? describe
  : ((name: string, ...rest: unknown[]) => {
      console.warn(`SKIPPED (needs root for network namespaces): ${name}`);
      return (describe.skip as unknown as (...a: unknown[]) => void)(name, ...rest);
    })) as typeof describe;
