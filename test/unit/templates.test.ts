// Templates: validation, derived variables, locale fallback, escaping per field.
import t from "tap";

import { TemplateInvalid } from "../../lib/core/errors.js";
import { pickLocale, prepareTemplate, renderEmail, renderPush, variablesOf } from "../../lib/intake/templates.js";

t.test("variablesOf: request variables, not the recipient's, not block-relative paths", async (t) => {
  t.same(variablesOf("Hi {{user.firstName}}, {{order}} {{#if vip}}{{code}}{{/if}} {{#each items}}{{name}}{{/each}} {{{raw}}} {{amount.value}}").sort(), ["amount", "code", "items", "order", "raw", "vip"]);
  t.throws(() => variablesOf("{{#if x}}"), "syntax errors throw");
});

t.test("prepareTemplate: schema, syntax and default-locale rules name their path", async (t) => {
  const ok = { id: "welcome", defaultLocale: "en", channels: { push: { en: { title: "Hi {{name}}", body: "Welcome" } } } };
  t.same(prepareTemplate(ok, 5).variables, ["name"]);
  const bad: [unknown, string][] = [
    [{ ...ok, id: "has space" }, "id"],
    [{ ...ok, defaultLocale: "English" }, "defaultLocale"],
    [{ ...ok, channels: {} }, "channels"],
    [{ ...ok, channels: { push: { en: { title: "{{#each}}", body: "b" } } } }, "channels.push.en.title"],
    [{ ...ok, channels: { push: { de: { title: "t", body: "b" } } } }, "channels.push"],
    [{ ...ok, channels: { email: { en: { subject: "s" } } } }, "channels.email.en"],
    [{ ...ok, extra: 1 }, "extra"],
  ];
  for (const [input, field] of bad) {
    const err = t.throws(() => prepareTemplate(input, 0)) as unknown as TemplateInvalid;
    t.type(err, TemplateInvalid);
    t.equal(err.field, field, `${field} named`);
  }
});

t.test("locale fallback: exact, then language, then default", async (t) => {
  const e = { en: 1, pt: 2, "de-DE": 3 };
  t.equal(pickLocale(e, "de-DE", "en"), 3);
  t.equal(pickLocale(e, "pt-BR", "en"), 2);
  t.equal(pickLocale(e, "ja-JP", "en"), 1);
  t.equal(pickLocale(e, undefined, "en"), 1);
});

t.test("rendering: HTML escaped in email html only; user attributes available", async (t) => {
  const template = prepareTemplate(
    {
      id: "x", defaultLocale: "en",
      channels: {
        push: { en: { title: "{{title}}", body: "{{user.firstName}} & {{note}}", data: { link: "/o/{{order}}" } } },
        email: { en: { subject: "Re: {{note}}", html: "<p>{{note}} {{user.firstName}}</p>", text: "{{note}}" } },
      },
    },
    1,
  );
  const use = { template, variables: { title: "T", note: "<script>alert(1)</script>", order: "9" } };
  const user = { id: "u1", locale: "en", attributes: { firstName: "Zoë <3" } };
  t.same(renderPush(use, user), { title: "T", body: "Zoë <3 & <script>alert(1)</script>", data: { link: "/o/9" } }, "push is plain text");
  const email = renderEmail(use, user)!;
  t.equal(email.html, "<p>&lt;script&gt;alert(1)&lt;/script&gt; Zoë &lt;3</p>", "variables in email HTML are escaped");
  t.equal(email.subject, "Re: <script>alert(1)</script>", "the subject is not HTML");
  t.equal(email.text, "<script>alert(1)</script>", "nor is the text part");
});
