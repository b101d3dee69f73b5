// Email and SMS through the whole pipeline: a request for email reaches SendGrid, a critical push with no device falls back to SMS at Twilio.
import t from "tap";

import { writeUsers } from "../../lib/directory/directory.js";
import { notify, status } from "../../lib/intake/api-client.js";
import { clientsFor, eventually, startTestCluster } from "../helpers/cluster.js";

t.test("email and SMS end to end, with fallback", async (t) => {
  const cluster = await startTestCluster(t, { overrides: { ingest: { channels: ["push", "email", "sms"] } } });
  const { nats, redis } = await clientsFor(t, cluster.cfg);
  const rec = cluster.sandbox!.recorder;
  await writeUsers(redis, cluster.cfg.cluster.shards, [
    { id: "mia", email: "mia@example.com", devices: [] },
    { id: "noah", phone: "+15557770001", devices: [] },
  ]);

  const mail = await notify(nats.nc, { recipients: ["mia"], category: "transactional", channels: ["email"], content: { email: { subject: "Invoice 7", text: "Due Friday" } } });
  t.ok(await eventually(async () => (await status(nats.nc, mail.id)).complete, 30_000), "the email notification completes");
  const line = (await status(nats.nc, mail.id)).lines[0];
  t.match(line, { user: "mia", channel: "email", outcome: /^(sent|delivered)$/ }, "mia's email was sent (SendGrid's delivered event may already be in)");
  const got = rec.accepted("sendgrid").filter((d) => d.nid === mail.id);
  t.same(got.map((d) => [d.token, d.title, d.body]), [["mia@example.com", "Invoice 7", "Due Friday"]], "SendGrid received it once, with its subject and text");

  const alarm = await notify(nats.nc, { recipients: ["noah"], category: "security", priority: "critical", content: { push: { title: "New login", body: "From Lisbon" } } });
  t.ok(await eventually(async () => (await status(nats.nc, alarm.id)).complete, 30_000), "the critical notification completes");
  t.match((await status(nats.nc, alarm.id)).lines[0], { user: "noah", channel: "sms", outcome: /^(sent|delivered)$/, providerId: /^SM/ }, "noah has no device: critical falls back to SMS");
  const sms = rec.accepted("twilio").filter((d) => d.token === "+15557770001");
  t.same(sms.map((d) => d.body), ["New login: From Lisbon"], "Twilio received the push content as one text, once");
});
