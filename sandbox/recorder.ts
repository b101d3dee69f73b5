// What the sandbox providers received: every request, its answer, and counts per device including duplicates.

export type SandboxProvider = "apns" | "fcm";

/** One request a sandbox answered. */
export interface Delivery {
  provider: SandboxProvider;
  token: string;
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

/** A fault injected at run time: every request to a token starting with `prefix` is answered with the provider's outage error. */
export interface Fault {
  provider: SandboxProvider;
  prefix: string;
}

/** Records deliveries in memory. One per sandbox process, shared by its providers. */
export class Recorder {
  readonly deliveries: Delivery[] = [];
  /** Outages switched on at run time (control API `POST /faults`, `DELETE /faults`). */
  readonly faults: Fault[] = [];

  /** Whether `token` of `provider` is in an injected outage. */
  down(provider: SandboxProvider, token: string): boolean {
    return this.faults.some((f) => f.provider === provider && token.startsWith(f.prefix));
  }

  record(d: Delivery): void {
    this.deliveries.push(d);
  }

  /** Accepted deliveries, optionally of one provider. */
  accepted(provider?: SandboxProvider): Delivery[] {
    return this.deliveries.filter((d) => d.status < 300 && (!provider || d.provider === provider));
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
      const ok = all.filter((d) => d.status < 300);
      const unique = new Set(ok.map((d) => `${d.token}|${d.nid ?? ""}`)).size;
      return { requests: all.length, accepted: ok.length, rejected: all.length - ok.length, unique, duplicates: ok.length - unique };
    };
    return { apns: one("apns"), fcm: one("fcm") };
  }

  reset(): void {
    this.deliveries.length = 0;
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
