// The inbox over HTTP, as the WebSocket gateway serves it: GET /v1/inbox, POST /v1/inbox/{seen|read|archive} and their CORS preflight, with the validation the WebSocket commands share.
import type { HttpRequest, TemplatedApp } from "uWebSockets.js";
import { z } from "zod";

import { BodyTooLarge, NotFound, RequestInvalid } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import { formatIssue } from "../core/zod-issues.js";
import { bearerOf, type Origins, preflight, queryOf, route } from "../infra/http.js";
import { type Inbox, INBOX_ACTIONS, type InboxAction } from "./inbox.js";
import type { UserTokens } from "./ws-token.js";

/** Notification ids an inbox action names: 1 to 1000 of them, each 1-128 characters of `[A-Za-z0-9_\-:@+=]`. */
export const inboxIds = z.array(z.string().regex(/^[A-Za-z0-9_\-:@+=]{1,128}$/, "must be notification ids")).min(1).max(1000);
const markBody = z.strictObject({ ids: inboxIds.optional(), all: z.literal(true).optional() });

/** The first problem of a command or body as a {@link RequestInvalid} naming the field (`(message)` for the whole) and the rule. */
export function invalidRequest(issue: z.core.$ZodIssue): RequestInvalid {
  const f = formatIssue(issue);
  return new RequestInvalid(`${f.field || "(message)"}: ${f.message}`, { field: f.field || "(message)" });
}

/**
 * What an inbox action applies to: `"all"` or the ids. Throws {@link RequestInvalid} when neither is given
 * (field `ids`) or when `all` is asked of an action other than read (field `all`).
 */
export function markTarget(action: string, ids: readonly string[] | undefined, all: true | undefined): readonly string[] | "all" {
  if (!all && !ids) throw new RequestInvalid("ids: required unless all is true", { field: "ids" });
  if (all && action !== "read") throw new RequestInvalid("all: only read may apply to all items", { field: "all" });
  return all ? "all" : ids!;
}

/** The user token of a request: `Authorization: Bearer <token>`, else `?token=`; null when neither. Reads `req`, so call it before any await. */
export const userTokenOf = (req: HttpRequest): string | null => bearerOf(req.getHeader("authorization")) ?? queryOf(req.getQuery()).get("token");

export interface InboxHttpDeps {
  tokens: UserTokens;
  inbox: Inbox;
  /** Applies an action for a user and resolves to the unread count after it; the gateway's (it also sends receipts and tells the user's connections). */
  mark(user: string, action: InboxAction, which: readonly string[] | "all"): Promise<number>;
  /** Origins whose answers carry CORS headers. */
  origins: Origins;
  /** Items `GET /v1/inbox` answers without `?limit=`. */
  defaultLimit: number;
  /** Largest action body, in bytes (413 NFX_ERR_BODY_TOO_LARGE beyond). */
  maxBodyBytes: number;
  log: Logger;
}

/**
 * Mounts the inbox API on `app`. Every route needs a user token (401 without a valid one) and answers
 * errors as `{error:{code,message,field}}` with the error's status; answers to a listed Origin carry CORS headers.
 * `GET /v1/inbox?limit=&before=` answers `{items, unread}` (limit 1-200, before in epoch ms);
 * `POST /v1/inbox/{seen|read|archive}` with `{ids}` or (read only) `{all:true}` answers `{unread}`,
 * 404 for another action; the body is read (and limited) before the token is checked.
 * `OPTIONS /v1/inbox/*` answers the preflight. Unexpected errors are logged and answered 500.
 */
export function mountInboxHttp(app: TemplatedApp, d: InboxHttpDeps): void {
  const onInternal = (err: unknown): void => d.log.error({ err }, "inbox request failed");
  const userOf = (req: HttpRequest): Promise<{ user: string }> => d.tokens.verify(userTokenOf(req));

  app.get(
    "/v1/inbox",
    route({
      onInternal,
      prepare: (req, x) => {
        x.headers = d.origins.corsHeaders(req.getHeader("origin"));
        const q = queryOf(req.getQuery());
        return { who: userOf(req), limit: q.has("limit") ? Number(q.get("limit")) : d.defaultLimit, before: q.has("before") ? Number(q.get("before")) : undefined };
      },
      run: async ({ who, limit, before }) => {
        const { user } = await who;
        if (!Number.isInteger(limit) || limit < 1 || limit > 200) throw new RequestInvalid("limit: must be an integer from 1 to 200", { field: "limit" });
        if (before !== undefined && !(Number.isFinite(before) && before >= 0)) throw new RequestInvalid("before: must be a time in epoch milliseconds", { field: "before" });
        return { status: 200, body: await d.inbox.list(user, limit, before) };
      },
    }),
  );
  app.post(
    "/v1/inbox/:action",
    route({
      onInternal,
      body: { max: d.maxBodyBytes, tooLarge: () => new BodyTooLarge(`(body): over ${d.maxBodyBytes} bytes`, { field: "(body)" }) },
      prepare: (req, x) => {
        x.headers = d.origins.corsHeaders(req.getHeader("origin"));
        const who = userOf(req);
        who.catch(() => undefined);
        return { who, action: req.getParameter(0) ?? "" };
      },
      run: async ({ who, action }, raw) => {
        const { user } = await who;
        if (!(INBOX_ACTIONS as readonly string[]).includes(action)) throw new NotFound(`action: must be one of ${INBOX_ACTIONS.join(", ")}`, { field: "action" });
        let body: unknown;
        try {
          body = JSON.parse(raw.toString("utf8") || "{}");
        } catch {
          throw new RequestInvalid("(body): must be JSON", { field: "(body)" });
        }
        const p = markBody.safeParse(body);
        if (!p.success) throw invalidRequest(p.error.issues[0]);
        const which = markTarget(action, p.data.ids, p.data.all);
        return { status: 200, body: { unread: await d.mark(user, action as InboxAction, which) } };
      },
    }),
  );
  app.options("/v1/inbox/*", preflight(d.origins, "GET, POST", "authorization, content-type"));
}
