// What the sandbox providers received: every request, its answer, and counts per device including duplicates.

import { Faults, SANDBOX_PROVIDERS, type SandboxProvider } from "./faults.js";

export type { SandboxProvider };

/** One request a sandbox answered. */
export interface Delivery {
  provider: SandboxProvider;
  /** Device token, email address or phone number. */
  token: string;
  /** The app or account the request came from (APNs topic, FCM project, SendGrid API key name, Twilio account sid). */
  account?: string;
  /** The nfx notification id carried in the payload (APNs `nfx.id`, FCM `data.nfx_id`). */
  nid?: string;
  title?: string;
  body?: string;
  data?: Record<string, unknown>;
  headers: Record<string, string>;
  status: number;
  reason?: string;
  at: number;
}

export interface ProviderStats {
  requests: number;
  accepted: number;
  rejected: number;
  /** Distinct (token, notification) pairs accepted. */
  unique: number;
  /** Accepted requests beyond the first for the same (token, notification). */
  duplicates: number;
}

/** Records deliveries in memory. One per sandbox process, shared by its providers. */
export class Recorder {
  readonly deliveries: Delivery[] = [];
  /** Faults injected at start or at run time (control API `POST /faults`, `DELETE /faults`). */
  readonly faults = new Faults();

  /** Accepted requests per provider, kept as they are recorded (cheap to poll while a benchmark runs). */
  readonly acceptedCount: Record<SandboxProvider, number> = Object.fromEntries(SANDBOX_PROVIDERS.map((p) => [p, 0])) as Record<SandboxProvider, number>;

  record(d: Delivery): void {
    this.deliveries.push(d);
    if (d.status >= 200 && d.status < 300) this.acceptedCount[d.provider]++;
  }

  /** Accepted deliveries, optionally of one provider. */
  accepted(provider?: SandboxProvider): Delivery[] {
    return this.deliveries.filter((d) => d.status >= 200 && d.status < 300 && (!provider || d.provider === provider));
  }

  /** Accepted count per device token of one provider. */
  countsByDevice(provider: SandboxProvider): Record<string, number> {
    const out: Record<string, number> = {};
    for (const d of this.accepted(provider)) out[d.token] = (out[d.token] ?? 0) + 1;
    return out;
  }

  stats(): Record<SandboxProvider, ProviderStats> {
    const one = (p: SandboxProvider): ProviderStats => {
      const all = this.deliveries.filter((d) => d.provider === p);
      const ok = all.filter((d) => d.status >= 200 && d.status < 300);
      const unique = new Set(ok.map((d) => `${d.token}|${d.nid ?? ""}`)).size;
      return { requests: all.length, accepted: ok.length, rejected: all.length - ok.length, unique, duplicates: ok.length - unique };
    };
    return Object.fromEntries(SANDBOX_PROVIDERS.map((p) => [p, one(p)])) as Record<SandboxProvider, ProviderStats>;
  }

  reset(): void {
    this.deliveries.length = 0;
    for (const p of SANDBOX_PROVIDERS) this.acceptedCount[p] = 0;
  }
}

/**
 * Token conventions that make a sandbox answer with a provider error, so
 * tests and the demo can exercise every outcome: `bad-…` is a malformed
 * token, `gone-…` an unregistered one.
 */
export function tokenFault(token: string): "bad" | "gone" | null {
  if (token.startsWith("bad-")) return "bad";
  if (token.startsWith("gone-")) return "gone";
  return null;
}
