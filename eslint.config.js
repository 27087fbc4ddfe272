// Flat config: typescript-eslint's recommended rules on top of ESLint's.
import js from "@eslint/js";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "bgp/generated/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  // dependency-cruiser reads its config as CommonJS.
  { files: ["**/*.cjs"], languageOptions: { sourceType: "commonjs", globals: { module: "writable" } } },
  {
    rules: {
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      // One copy of the library per process, the bundled one (inputs/k8s/client.ts says why).
      "no-restricted-imports": [
        "error",
        {
          paths: [
            {
              name: "@kubernetes/client-node",
              message: "import it from inputs/k8s/client.ts, which the build bundles",
            },
          ],
        },
      ],
    },
  },
  { files: ["inputs/k8s/client.ts"], rules: { "no-restricted-imports": "off" } },
);
