// The preference page and the consent links and SMS keywords, pure: rendering (escaping, no external resources, nonces), locale fallback, the form parser and its errors; signed links; keywords and TwiML.
import t from "tap";

import { ConsentLinks } from "../../lib/consent/links.js";
import { PAGE_LOCALES, type PageCategory, type PageModel, pageStrings, parsePreferenceForm, renderPreferencePage } from "../../lib/consent/page.js";
import { keywordOf, twimlMessage } from "../../lib/consent/sms-keywords.js";
import { RequestInvalid } from "../../lib/core/errors.js";

const CATEGORIES: PageCategory[] = [
  { name: "marketing", description: "Offers and news", commercial: true, channels: { email: true, push: false, sms: false } },
  { name: "digest", commercial: true, channels: { email: false, inapp: true } },
  { name: "receipts", description: "Orders and payments", commercial: false, channels: { email: true, push: true } },
];

const model = (over: Partial<PageModel> = {}): PageModel => ({
  user: "u-42",
  locale: "en",
  categories: CATEGORIES,
  marketingOptOut: false,
  quietHours: { start: "22:30", end: "06:45" },
  timezone: "Europe/Berlin",
  timezones: ["America/New_York", "Europe/Berlin", "Asia/Tokyo"],
  action: "/v1/prefs?t=signed.token&x=1",
  nonce: "n0nce+/=",
  ...over,
});

const unescape = (s: string): string =>
  s.replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
const attr = (tag: string, name: string): string | undefined => {
  const m = new RegExp(`\\s${name}(?:="([^"]*)")?(?=[\\s>])`).exec(tag);
  return m ? unescape(m[1] ?? "") : undefined;
};

/** The url-encoded body a browser without JavaScript posts for `html` as rendered (no field changed). */
function submitted(html: string): string {
  const q = new URLSearchParams();
  for (const [tag] of html.matchAll(/<input\b[^>]*>/g)) {
    const name = attr(tag, "name");
    if (name === undefined || attr(tag, "disabled") !== undefined) continue;
    if (attr(tag, "type") === "checkbox" && attr(tag, "checked") === undefined) continue;
    q.append(name, attr(tag, "value") ?? "on");
  }
  for (const [, open, inner] of html.matchAll(/(<select\b[^>]*>)(.*?)<\/select>/gs)) {
    const options = [...inner.matchAll(/<option\b[^>]*>/g)].map(([o]) => o);
    const chosen = options.find((o) => attr(o, "selected") !== undefined) ?? options[0];
    q.append(attr(open, "name")!, attr(chosen, "value")!);
  }
  return q.toString();
}

/** The body of a form post from field pairs, with the form marker. */
const body = (fields: Record<string, string>): string => new URLSearchParams({ form: "1", ...fields }).toString();

t.test("hostile names, descriptions, notices, errors and action are escaped", async (t) => {
  const html = renderPreferencePage(
    model({
      user: "<b>u</b>",
      categories: [
        { name: "<script>alert(1)</script>", description: '"><img src=x>', commercial: true, channels: { email: true } },
        { name: "'><svg onload=alert(2)>", description: "<script>alert(3)</script>", commercial: false, channels: { sms: true } },
      ],
      notice: "<script>alert(1)</script>",
      error: '"><img src=x onerror=alert(4)>',
      action: '"><img src=x>',
      nonce: '"><script>alert(5)</script>',
      timezone: "</option><script>alert(6)</script>",
    }),
  );
  t.notMatch(html, /<img/i, "no injected img");
  t.notMatch(html, /<svg/i, "no injected svg");
  t.notMatch(html, /<b>u<\/b>/, "user escaped");
  t.equal([...html.matchAll(/<script\b/gi)].length, 1, "only the page's own script tag");
  t.notMatch(html, /<script>alert/, "no injected script body");
  t.match(html, '<p class="banner ok" role="status">&lt;script&gt;alert(1)&lt;/script&gt;</p>', "notice escaped");
  t.match(html, "&quot;&gt;&lt;img src=x onerror=alert(4)&gt;", "error escaped");
  t.match(html, 'action="&quot;&gt;&lt;img src=x&gt;"', "action escaped in its attribute");
  t.match(html, 'name="c.&lt;script&gt;alert(1)&lt;/script&gt;.email"', "category name escaped in the field name");
  t.match(html, '<span class="desc">&quot;&gt;&lt;img src=x&gt;</span>', "description escaped");
  t.match(html, "&#39;&gt;&lt;svg onload=alert(2)&gt;", "single quotes escaped too");
  t.match(html, '<option value="&lt;/option&gt;&lt;script&gt;alert(6)&lt;/script&gt;" selected>', "zone escaped");
  t.match(html, 'nonce="&quot;&gt;&lt;script&gt;alert(5)&lt;/script&gt;"', "nonce escaped");
});

t.test("no external resources; every style and script carries the nonce; nothing CSP would block", async (t) => {
  const action = "https://prefs.example.com/v1/prefs?t=abc.def&lang=de";
  const html = renderPreferencePage(model({ action, notice: "Saved", error: "quiet_start: must be HH:MM (00:00-23:59)" }));
  t.match(html, /^<!doctype html>\n<html lang="en">/);
  const urls = [...html.matchAll(/https?:\/\/[^\s"'<>)]*/gi)].map(([u]) => unescape(u));
  t.same(urls, [action], "the only absolute URL is the action");
  t.notMatch(html, /<(link|img|iframe|object|embed|base|source|video|audio)\b/i, "no resource-loading elements");
  t.notMatch(html, /\s(src|href|srcset)=/i, "no src/href attributes");
  t.notMatch(html, /url\(|@import/i, "no CSS resource references");
  t.notMatch(html, /\sstyle=/i, "no inline style attributes (blocked by style-src nonce)");
  t.notMatch(html, /\son[a-z]+=/i, "no inline event handlers (blocked by script-src nonce)");
  t.notMatch(html, /\bfetch\(|XMLHttpRequest/, "the script makes no requests");
  const styles = [...html.matchAll(/<style\b[^>]*>/gi)].map(([s]) => s);
  const scripts = [...html.matchAll(/<script\b[^>]*>/gi)].map(([s]) => s);
  t.same(styles, ['<style nonce="n0nce+/=">']);
  t.same(scripts, ['<script nonce="n0nce+/=">']);
  t.match(html, '<form id="prefs" method="post" action="https://prefs.example.com/v1/prefs?t=abc.def&amp;lang=de" autocomplete="off">');
  t.match(html, '<input type="hidden" name="form" value="1">');
  t.match(html, '<p class="banner err" role="alert"><strong>Your changes were not saved:</strong> quiet_start: must be HH:MM (00:00-23:59)</p>');
  t.notMatch(renderPreferencePage(model()), /class="banner/, "no banner without notice or error");
});

t.test("table: commercial cells are labelled checkboxes, transactional cells disabled and checked, unoffered cells empty", async (t) => {
  const html = renderPreferencePage(model());
  const headers = [...html.matchAll(/<th scope="col">([^<]*)<\/th>/g)].map(([, h]) => h);
  t.same(headers, ["Category", "Push", "Email", "SMS", "In-app"], "columns in channel order");
  t.match(html, '<input type="checkbox" name="c.marketing.email" value="on" data-commercial checked><span class="vh">Email for marketing</span>');
  t.match(html, '<input type="checkbox" name="c.marketing.push" value="on" data-commercial><span class="vh">Push for marketing</span>');
  t.match(html, '<input type="checkbox" name="c.digest.inapp" value="on" data-commercial checked><span class="vh">In-app for digest</span>');
  const receipts = /<tr><th scope="row">receipts.*?<\/tr>/.exec(html)?.[0] ?? "";
  t.match(receipts, '<span class="badge">Always on</span>');
  t.equal([...receipts.matchAll(/<input type="checkbox" checked disabled>/g)].length, 2, "two disabled checked boxes");
  t.notMatch(receipts, /name=/, "transactional cells are never submitted");
  t.match(receipts, '<span class="vh">Email for receipts (Always on)</span>');
  t.equal([...receipts.matchAll(/<td><\/td>/g)].length, 2, "sms and inapp not offered: empty cells");
  t.match(html, "Transactional messages, such as receipts and security codes, are always sent.");

  const onlyEmail = renderPreferencePage(model({ categories: [{ name: "news", commercial: true, channels: { email: false } }] }));
  t.same([...onlyEmail.matchAll(/<th scope="col">([^<]*)<\/th>/g)].map(([, h]) => h), ["Category", "Email"], "columns nobody offers are left out");
  t.notMatch(onlyEmail, /such as receipts and security codes/, "no transactional note without a transactional category");
  t.match(renderPreferencePage(model({ categories: [] })), "There are no notification categories to choose from.");
});

t.test("transactional categories are never parsed as off", async (t) => {
  const f = parsePreferenceForm(body({ "c.marketing.email": "on" }), CATEGORIES);
  t.same(Object.keys(f.categories), ["marketing", "digest"]);
  t.notOk(Object.hasOwn(f.categories, "receipts"), "receipts absent, not off");
  const forged = parsePreferenceForm(body({ "c.receipts.email": "off" }), CATEGORIES);
  t.notOk(Object.hasOwn(forged.categories, "receipts"), "a forged transactional field is ignored");
});

t.test("pageStrings: exact tag, then language, then fallback, then en", async (t) => {
  t.ok(["en", "de", "fr", "es"].every((l) => PAGE_LOCALES.includes(l)));
  t.equal(pageStrings("de-AT").locale, "de");
  t.equal(pageStrings("de-AT").s.channels.email, "E-Mail");
  t.equal(pageStrings("pt-BR").locale, "en");
  t.equal(pageStrings(undefined).locale, "en");
  t.equal(pageStrings(undefined).s.save, "Save preferences");
  t.equal(pageStrings("pt-BR", "fr").locale, "fr");
  t.equal(pageStrings("pt-BR", "fr").s.save, "Enregistrer les préférences");
  t.equal(pageStrings("ES").locale, "es", "case-insensitive");
  t.equal(pageStrings("constructor", "xx").locale, "en", "no prototype keys; unknown fallback ends at en");
  for (const l of PAGE_LOCALES) {
    const { s } = pageStrings(l);
    t.equal(s.unsubscribed("Deals").includes("Deals"), true, `${l}: unsubscribed names the category`);
    t.equal(s.cellLabel(s.channels.sms, "Deals").includes("Deals"), true, `${l}: cell label names the category`);
  }
  t.equal(pageStrings("en").s.unsubscribed("Deals"), "You have been unsubscribed from Deals email.");

  const de = renderPreferencePage(model({ locale: "de-AT", categories: [CATEGORIES[0]], notice: pageStrings("de-AT").s.saved }));
  t.match(de, /^<!doctype html>\n<html lang="de">/);
  t.match(de, '<span class="vh">E-Mail für marketing</span>');
  t.match(de, "<button type=\"submit\">Einstellungen speichern</button>");
  t.match(de, "Ihre Einstellungen wurden gespeichert.");
});

t.test("round trip: what the rendered form posts without JavaScript parses back to the model", async (t) => {
  const m = model();
  const f = parsePreferenceForm(submitted(renderPreferencePage(m)), m.categories);
  t.same(f, {
    categories: { marketing: { push: false, email: true, sms: false }, digest: { email: false, inapp: true } },
    marketingOptOut: false,
    quietHours: { start: "22:30", end: "06:45" },
    timezone: "Europe/Berlin",
  });

  const m2 = model({ marketingOptOut: true, quietHours: null, timezone: "Pacific/Auckland", categories: [{ name: "marketing", commercial: true, channels: { sms: true } }] });
  const html2 = renderPreferencePage(m2);
  t.match(html2, '<option value="Pacific/Auckland" selected>Pacific/Auckland</option><option value="America/New_York">', "own zone listed first when not offered");
  t.match(html2, 'name="quiet_start" value="22:00"', "default start proposed");
  t.match(html2, 'name="quiet_end" value="07:00"', "default end proposed");
  t.same(parsePreferenceForm(submitted(html2), m2.categories), { categories: { marketing: { sms: true } }, marketingOptOut: true, quietHours: null, timezone: "Pacific/Auckland" });

  const m3 = model({ timezone: undefined });
  const html3 = renderPreferencePage(m3);
  t.match(html3, '<option value="" selected>Not set</option>');
  t.equal(parsePreferenceForm(submitted(html3), m3.categories).timezone, undefined);
});

t.test("parsePreferenceForm: ticked and unticked cells, marketing, quiet hours on and off, time zone", async (t) => {
  const f = parsePreferenceForm(
    body({ "c.marketing.push": "on", "c.digest.email": "on", "c.digest.fax": "on", "c.marketing.inapp": "on", "c.nope.email": "on", marketing: "stop", quiet: "on", quiet_start: "23:00", quiet_end: "07:15", timezone: "America/New_York" }),
    CATEGORIES,
  );
  t.same(f, {
    categories: { marketing: { push: true, email: false, sms: false }, digest: { email: true, inapp: false } },
    marketingOptOut: true,
    quietHours: { start: "23:00", end: "07:15" },
    timezone: "America/New_York",
  }, "unknown channel (fax), unoffered channel (marketing.inapp) and unknown category ignored");

  const off = parsePreferenceForm(body({ quiet_start: "nonsense", quiet_end: "", timezone: "" }), CATEGORIES);
  t.same(off, {
    categories: { marketing: { push: false, email: false, sms: false }, digest: { email: false, inapp: false } },
    marketingOptOut: false,
    quietHours: null,
    timezone: undefined,
  }, "all unticked; times ignored without quiet; empty zone is none");
  t.equal(parsePreferenceForm("form=1&c.marketing.email=on&c.marketing.email=on", CATEGORIES).categories.marketing.email, true);
  t.equal(parsePreferenceForm("form=1&timezone=UTC", CATEGORIES).timezone, "UTC");
});

t.test("parsePreferenceForm errors name the field and the rule", async (t) => {
  const cases: [string, string, string][] = [
    [body({ quiet: "on", quiet_start: "24:00", quiet_end: "07:00" }), "quiet_start", "quiet_start: must be HH:MM (00:00-23:59)"],
    [body({ quiet: "on", quiet_start: "7:00", quiet_end: "08:00" }), "quiet_start", "quiet_start: must be HH:MM (00:00-23:59)"],
    [body({ quiet: "on", quiet_start: "22:00" }), "quiet_end", "quiet_end: must be HH:MM (00:00-23:59)"],
    [body({ quiet: "on", quiet_start: "22:00", quiet_end: "22:60" }), "quiet_end", "quiet_end: must be HH:MM (00:00-23:59)"],
    [body({ quiet: "on", quiet_start: "22:00", quiet_end: "22:00" }), "quiet_end", "quiet_end: must differ from quiet_start"],
    [body({ timezone: "Mars/Olympus_Mons" }), "timezone", "timezone: must be an IANA time zone"],
    [body({ timezone: "+01:00" }), "timezone", "timezone: must be an IANA time zone"],
    [body({ timezone: "Europe/Berlin\n" }), "timezone", "timezone: must be an IANA time zone"],
    [body({ marketing: "yes" }), "marketing", 'marketing: must be "stop" when present'],
    [body({ quiet: "1" }), "quiet", 'quiet: must be "on" when present'],
    [body({ "c.marketing.email": "true" }), "c.marketing.email", 'c.marketing.email: must be "on" when present'],
    ["c.marketing.email=on", "form", "form: must be 1 (a body posted by the preference form)"],
    ["List-Unsubscribe=One-Click", "form", "form: must be 1 (a body posted by the preference form)"],
  ];
  for (const [b, field, message] of cases) {
    const err = t.throws(() => parsePreferenceForm(b, CATEGORIES), message) as unknown as RequestInvalid;
    t.type(err, RequestInvalid);
    t.equal(err.field, field, `${b}: field`);
    t.equal(err.message, message, `${b}: message`);
  }
});

t.test("consent links: signed, domain-separated, expiring; tampering and expiry say why", async (t) => {
  let now = Date.UTC(2026, 11, 3);
  const links = new ConsentLinks("s".repeat(32), "https://nfx.example.com", 3600, () => now);
  const u = links.unsubscribeUrl("ana", "marketing");
  t.match(u, /^https:\/\/nfx\.example\.com\/v1\/consent\/u\/[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
  const tok = u.slice(u.lastIndexOf("/") + 1);
  t.same(links.verify(tok), { kind: "u", user: "ana", category: "marketing", exp: now / 1000 + 3600 }, "round trip");
  t.same(links.verify(links.preferencesUrl("bo").split("/").pop()!), { kind: "p", user: "bo", exp: now / 1000 + 3600 }, "a preference link names no category");
  const [payload, mac] = tok.split(".");
  const forged = Buffer.from(JSON.stringify(["u", "bo", "marketing", now / 1000 + 3600])).toString("base64url");
  t.throws(() => links.verify(`${forged}.${mac}`), /signature does not match/, "another user in the payload: refused");
  t.throws(() => new ConsentLinks("t".repeat(32), "https://x", 3600, () => now).verify(tok), /signature does not match/, "another secret: refused");
  t.throws(() => links.verify(payload), /malformed/, "no MAC: malformed");
  now += 3601_000;
  t.throws(() => links.verify(tok), /expired on 2026-12-03T01:00:00.000Z/, "expired, with when");
});

t.test("SMS keywords: the whole body, trimmed, any case", async (t) => {
  for (const k of ["STOP", "stopall", " Unsubscribe ", "cancel", "END", "quit"]) t.match(keywordOf(k), { kind: "stop" }, k);
  for (const k of ["START", "unstop"]) t.match(keywordOf(k), { kind: "start" }, k);
  for (const k of ["help", "INFO"]) t.match(keywordOf(k), { kind: "help" }, k);
  for (const k of ["stop it", "please stop", "STOP.", ""]) t.equal(keywordOf(k), null, `"${k}" is not a keyword`);
  t.equal(twimlMessage("A & <B>"), '<?xml version="1.0" encoding="UTF-8"?><Response><Message>A &amp; &lt;B&gt;</Message></Response>', "TwiML escapes the text");
  t.equal(twimlMessage(null), '<?xml version="1.0" encoding="UTF-8"?><Response></Response>', "and answers empty");
});
