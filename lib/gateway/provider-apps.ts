// A channel's provider apps, each behind its bulkhead: which app a send goes to, and one provider request through it (failing over while its breaker is open).
import type { BulkheadConfig } from "../../config/schema.js";
import type { Logger } from "../core/log.js";
import type { Channel } from "../core/subjects.js";
import type { NotificationBrief, Send } from "../core/types.js";
import { Bulkhead, type BulkheadState, isRefusal, type Refusal, type SendResult } from "../flow/bulkhead.js";
import { gatewayLatency, gatewaySends } from "../infra/metrics.js";

export type { SendResult };

/** One provider app of a channel (an APNs bundle id and key, an FCM project, a SendGrid or Twilio account): the SDK call, nothing else. */
export interface ProviderApp {
  readonly name: string;
  /** Sends per {@link request}: up to 1000 personalizations of one email request; a group of APNs or FCM sends handed to the SDK together; 1 for SMS. */
  readonly perRequest: number;
  /**
   * True when each send of a {@link request} is a provider call of its own (an HTTP/2 stream, an HTTP request),
   * made together: the app's bulkhead `concurrency` then counts sends, not requests.
   */
  readonly callPerSend?: boolean;
  /**
   * One provider request for `sends` (at most `perRequest`) of notification
   * `n`. Resolves one result per send, in order; provider errors are results,
   * never throws. An app whose sends are calls of their own ({@link callPerSend})
   * passes each send's result to `answered` as it arrives, before resolving.
   */
  request(n: NotificationBrief, sends: readonly Send[], answered?: (j: number, r: SendResult) => void): Promise<SendResult[]>;
  close(): Promise<void>;
}

/** What a gateway file builds for its channel: its apps with their bulkhead settings, and which app a send goes to. */
export interface ChannelClient {
  readonly channel: Channel;
  readonly apps: readonly { app: ProviderApp; cfg: BulkheadConfig }[];
  /** The name of the app that sends `s` (e.g. by the device's bundle id); the first app when nothing matches. */
  route(s: Send): string;
}

/** A channel whose first app sends everything and whose other apps act only as configured failovers (email and SMS accounts). */
export function primaryWithFailovers<A extends BulkheadConfig>(channel: Channel, cfgs: readonly A[], create: (a: A) => ProviderApp): ChannelClient {
  const apps = cfgs.map((a) => ({ app: create(a), cfg: a }));
  const first = apps[0].app.name;
  return { channel, apps, route: () => first };
}

type Counted = ReturnType<typeof gatewaySends.labels>;
type Observed = ReturnType<typeof gatewayLatency.labels>;
/** An app's metric children, looked up once: sends by outcome, request durations by result. */
interface AppMetrics {
  sent: Counted;
  retryable: Counted;
  failed: Counted;
  refused: Counted;
  ok: Observed;
  partial: Observed;
  error: Observed;
}

/**
 * The apps of `client`, each with its own {@link Bulkhead} (concurrency,
 * queue, breaker, rate limit), owned by one gateway process. Counts every
 * send's result, and every request's latency, per app.
 */
export class ProviderApps {
  private readonly apps: Map<string, { app: ProviderApp; cfg: BulkheadConfig; bulkhead: Bulkhead; metrics: AppMetrics }>;

  constructor(private readonly client: ChannelClient, private readonly log: Logger) {
    const ch = client.channel;
    this.apps = new Map(client.apps.map(({ app, cfg }) => {
      const sends = (o: string): Counted => gatewaySends.labels(ch, app.name, o);
      const took = (r: string): Observed => gatewayLatency.labels(ch, app.name, r);
      const metrics: AppMetrics = {
        sent: sends("sent"), retryable: sends("retryable"), failed: sends("failed"), refused: sends("refused"),
        ok: took("ok"), partial: took("partial"), error: took("error"),
      };
      return [app.name, { app, cfg, bulkhead: new Bulkhead(app.name, cfg, log, app.callPerSend ?? false), metrics }];
    }));
  }

  /** The app that sends `s`: the client's route, or the first app when the route names none of them. */
  appOf(s: Send): string {
    const routed = this.client.route(s);
    return this.apps.has(routed) ? routed : this.client.apps[0].app.name;
  }

  /** Sends per request of app `name` (one of {@link names}). */
  perRequest(name: string): number {
    return this.apps.get(name)!.app.perRequest;
  }

  /** The apps' names, in the client's order. */
  names(): string[] {
    return [...this.apps.keys()];
  }

  /** Each app's bulkhead state (breaker, in flight, queued), in the client's order. */
  states(): BulkheadState[] {
    return [...this.apps.values()].map((a) => a.bulkhead.state());
  }

  /**
   * Sends `sends` of `n` through app `name`, or its failover while its
   * breaker is open. `recordAnswer` runs as soon as the provider answers and
   * holds the bulkhead slot until the records it started are written: a send
   * is in flight from its request's start until its outcome is recorded, and
   * the app's `concurrency` bounds exactly those. `answered` gets each send's
   * result as it arrives from an app that answers send by send (its records
   * are started then; `recordAnswer` still runs, and waits for them, once
   * the whole request has answered). Resolves the results, or the
   * refusal when no app took them; never calls an app twice for one request.
   */
  async dispatch(
    name: string, n: NotificationBrief, sends: Send[], recordAnswer: (res: SendResult[]) => Promise<void>, answered?: (j: number, r: SendResult) => void, tried: Set<string> = new Set(),
  ): Promise<SendResult[] | Refusal> {
    const a = this.apps.get(name)!;
    tried.add(name);
    const m = a.metrics;
    const r = await a.bulkhead.run(sends.length, async () => {
      const t0 = performance.now();
      const res = await a.app.request(n, sends, answered);
      let ok = 0;
      for (const x of res) if (x.ok) ok++;
      (ok === res.length ? m.ok : ok > 0 ? m.partial : m.error).observe((performance.now() - t0) / 1000);
      await recordAnswer(res);
      return res;
    }, a.app.callPerSend ? sends.length : 1);
    if (!isRefusal(r)) {
      let ok = 0;
      let retryable = 0;
      for (const x of r) if (x.ok) ok++;
      else if (x.error.retryable) retryable++;
      if (ok) m.sent.inc(ok);
      if (retryable) m.retryable.inc(retryable);
      if (r.length - ok - retryable) m.failed.inc(r.length - ok - retryable);
      return r;
    }
    m.refused.inc(sends.length);
    const f = a.cfg.failover;
    if (f && !tried.has(f) && this.apps.has(f)) {
      this.log.debug({ app: name, failover: f, sends: sends.length }, "failing over");
      return this.dispatch(f, n, sends, recordAnswer, answered, tried);
    }
    return r;
  }

  /** Closes every app's provider client. */
  async close(): Promise<void> {
    await Promise.all(this.client.apps.map((a) => a.app.close()));
  }
}
