// ESLint (flat config): typescript-eslint's type-checked rules, and the import boundaries of
// DESIGN.md ("Seams and who may import whom") as no-restricted-imports per folder.
// Lint only: formatting is not enforced here (Prettier would rewrite most files; left to a later pass).
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import tseslint from 'typescript-eslint';

// ---- Import boundaries -------------------------------------------------------------------------
// Import sources are matched as written. A relative import into a sibling subsystem starts with
// one or more ./ or ../ segments, then the folder name.
const rel = (folder) => `^(\\.\\.?/)+${folder}/`;
const seams = 'DESIGN.md, "Seams and who may import whom"';

const ban = {
  hono: { regex: '^(hono|@hono/)', message: `no hono here: hono belongs to http/ (${seams}).` },
  undici: { regex: '^undici(/|$)', message: `no undici here: undici belongs to upstream/ (${seams}).` },
  fs: { regex: '^(node:)?fs(/|$)', message: `no fs here: the filesystem belongs to storage/ (${seams}).` },
  registry: { regex: rel('registry'), message: `this layer does not know registry/ (${seams}).` },
  http: { regex: rel('http'), message: `this layer does not know http/ (${seams}).` },
  storage: { regex: rel('storage'), message: `this layer does not know storage/ (${seams}).` },
  upstream: { regex: rel('upstream'), message: `this layer does not know upstream/ (${seams}).` },
  cache: { regex: rel('cache'), message: `the memory caches decorate storage; this layer does not know them (${seams}).` },
  transfer: { regex: rel('transfer'), message: `this layer does not know transfer/ (${seams}).` },
};

// Everywhere in src/ except the composition root: concrete stores and upstream clients are built
// only in mirror.ts/main.ts; other code depends on the interfaces (storage/store.ts,
// storage/meta-store.ts, upstream/types.ts) and upstream's classified errors (upstream/errors.ts).
const concrete = {
  storage: {
    regex: `${rel('storage')}(?!(store|meta-store)\\.js$)`,
    message: 'concrete storage is built only in the composition root (mirror.ts/main.ts); import the BlobStore/MetaStore interfaces (storage/store.js, storage/meta-store.js).',
  },
  upstream: {
    regex: `${rel('upstream')}(?!(types|errors)\\.js$)`,
    message: 'the upstream client is built only in the composition root (mirror.ts/main.ts); import the Upstream interface (upstream/types.js) or its errors (upstream/errors.js).',
  },
  root: { regex: '^(\\.\\.?/)+(mirror|main)\\.js$', message: 'nothing imports the composition root (mirror.ts/main.ts).' },
};

// A folder's bans plus the composition-root rule (minus folders it already bans outright).
const boundary = (files, ...banned) => ({
  files,
  rules: {
    'no-restricted-imports': [
      'error',
      { patterns: [...banned, ...Object.entries(concrete).filter(([k]) => !banned.includes(ban[k])).map(([, p]) => p)] },
    ],
  },
});

export default defineConfig(
  { ignores: ['dist/', 'bench/out/', 'node_modules/', 'data/', 'coverage/'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // Same convention as tsc's noUnusedParameters: a leading underscore marks "unused on purpose".
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' },
      ],
      // `void promise` is how this code says "fire and forget, errors handled elsewhere".
      '@typescript-eslint/no-floating-promises': ['error', { ignoreVoid: true }],
      // The defaults (numbers, booleans, nullish, Error, URL, URLSearchParams from lib) plus Node's own
      // URL/URLSearchParams (@types/node declares them in module "url"), whose toString is well defined.
      '@typescript-eslint/restrict-template-expressions': [
        'error',
        { allow: [{ from: 'lib', name: ['Error', 'URL', 'URLSearchParams'] }, { from: 'package', package: 'url', name: ['URL', 'URLSearchParams'] }] },
      ],
    },
  },

  {
    files: ['test/**/*.ts'],
    rules: {
      // Tests read parsed JSON/YAML documents (any) and let the assertion be the check: hundreds of hits, no bugs.
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // `(await r.json()) as any` is how a test reads an error envelope or page it then asserts on.
      '@typescript-eslint/no-explicit-any': 'off',
      // Tests script failures with whatever a peer may throw or reject with, and stringify what they got.
      '@typescript-eslint/only-throw-error': 'off',
      '@typescript-eslint/prefer-promise-reject-errors': 'off',
      '@typescript-eslint/no-base-to-string': 'off',
      // Async fakes without an await keep the shape of the interface they stand in for.
      '@typescript-eslint/require-await': 'off',
      // Accessor functions handed to Object.defineProperty are meant to be unbound.
      '@typescript-eslint/unbound-method': 'off',
    },
  },

  // The download thread's worker script is plain CommonJS (Node runs it as is, also under the tests).
  {
    files: ['**/*.cjs'],
    ...tseslint.configs.disableTypeChecked,
    languageOptions: {
      ...tseslint.configs.disableTypeChecked.languageOptions,
      sourceType: 'commonjs',
      globals: { require: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly' },
    },
    rules: { ...tseslint.configs.disableTypeChecked.rules, '@typescript-eslint/no-require-imports': 'off' },
  },

  // Seams (src/ only; tests and the benchmark build whatever they need).
  { ...boundary(['src/**/*.ts']), ignores: ['src/main.ts', 'src/mirror.ts'] },
  boundary(['src/http/**/*.ts'], ban.storage, ban.upstream, ban.cache, ban.transfer, ban.undici, ban.fs),
  boundary(['src/registry/**/*.ts'], ban.http, ban.hono, ban.undici, ban.fs),
  boundary(['src/transfer/**/*.ts'], ban.registry, ban.http, ban.cache, ban.hono, ban.undici, ban.fs),
  boundary(['src/upstream/**/*.ts'], ban.registry, ban.storage, ban.http, ban.cache, ban.transfer, ban.hono, ban.fs),
  boundary(['src/storage/**/*.ts'], ban.registry, ban.upstream, ban.http, ban.cache, ban.transfer, ban.hono, ban.undici),
  // The download thread implements transfer's BlobSinks over storage's ExternalAppend and upstream's BlobSink.
  boundary(['src/offload/**/*.ts'], ban.registry, ban.http, ban.cache, ban.hono, ban.fs),
);
