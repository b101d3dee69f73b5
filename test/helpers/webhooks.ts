// Test helpers for webhook endpoints: a topic and endpoints on the sandbox receiver subscribed to it, the receiver holding their secrets.
import type { NatsConnection } from "@nats-io/transport-node";

import { API } from "../../lib/core/subjects.js";
import type { Endpoint } from "../../lib/directory/endpoints.js";
import { callApi } from "../../lib/intake/api-client.js";
import type { WebhookReceiver } from "../../sandbox/webhook-receiver.js";

/** Creates topic `topic` and one endpoint per name in `names` at `rx.url(name)`, subscribed to it; `rx` verifies each with its secrets. Resolves the endpoints in `names` order. */
export async function receiverEndpoints(nc: NatsConnection, rx: WebhookReceiver, topic: string, names: readonly string[]): Promise<Endpoint[]> {
  await callApi(nc, API.topics, { action: "put", name: topic });
  const eps: Endpoint[] = [];
  for (const name of names) {
    const ep = await callApi<Endpoint>(nc, API.endpoints, { action: "create", url: rx.url(name), topics: [topic] });
    rx.setSecrets(name, ep.secrets.map((s) => s.secret));
    eps.push(ep);
  }
  return eps;
}
