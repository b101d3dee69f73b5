// The content each provider channel sends for one send: rendered for the recipient, else the notification's inline content, else derived from its push content.
import { ProviderError } from "../core/errors.js";
import type { EmailContent, NotificationBrief, PushContent, Send, SmsContent } from "../core/types.js";
import type { SendResult } from "../flow/bulkhead.js";

const pushOf = (n: NotificationBrief, s: Send): PushContent | undefined => s.push ?? n.content?.push;

/** Push content of a send, or null when the notification has none. */
export const pushContent = (n: NotificationBrief, s: Send): PushContent | null => pushOf(n, s) ?? null;

/** Email of a send: rendered, inline, or the push title as subject and body as text (fallback sends); null if none. */
export function emailContent(n: NotificationBrief, s: Send): EmailContent | null {
  if (s.email) return s.email;
  if (n.content?.email) return n.content.email;
  const p = pushOf(n, s);
  return p ? { subject: p.title, text: p.body } : null;
}

/** SMS of a send: rendered, inline, or "title: body" from the push content (fallback sends); null if none. */
export function smsContent(n: NotificationBrief, s: Send): SmsContent | null {
  if (s.sms) return s.sms;
  if (n.content?.sms) return n.content.sms;
  const p = pushOf(n, s);
  return p ? { text: p.title ? `${p.title}: ${p.body}` : p.body } : null;
}

/** The result of a send that has no content for its channel (`what`): failed without a provider call, never retried. */
export const noContent = (what: "push" | "email" | "sms"): SendResult => ({ ok: false, error: new ProviderError(`no ${what} content`, { reason: "no_content", retryable: false }) });
