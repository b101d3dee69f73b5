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
