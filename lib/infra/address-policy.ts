// Which network addresses webhook endpoints may reach (SSRF protection): public unicast only, unless `endpoints.allowNetworks` names the network.
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { promisify } from "node:util";

import ipaddr from "ipaddr.js";

import { EndpointRefused } from "../core/errors.js";

const lookupAll = promisify(dnsLookup);

/** An address policy: {@link addressRefusal} answers why an address may not be reached, or null. */
export interface AddressPolicy {
  /** Why `ip` may not be reached (its range, e.g. "loopback", "private", "linkLocal"), or null when it may. */
  refusal(ip: string): string | null;
}

/**
 * The policy of `allowNetworks` (CIDR strings, validated by the config schema): an address is allowed when it is
 * public unicast or inside one of the networks. Everything else is refused: loopback, private (10/8, 172.16/12,
 * 192.168/16), link-local (169.254/16, where cloud metadata services answer, fe80::/10), unique-local (fc00::/7),
 * carrier-grade NAT, unspecified, broadcast, multicast, reserved. IPv4-mapped IPv6 addresses are judged as IPv4.
 */
export function addressPolicy(allowNetworks: readonly string[]): AddressPolicy {
  const allowed = allowNetworks.map((c) => ipaddr.parseCIDR(c));
  return {
    refusal(ip: string): string | null {
      if (!ipaddr.isValid(ip)) return "not an IP address";
      const a = ipaddr.process(ip);
      for (const [net, bits] of allowed) if (a.kind() === net.kind() && a.match(net, bits)) return null;
      const range = a.range();
      return range === "unicast" ? null : range;
    },
  };
}

/**
 * Checks an endpoint URL before it is stored: http or https, a host, and every address the host resolves to
 * allowed by `policy`. Throws {@link EndpointRefused} naming `field` and the rule broken (a URL whose host does
 * not resolve is refused too: nothing could be delivered to it).
 */
export async function checkEndpointUrl(url: string, policy: AddressPolicy, field = "url"): Promise<URL> {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new EndpointRefused(`${field}: must be an absolute http or https URL`, { field });
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new EndpointRefused(`${field}: must be an http or https URL (got ${u.protocol})`, { field });
  if (u.username || u.password) throw new EndpointRefused(`${field}: must not carry credentials (the signature authenticates nfx)`, { field });
  const host = u.hostname.replace(/^\[|\]$/g, "");
  let addrs: LookupAddress[];
  try {
    addrs = ipaddr.isValid(host) ? [{ address: host, family: host.includes(":") ? 6 : 4 }] : await lookupAll(host, { all: true });
  } catch (err) {
    throw new EndpointRefused(`${field}: host ${host} does not resolve (${(err as Error).message})`, { field });
  }
  for (const a of addrs) {
    const why = policy.refusal(a.address);
    if (why) throw new EndpointRefused(`${field}: ${host} resolves to ${a.address}, a ${why} address; endpoints must be public unless endpoints.allowNetworks allows that network`, { field });
  }
  return u;
}

/**
 * A `lookup` for socket connections (undici's `connect.lookup`) that resolves as usual and fails the connection
 * when an address is refused by `policy`, so a host that resolved to a public address when it was registered and
 * to a private one later (DNS rebinding) is still not reached.
 */
export function guardedLookup(policy: AddressPolicy): typeof dnsLookup {
  const guarded = (hostname: string, options: unknown, callback: (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void): void => {
    dnsLookup(hostname, options as { all: true }, (err, address: string | LookupAddress[], family?: number) => {
      if (err) return callback(err, address, family);
      const list = Array.isArray(address) ? address : [{ address, family: family ?? 4 }];
      for (const a of list) {
        const why = policy.refusal(a.address);
        if (why) return callback(Object.assign(new Error(`${hostname} resolves to ${a.address}, a ${why} address (endpoints.allowNetworks)`), { code: "ENDPOINT_REFUSED" }), address, family);
      }
      callback(null, address, family);
    });
  };
  return guarded as unknown as typeof dnsLookup;
}
