// User records from outside: the import schema, and the synthetic users `nfx users seed` and the benchmarks write.
import { z } from "zod";

import { isPrototypeName, PROTOTYPE_NAME_RULE } from "../core/own-keys.js";
import { CONTENT_CHANNELS, ID_PATTERN } from "../core/subjects.js";
import { parseHhmm } from "./quiet-hours.js";

const HHMM = /^([01][0-9]|2[0-3]):[0-5][0-9]$/;
import type { UserRecord } from "../core/types.js";

const DAY = 86_400_000;

/** One line of `nfx users import`: a full user record. Unknown fields are refused. */
export const userRecordSchema = z.strictObject({
  id: z.string().regex(ID_PATTERN, "must be 1-128 characters of A-Z a-z 0-9 _ - : @ + ="),
  optedOut: z.boolean().optional(),
  locale: z.string().regex(/^[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,2}$/, "must be a locale tag such as en or pt-BR").optional(),
  timezone: z.string().refine((tz) => {
    try {
      new Intl.DateTimeFormat("en", { timeZone: tz });
      return true;
    } catch {
      return false;
    }
  }, "must be an IANA time zone such as Europe/Berlin").optional(),
  email: z.string().regex(/^[^\s@]+@[^\s@]+\.[^\s@]+$/, "must be an email address").optional(),
  phone: z.string().regex(/^\+[1-9][0-9]{6,14}$/, "must be an E.164 phone number such as +15551234567").optional(),
  attributes: z.record(z.string().refine((a) => !isPrototypeName(a), PROTOTYPE_NAME_RULE), z.union([z.string(), z.number(), z.boolean()])).optional(),
  lastActive: z.number().int().min(0).optional(),
  /** Local quiet hours, e.g. {"start":"22:00","end":"07:00"}. */
  quietHours: z
    .strictObject({ start: z.string().regex(HHMM, "must be a 24-hour HH:MM time"), end: z.string().regex(HHMM, "must be a 24-hour HH:MM time") })
    .transform((q) => ({ start: parseHhmm(q.start), end: parseHhmm(q.end) }))
    .optional(),
  preferences: z.strictObject({ categories: z.record(z.string().refine((c) => !isPrototypeName(c), PROTOTYPE_NAME_RULE), z.partialRecord(z.enum(CONTENT_CHANNELS), z.boolean())).optional() }).optional(),
  devices: z
    .array(
      z.strictObject({
        id: z.string().regex(ID_PATTERN, "must be a device id"),
        platform: z.enum(["ios", "android"]),
        token: z.string().min(8, "must be a device token").max(4096),
        app: z.string().max(256).optional(),
      }),
    )
    .max(32)
    .default([]),
});

const ZONES = [
  ["America/Los_Angeles", "en-US"], ["America/New_York", "en-US"], ["America/Sao_Paulo", "pt-BR"], ["America/Mexico_City", "es-MX"],
  ["Europe/London", "en-GB"], ["Europe/Berlin", "de-DE"], ["Europe/Paris", "fr-FR"], ["Europe/Madrid", "es-ES"], ["Europe/Istanbul", "tr-TR"],
  ["Africa/Lagos", "en-NG"], ["Africa/Cairo", "ar-EG"], ["Asia/Kolkata", "hi-IN"], ["Asia/Jakarta", "id-ID"], ["Asia/Shanghai", "zh-CN"],
  ["Asia/Tokyo", "ja-JP"], ["Asia/Seoul", "ko-KR"], ["Australia/Sydney", "en-AU"], ["Pacific/Auckland", "en-NZ"], ["Asia/Dubai", "ar-AE"], ["Europe/Moscow", "ru-RU"],
] as const;
const NAMES = ["Ana", "Ben", "Chen", "Dara", "Emeka", "Fatima", "Gus", "Hana", "Ivan", "Jo", "Kai", "Lena", "Mateo", "Noor", "Omar", "Priya"];
const HEX = "0123456789abcdef";
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/** A small deterministic PRNG (mulberry32). */
export function prng(seed: number): () => number {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const chars = (r: () => number, alphabet: string, n: number): string => {
  let s = "";
  for (let i = 0; i < n; i++) s += alphabet[Math.floor(r() * alphabet.length)];
  return s;
};

/**
 * The i-th synthetic user, the same for the same (i, seed, now): 55 % iOS
 * devices, 1-3 devices, 20 time zones with their locales, 3 % opted out, 4 %
 * with marketing push turned off, last activity spread over a year (about
 * 60 % within 30 days), realistic token shapes (APNs 64 hex, FCM 163 chars).
 */
export function syntheticUser(i: number, now: number, seed = 1): UserRecord {
  const r = prng(i * 7919 + seed);
  const [timezone, locale] = ZONES[Math.floor(r() * ZONES.length)];
  const nDevices = r() < 0.55 ? 1 : r() < 0.75 ? 2 : 3;
  const devices = Array.from({ length: nDevices }, (_, d) => {
    const ios = r() < 0.55;
    return ios
      ? { id: `ios-${d}`, platform: "ios" as const, token: chars(r, HEX, 64), app: "com.example.app" }
      : { id: `android-${d}`, platform: "android" as const, token: `${chars(r, B64, 22)}:APA91b${chars(r, B64, 134)}`, app: "com.example.app" };
  });
  const p = r();
  const lastActive = now - Math.floor((p < 0.6 ? r() * 30 : p < 0.8 ? 30 + r() * 60 : 90 + r() * 275) * DAY);
  const name = NAMES[Math.floor(r() * NAMES.length)];
  const id = `u${String(i).padStart(9, "0")}`;
  return {
    id, locale, timezone, lastActive, devices,
    ...(r() < 0.03 ? { optedOut: true } : {}),
    ...(r() < 0.04 ? { preferences: { categories: { marketing: { push: false } } } } : {}),
    email: `${name.toLowerCase()}.${id}@example.com`,
    phone: `+1555${String(i % 10_000_000).padStart(7, "0")}`,
    attributes: { firstName: name, plan: r() < 0.2 ? "pro" : "free" },
  };
}
