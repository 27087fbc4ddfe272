// What dist/inputs/config/validators.js exports. That module is generated at
// build time by scripts/gen-validators.ts (Ajv's standalone code for the
// schemas in core/config/schema.ts); it exists only in dist/.
import type { ErrorObject } from "ajv";
import type { Config, PolicyConfig } from "../../core/config/schema.js";

/** A generated validator: true when `data` has the schema's structure; else `errors` says why. */
export interface GeneratedValidator<T> {
  (data: unknown): data is T;
  errors?: ErrorObject[] | null;
}

/** The configuration file (ConfigSchema), with every error (allErrors) and each error's schema (verbose). */
export declare const validateConfig: GeneratedValidator<Config>;
/** The cluster cache's policies (CachedPoliciesSchema). */
export declare const validateCachedPolicies: GeneratedValidator<PolicyConfig[]>;
