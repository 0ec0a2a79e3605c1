// `npm run lint` (with the clang-format check of native/): typescript-eslint's type-aware
// recommended rules over src/, bench/ and test/ (the project's tsconfig), and ESLint's own
// recommended rules over their plain .mjs scripts. Each exception says why; a finding the rules
// are right about in general but not in one place is silenced there, with the reason.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

/** Node's globals the .mjs scripts use (a list, rather than one more package for it). */
const nodeGlobals = Object.fromEntries(
  ['process', 'console', 'Buffer', 'URL', 'performance', 'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate', 'AbortController', 'TextEncoder', 'TextDecoder', 'queueMicrotask', 'structuredClone', 'fetch'].map((g) => [g, 'readonly']),
);

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'node_modules/**', 'coverage/**', '.readme-example/**', 'test/scratch/**'] },
  {
    files: ['{src,bench,test}/**/*.ts'],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: { parserOptions: { project: './tsconfig.json', tsconfigRootDir: import.meta.dirname } },
    rules: {
      // `async` without `await` is how a synchronous implementation of an async interface (a fake
      // table, a stop() with nothing to wait for) makes its throws rejections: deliberate here.
      '@typescript-eslint/require-await': 'off',
      // Handing on a caught value (typed unknown) is forwarding an error, not inventing a non-Error.
      '@typescript-eslint/prefer-promise-reject-errors': ['error', { allowThrowingUnknown: true }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // vitest types its asymmetric matchers (expect.objectContaining, expect.stringMatching...)
      // as any, and tests pass them everywhere; member access, calls and returns on any stay checked.
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
    },
  },
  {
    files: ['{src,bench,test}/**/*.mjs'],
    extends: [js.configs.recommended],
    languageOptions: { globals: nodeGlobals },
  },
);
