// The email gateway's SendGrid request body is exactly what the SDK's mail helper would send for the same mail (the gateway sends it through the SDK's client, skipping the helper's rebuild).
import helpers from "@sendgrid/helpers";
import t from "tap";

import { sendgridRequest } from "../../actors/gateway-email.js";
import { ConsentLinks } from "../../lib/consent/links.js";
import type { EmailContent, NotificationBrief, Send } from "../../lib/core/types.js";
import { LinkSigner } from "../../lib/gateway/links.js";

const n: NotificationBrief = { id: "n_1", createdAt: 0, expiresAt: 9e12, priority: "normal", category: "marketing", channels: ["email"] };
const sends: Send[] = ["ana", "bo", "cy"].map((u) => ({ nid: "n_1", user: u, device: "email", token: `${u}@example.com` }));
const from = { email: "noreply@nfx.example", name: "nfx" };
const track = { signer: new LinkSigner("s".repeat(32), "https://t.example", 86400, () => 1e12), pixel: true, clicks: true };
const consent = { links: new ConsentLinks("c".repeat(32), "https://t.example", 86400, () => 1e12), mailto: "unsub@nfx.example", commercial: (c: string) => c === "marketing" };

/** What @sendgrid/mail would send for the mail `body` describes: its keys unwrapped back into the helper's input, then `Mail.create(…).toJSON()`. */
function viaHelper(body: Record<string, unknown>): unknown {
  const unwrap = (subs?: Record<string, string>) => subs && Object.fromEntries(Object.entries(subs).map(([k, v]) => [k.slice(2, -2), v]));
  const ps = (body.personalizations as { substitutions?: Record<string, string> }[]).map((p) => ({ ...p, ...(p.substitutions ? { substitutions: unwrap(p.substitutions) } : {}) }));
  return helpers.classes.Mail.create({ ...body, personalizations: ps, substitutionWrappers: ["{{", "}}"], isMultiple: false } as never).toJSON();
}

t.test("the body equals the SDK helper's for the same mail", async (t) => {
  const html = '<html><body><p>Sale!</p><a href="https://shop.example/sale">Shop</a> <a href="{{unsubscribe_url}}">Unsubscribe</a> <a href="{{preferences_url}}">Preferences</a></body></html>';
  const shared: EmailContent = { subject: "Sale starts", html, text: "Sale! {{unsubscribe_url}}" };
  const cases: [string, NotificationBrief, EmailContent[], boolean][] = [
    ["shared content, tracked, commercial with both consent placeholders", n, sends.map(() => shared), true],
    ["each recipient's own rendering", n, sends.map((s) => ({ subject: `Hi ${s.user}`, html: `<p>Hello ${s.user}</p><a href="https://x.example/${s.user}">x</a>`, text: `Hello ${s.user}` })), true],
    ["transactional, text only, untracked", { ...n, category: "transactional" }, sends.map(() => ({ subject: "Receipt", text: "Paid." })), false],
  ];
  for (const [name, brief, contents, tracked] of cases) {
    const body = sendgridRequest(brief, sends, contents, from, tracked ? track : undefined, consent);
    // As JSON, which is what goes on the wire (the helper's addresses are class instances).
    t.strictSame(JSON.parse(JSON.stringify(body)), JSON.parse(JSON.stringify(viaHelper(body))), name);
  }
  const body = sendgridRequest(n, sends, sends.map(() => shared), from, track, consent) as { personalizations: { substitutions: Record<string, string>; headers: Record<string, string> }[] };
  t.match(body.personalizations[1].substitutions["{{nfxopen}}"], /^https:\/\/t\.example\//, "substitution keys are sent wrapped, as SendGrid replaces them");
  t.match(body.personalizations[1].headers["List-Unsubscribe"], /^<https:\/\/t\.example\/.+>, <mailto:unsub@nfx\.example/, "each recipient's List-Unsubscribe");
});
