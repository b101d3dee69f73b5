// The real SendGrid and Twilio SDKs pointed at a sandbox, for tests: a mail service with its own client, and a rewriting Twilio HTTP client.
import { Client } from "@sendgrid/client";
import { MailService } from "@sendgrid/mail";
import twilio from "twilio";
import type RequestClient from "twilio/lib/base/RequestClient.js";
import type * as TwilioHttp from "twilio/lib/http/response.js";

/** The sandbox tests' SendGrid API key, Twilio account sid and auth token. */
export const SG_KEY = "SG.sandbox-key.secret";
export const AC = `AC${"1".repeat(32)}`;
export const TOKEN = "auth-token";

/** A fresh MailService whose own client (never the module singleton) talks to the SendGrid sandbox on `port`. */
export function mailer(port: number, key = SG_KEY): MailService {
  const client = new Client();
  client.setApiKey(key);
  client.setDefaultRequest("baseUrl", `http://127.0.0.1:${port}/`);
  const mail = new MailService();
  mail.setClient(client);
  return mail;
}

/** Twilio's RequestClient with every `https://api.twilio.com` URI rewritten to the sandbox at `base`. */
export class SandboxRequestClient extends twilio.RequestClient {
  constructor(private readonly base: string) {
    super({ keepAlive: true });
  }
  override request<TData>(opts: RequestClient.RequestOptions<TData>): Promise<TwilioHttp.default<TData>> {
    return super.request({ ...opts, uri: opts.uri.replace(/^https:\/\/api\.twilio\.com/, this.base) });
  }
}
