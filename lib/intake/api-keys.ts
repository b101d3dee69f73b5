// API keys and their scopes: the one key table behind the HTTP API and `nfx.ext.api.*`, and the scope check every operation makes.
import { createHash } from "node:crypto";

import { API_SCOPES } from "../../config/schema.js";
import type { Config } from "../core/config.js";
import { ScopeMissing, Unauthenticated } from "../core/errors.js";
import type { Producer } from "./intake.js";

export { API_SCOPES };
/** One API-key scope; `admin` holds every other one. */
export type Scope = (typeof API_SCOPES)[number];

/** The caller of a route that needs no key (signed links, provider webhooks) or of a user token: no scope, sends nothing. */
export const NOBODY: Producer = { name: "(none)", categories: [], priorities: [], scopes: [] };

const sha = (s: string): string => createHash("sha256").update(s).digest("hex");

/** Whether `p` holds one of `anyOf`, or `admin`. */
export function hasScope(p: Producer, anyOf: readonly Scope[]): boolean {
  return p.scopes.includes("admin") || anyOf.some((s) => p.scopes.includes(s));
}

/**
 * Throws {@link ScopeMissing} (403) unless `p` holds one of `anyOf` (or `admin`). The message names
 * the scope wanted, the key and the operation (`what`), e.g. `authorization: key billing lacks scope
 * campaigns.control, needed for POST /v1/campaigns/{id}/{action}`; `field` is where the key came from
 * (`authorization` over HTTP, `Nfx-Api-Key` over NATS). Callers check before changing anything.
 */
export function requireScope(p: Producer, anyOf: readonly Scope[], o: { field: string; what: string }): void {
  if (hasScope(p, anyOf)) return;
  throw new ScopeMissing(`${o.field}: key ${p.name} lacks scope ${anyOf.join(" or ")}, needed for ${o.what}`, { field: o.field });
}

/**
 * The configured API keys (`apiKeys`), looked up by the SHA-256 of the presented secret, so the
 * table holds no secret in the clear after start-up. One instance per surface; both read the same config.
 */
export class ApiKeys {
  private readonly byHash: Map<string, Producer>;

  constructor(keys: Config["apiKeys"]) {
    this.byHash = new Map(keys.map((k) => [sha(k.key), { name: k.name, categories: k.categories, priorities: k.priorities, scopes: k.scopes }]));
  }

  /** How many keys are configured. */
  get size(): number {
    return this.byHash.size;
  }

  /** The caller holding `key`, or undefined for an absent or unknown key. */
  find(key: string | undefined | null): Producer | undefined {
    return key ? this.byHash.get(sha(key)) : undefined;
  }

  /**
   * The caller holding `key`; throws {@link Unauthenticated} (401) naming `field` when the key is
   * absent or unknown. `how` says how a key is presented (`a valid \`Bearer <api key>\` header`).
   */
  authenticate(key: string | undefined | null, field: string, how: string): Producer {
    const p = this.find(key);
    if (!p) throw new Unauthenticated(`${field}: ${how} is required`, { field });
    return p;
  }
}
