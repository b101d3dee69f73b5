// ESLint flat config (issue 16): typescript-eslint's type-checked recommended rules over the TypeScript
// sources, sorted imports everywhere, plain recommended rules for the browser client in web/.
import js from "@eslint/js";
import simpleImportSort from "eslint-plugin-simple-import-sort";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", ".nfx/**", ".tap/**", "bench/results/**"] },
  {
    files: ["**/*.ts"],
    extends: [js.configs.recommended, ...tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
      globals: { ...globals.node },
    },
    rules: {
      // Dropping keys by rest destructuring (`const { a: _a, ...rest } = x`) is how this codebase omits fields.
      "@typescript-eslint/no-unused-vars": ["error", { ignoreRestSiblings: true, argsIgnorePattern: "^_", varsIgnorePattern: "^_", caughtErrorsIgnorePattern: "^_" }],
      // tap's t.test() returns a PromiseWithSubtest that tap itself awaits: the usual top-level `t.test(...)` is not floating.
      "@typescript-eslint/no-floating-promises": ["error", { allowForKnownSafePromises: [{ from: "package", name: "PromiseWithSubtest", package: "@tapjs/core" }] }],
    },
  },
  {
    files: ["test/**/*.ts"],
    rules: {
      // tap ends a subtest when its callback's promise settles: `async (t) => { ... }` without an await is how a test ends without t.end().
      "@typescript-eslint/require-await": "off",
    },
  },
  {
    files: ["web/**/*.js"],
    extends: [js.configs.recommended],
    languageOptions: { sourceType: "module", globals: { ...globals.browser } },
  },
  {
    files: ["**/*.js", "**/*.ts"],
    plugins: { "simple-import-sort": simpleImportSort },
    rules: { "simple-import-sort/imports": "error", "simple-import-sort/exports": "error" },
  },
);
