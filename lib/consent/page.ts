// The recipient preference page reached from a signed email link: its strings per locale, the server-rendered HTML (works without JavaScript, no external resources, CSP nonce on inline style and script) and the parser of the url-encoded form it posts.
import { RequestInvalid } from "../core/errors.js";
import { CONTENT_CHANNELS, type ContentChannel } from "../core/subjects.js";

/** Every visible text of the preference page, in one locale. Functions take already-plain text; the renderer escapes their results. */
export interface PageStrings {
  /** Document title and main heading. */
  title: string;
  /** The sentence under the heading. */
  intro: string;
  /** The muted line naming whose preferences these are. */
  forUser: (user: string) => string;
  /** Header of the category column. */
  categoryHeader: string;
  /** Header of each channel column. */
  channels: Readonly<Record<ContentChannel, string>>;
  /** Accessible label of one cell's checkbox, e.g. "Email for Marketing". */
  cellLabel: (channel: string, category: string) => string;
  /** Badge and hint of a transactional category, whose cells cannot be switched off. */
  alwaysOn: string;
  /** Explanation under the table, shown when a transactional category is listed. */
  transactionalNote: string;
  /** Shown instead of the table when no category is offered. */
  noCategories: string;
  /** Legend of the stop-all-marketing fieldset. */
  stopAllLegend: string;
  /** Label of the stop-all-marketing checkbox. */
  stopAllLabel: string;
  /** What stopping all marketing does. */
  stopAllHelp: string;
  /** Legend of the quiet-hours fieldset. */
  quietLegend: string;
  /** Label of the quiet-hours checkbox. */
  quietLabel: string;
  /** What quiet hours do. */
  quietHelp: string;
  /** Label of the quiet-hours start time. */
  from: string;
  /** Label of the quiet-hours end time. */
  to: string;
  /** Label of the time-zone select. */
  timezoneLabel: string;
  /** The time-zone option shown when the user has none. */
  timezoneUnset: string;
  /** The submit button. */
  save: string;
  /** The marker the script shows once something changed. */
  unsaved: string;
  /** Success notice after saving. */
  saved: string;
  /** Success notice after a one-click unsubscribe from one category's email. */
  unsubscribed: (category: string) => string;
  /** Text before an error message in the error banner. */
  errorPrefix: string;
}

const STRINGS: Readonly<Record<string, PageStrings>> = {
  en: {
    title: "Notification preferences",
    intro: "Choose which messages you get, and where.",
    forUser: (u) => `Preferences for ${u}`,
    categoryHeader: "Category",
    channels: { push: "Push", email: "Email", sms: "SMS", inapp: "In-app" },
    cellLabel: (ch, cat) => `${ch} for ${cat}`,
    alwaysOn: "Always on",
    transactionalNote: "Transactional messages, such as receipts and security codes, are always sent.",
    noCategories: "There are no notification categories to choose from.",
    stopAllLegend: "Stop all marketing",
    stopAllLabel: "Stop all marketing messages",
    stopAllHelp: "Overrides the choices above for every marketing message. Transactional messages are still sent.",
    quietLegend: "Quiet hours",
    quietLabel: "Pause notifications during quiet hours",
    quietHelp: "Notifications that are not urgent wait until your quiet hours end.",
    from: "From",
    to: "To",
    timezoneLabel: "Time zone",
    timezoneUnset: "Not set",
    save: "Save preferences",
    unsaved: "Unsaved changes",
    saved: "Your preferences have been saved.",
    unsubscribed: (c) => `You have been unsubscribed from ${c} email.`,
    errorPrefix: "Your changes were not saved:",
  },
  de: {
    title: "Benachrichtigungseinstellungen",
    intro: "Wählen Sie, welche Nachrichten Sie erhalten und auf welchem Weg.",
    forUser: (u) => `Einstellungen für ${u}`,
    categoryHeader: "Kategorie",
    channels: { push: "Push", email: "E-Mail", sms: "SMS", inapp: "In der App" },
    cellLabel: (ch, cat) => `${ch} für ${cat}`,
    alwaysOn: "Immer aktiv",
    transactionalNote: "Transaktionsnachrichten wie Belege und Sicherheitscodes werden immer gesendet.",
    noCategories: "Es gibt keine Benachrichtigungskategorien zur Auswahl.",
    stopAllLegend: "Keine Werbung",
    stopAllLabel: "Alle Werbenachrichten abbestellen",
    stopAllHelp: "Gilt vor den Einstellungen oben für alle Werbenachrichten. Transaktionsnachrichten werden weiterhin gesendet.",
    quietLegend: "Ruhezeiten",
    quietLabel: "Benachrichtigungen während der Ruhezeiten pausieren",
    quietHelp: "Nicht dringende Benachrichtigungen warten, bis Ihre Ruhezeit endet.",
    from: "Von",
    to: "Bis",
    timezoneLabel: "Zeitzone",
    timezoneUnset: "Nicht festgelegt",
    save: "Einstellungen speichern",
    unsaved: "Ungespeicherte Änderungen",
    saved: "Ihre Einstellungen wurden gespeichert.",
    unsubscribed: (c) => `Sie erhalten keine E-Mails der Kategorie „${c}“ mehr.`,
    errorPrefix: "Ihre Änderungen wurden nicht gespeichert:",
  },
  fr: {
    title: "Préférences de notification",
    intro: "Choisissez les messages que vous recevez, et par quel moyen.",
    forUser: (u) => `Préférences de ${u}`,
    categoryHeader: "Catégorie",
    channels: { push: "Push", email: "E-mail", sms: "SMS", inapp: "Dans l’app" },
    cellLabel: (ch, cat) => `${ch} pour ${cat}`,
    alwaysOn: "Toujours actif",
    transactionalNote: "Les messages transactionnels, comme les reçus et les codes de sécurité, sont toujours envoyés.",
    noCategories: "Aucune catégorie de notification à choisir.",
    stopAllLegend: "Arrêter tout le marketing",
    stopAllLabel: "Ne plus recevoir aucun message marketing",
    stopAllHelp: "Prime sur les choix ci-dessus pour tous les messages marketing. Les messages transactionnels restent envoyés.",
    quietLegend: "Heures calmes",
    quietLabel: "Suspendre les notifications pendant les heures calmes",
    quietHelp: "Les notifications non urgentes attendent la fin de vos heures calmes.",
    from: "De",
    to: "À",
    timezoneLabel: "Fuseau horaire",
    timezoneUnset: "Non défini",
    save: "Enregistrer les préférences",
    unsaved: "Modifications non enregistrées",
    saved: "Vos préférences ont été enregistrées.",
    unsubscribed: (c) => `Vous êtes désabonné des e-mails « ${c} ».`,
    errorPrefix: "Vos modifications n’ont pas été enregistrées :",
  },
  es: {
    title: "Preferencias de notificaciones",
    intro: "Elige qué mensajes recibes y por qué medio.",
    forUser: (u) => `Preferencias de ${u}`,
    categoryHeader: "Categoría",
    channels: { push: "Push", email: "Correo", sms: "SMS", inapp: "En la app" },
    cellLabel: (ch, cat) => `${ch} para ${cat}`,
    alwaysOn: "Siempre activo",
    transactionalNote: "Los mensajes transaccionales, como recibos y códigos de seguridad, se envían siempre.",
    noCategories: "No hay categorías de notificaciones para elegir.",
    stopAllLegend: "Detener todo el marketing",
    stopAllLabel: "No recibir ningún mensaje de marketing",
    stopAllHelp: "Prevalece sobre las opciones de arriba para todos los mensajes de marketing. Los mensajes transaccionales se siguen enviando.",
    quietLegend: "Horas de silencio",
    quietLabel: "Pausar las notificaciones durante las horas de silencio",
    quietHelp: "Las notificaciones no urgentes esperan hasta que terminen tus horas de silencio.",
    from: "Desde",
    to: "Hasta",
    timezoneLabel: "Zona horaria",
    timezoneUnset: "Sin definir",
    save: "Guardar preferencias",
    unsaved: "Cambios sin guardar",
    saved: "Tus preferencias se han guardado.",
    unsubscribed: (c) => `Te has dado de baja de los correos de «${c}».`,
    errorPrefix: "No se guardaron tus cambios:",
  },
};
for (const s of Object.values(STRINGS)) Object.freeze(Object.freeze(s).channels);

/** The locales the page has strings for (lower-case language tags). */
export const PAGE_LOCALES: readonly string[] = Object.freeze(Object.keys(STRINGS));

/** The table key for `tag`: the exact tag (case-insensitive), else its language subtag; undefined when neither has strings. */
function localeKey(tag: string | undefined): string | undefined {
  if (!tag) return undefined;
  const exact = tag.toLowerCase();
  if (Object.hasOwn(STRINGS, exact)) return exact;
  const lang = exact.split(/[-_]/, 1)[0];
  return Object.hasOwn(STRINGS, lang) ? lang : undefined;
}

/**
 * The page's strings for `locale` with the template fallback rules: the exact tag ("de-AT"), else its language ("de"),
 * else `fallback` (default "en", resolved by the same rules), else "en". Tags match case-insensitively. Returns the
 * strings and the locale actually used (one of {@link PAGE_LOCALES}). Never throws.
 */
export function pageStrings(locale: string | undefined, fallback = "en"): { locale: string; s: PageStrings } {
  const key = localeKey(locale) ?? localeKey(fallback) ?? "en";
  return { locale: key, s: STRINGS[key] };
}

/** One category row of the page. */
export interface PageCategory {
  name: string;
  description?: string;
  /** Commercial (marketing) categories can be switched off per channel; transactional ones are shown as always on (disabled, checked, not submitted). */
  commercial: boolean;
  /** Per channel offered, whether it is on for this user. Only these channels get a cell; others show an empty cell. */
  channels: Partial<Record<ContentChannel, boolean>>;
}

/** Everything the page shows; the server builds it from the user's record, the configured categories and the request. */
export interface PageModel {
  user: string;
  /** The user's locale tag, resolved with {@link pageStrings}. */
  locale: string | undefined;
  categories: PageCategory[];
  /** "Stop all marketing" is ticked. */
  marketingOptOut: boolean;
  /** "HH:MM" 24 h, in `timezone`; null for none. */
  quietHours: { start: string; end: string } | null;
  /** IANA zone of the user. */
  timezone: string | undefined;
  /** Options for the time-zone select (the user's own is always included even if not listed). */
  timezones: readonly string[];
  /** The form's POST URL (already contains the signed token). */
  action: string;
  /** The CSP nonce of this response. */
  nonce: string;
  /** Already-localised success message shown at the top (e.g. after saving or after a one-click unsubscribe). */
  notice?: string;
  /** An error message shown at the top (e.g. a field that was invalid), after the locale's error prefix. */
  error?: string;
}

const ESCAPES: Readonly<Record<string, string>> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
/** `s` safe as HTML text and as a double- or single-quoted attribute value. */
export const escapeHtml = (s: string): string => s.replace(/[&<>"']/g, (c) => ESCAPES[c]);

/** Quiet hours the page proposes when the user has none, so ticking the box alone is enough. */
const DEFAULT_QUIET = { start: "22:00", end: "07:00" } as const;

const CSS = `
:root { color-scheme: light dark; --bg: #f4f5f7; --card: #fff; --ink: #1d2330; --muted: #555d6e; --accent: #2f4fc9; --line: #d9dde5;
  --ok-bg: #e3f6e8; --ok-ink: #1e6b34; --err-bg: #fde8e8; --err-ink: #9b1c1c; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #14171d; --card: #1d2129; --ink: #e8eaef; --muted: #a5adbd; --accent: #8ea6ff; --line: #343a46;
    --ok-bg: #16331f; --ok-ink: #9fe0b1; --err-bg: #3a1717; --err-ink: #ffb4b4; }
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink); font: 16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 40rem; margin: 0 auto; padding: 2rem 1rem 4rem; }
h1 { font-size: 1.5rem; line-height: 1.25; margin: 0 0 .25rem; }
p { margin: 0 0 1rem; }
.muted, .hint { color: var(--muted); }
.hint { font-size: .875rem; margin: .5rem 0 0; }
.who { font-size: .875rem; margin-bottom: 1.5rem; overflow-wrap: anywhere; }
.banner { border-radius: .5rem; padding: .75rem 1rem; margin: 0 0 1.25rem; overflow-wrap: anywhere; }
.banner.ok { background: var(--ok-bg); color: var(--ok-ink); }
.banner.err { background: var(--err-bg); color: var(--err-ink); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: .75rem; padding: 1rem 1.25rem; margin: 0 0 1.25rem; }
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; }
th, td { padding: .6rem .4rem; border-bottom: 1px solid var(--line); vertical-align: middle; }
tbody tr:last-child > * { border-bottom: 0; }
thead th { font-size: .8125rem; font-weight: 600; color: var(--muted); text-align: center; white-space: nowrap; }
thead th:first-child, tbody th { text-align: left; }
tbody th { font-weight: 600; overflow-wrap: anywhere; }
tbody th .desc { display: block; font-weight: 400; font-size: .875rem; color: var(--muted); }
td { text-align: center; width: 4.5rem; }
td label { display: inline-flex; padding: .4rem; cursor: pointer; border-radius: .375rem; }
td label.fixed { cursor: default; }
.badge { display: inline-block; margin-left: .4rem; padding: 0 .5rem; border-radius: 999px; font-size: .75rem; font-weight: 500; background: var(--line); color: var(--ink); vertical-align: .1em; }
form.stopped td label.c { opacity: .4; cursor: not-allowed; }
fieldset { border: 1px solid var(--line); border-radius: .75rem; background: var(--card); padding: 1rem 1.25rem; margin: 0 0 1.25rem; min-width: 0; }
legend { font-weight: 600; padding: 0 .35rem; }
.check { display: flex; gap: .6rem; align-items: flex-start; cursor: pointer; }
.check input { margin-top: .3rem; }
.row { display: flex; flex-wrap: wrap; gap: .75rem 1rem; margin-top: .9rem; }
.row label { display: flex; flex-direction: column; gap: .25rem; font-size: .875rem; color: var(--muted); }
.row .tz { flex: 1 1 12rem; }
input[type="checkbox"] { width: 1.15rem; height: 1.15rem; accent-color: var(--accent); margin: 0; }
input[type="time"], select { font: inherit; color: var(--ink); background: var(--card); border: 1px solid var(--line); border-radius: .5rem; padding: .4rem .55rem; min-height: 2.5rem; }
select { width: 100%; }
input[type="time"]:disabled { opacity: .5; }
.actions { display: flex; align-items: center; gap: 1rem; flex-wrap: wrap; }
button { font: inherit; font-weight: 600; color: #fff; background: var(--accent); border: 0; border-radius: .5rem; padding: .7rem 1.4rem; cursor: pointer; }
@media (prefers-color-scheme: dark) { button { color: #10131a; } }
button:hover { filter: brightness(1.08); }
:focus-visible { outline: 3px solid var(--accent); outline-offset: 2px; }
#dirty { font-size: .875rem; color: var(--muted); }
#dirty::before { content: "\\25CF"; color: var(--accent); margin-right: .4rem; }
.vh { position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0; }
@media (max-width: 30rem) { main { padding: 1.25rem .75rem 3rem; } .card, fieldset { padding: .75rem; } td { width: auto; } }
`;

// Progressive enhancement only: without it the form posts exactly the same fields.
const SCRIPT = `
(() => {
  const f = document.getElementById("prefs");
  if (!f) return;
  const stop = f.elements.namedItem("marketing");
  const quiet = f.elements.namedItem("quiet");
  const times = [f.elements.namedItem("quiet_start"), f.elements.namedItem("quiet_end")];
  const cells = f.querySelectorAll("input[data-commercial]");
  const dirty = document.getElementById("dirty");
  const snap = () => new URLSearchParams(new FormData(f)).toString();
  const sync = () => {
    f.classList.toggle("stopped", stop.checked);
    for (const c of cells) if (stop.checked) c.setAttribute("aria-disabled", "true"); else c.removeAttribute("aria-disabled");
    for (const i of times) i.disabled = !quiet.checked;
  };
  sync();
  const initial = snap();
  f.addEventListener("click", (e) => { if (stop.checked && e.target.matches("input[data-commercial]")) e.preventDefault(); });
  const changed = () => { sync(); dirty.hidden = snap() === initial; };
  f.addEventListener("change", changed);
  f.addEventListener("input", changed);
})();
`;

/** Channels shown as columns: those at least one category offers, in {@link CONTENT_CHANNELS} order. */
const columnsOf = (categories: readonly PageCategory[]): ContentChannel[] =>
  CONTENT_CHANNELS.filter((ch) => categories.some((c) => c.channels[ch] !== undefined));

function categoryRow(c: PageCategory, columns: readonly ContentChannel[], s: PageStrings): string {
  const name = escapeHtml(c.name);
  const head =
    `<th scope="row">${name}` +
    (c.commercial ? "" : `<span class="badge">${escapeHtml(s.alwaysOn)}</span>`) +
    (c.description ? `<span class="desc">${escapeHtml(c.description)}</span>` : "") +
    "</th>";
  const cells = columns.map((ch) => {
    const on = c.channels[ch];
    if (on === undefined) return "<td></td>";
    const label = s.cellLabel(s.channels[ch], c.name);
    if (!c.commercial) {
      const fixed = escapeHtml(`${label} (${s.alwaysOn})`);
      return `<td><label class="fixed" title="${escapeHtml(s.alwaysOn)}"><input type="checkbox" checked disabled><span class="vh">${fixed}</span></label></td>`;
    }
    const field = escapeHtml(`c.${c.name}.${ch}`);
    return `<td><label class="c"><input type="checkbox" name="${field}" value="on" data-commercial${on ? " checked" : ""}><span class="vh">${escapeHtml(label)}</span></label></td>`;
  });
  return `<tr>${head}${cells.join("")}</tr>`;
}

function categoryTable(m: PageModel, s: PageStrings): string {
  if (m.categories.length === 0) return `<div class="card"><p class="muted">${escapeHtml(s.noCategories)}</p></div>`;
  const columns = columnsOf(m.categories);
  const header = `<tr><th scope="col">${escapeHtml(s.categoryHeader)}</th>${columns.map((ch) => `<th scope="col">${escapeHtml(s.channels[ch])}</th>`).join("")}</tr>`;
  const note = m.categories.some((c) => !c.commercial) ? `<p class="hint">${escapeHtml(s.transactionalNote)}</p>` : "";
  return `<div class="card"><div class="scroll"><table><thead>${header}</thead><tbody>${m.categories.map((c) => categoryRow(c, columns, s)).join("")}</tbody></table></div>${note}</div>`;
}

function timezoneSelect(m: PageModel, s: PageStrings): string {
  const zones = m.timezone === undefined || m.timezones.includes(m.timezone) ? [...m.timezones] : [m.timezone, ...m.timezones];
  const unset = m.timezone === undefined ? `<option value="" selected>${escapeHtml(s.timezoneUnset)}</option>` : "";
  const options = zones.map((z) => `<option value="${escapeHtml(z)}"${z === m.timezone ? " selected" : ""}>${escapeHtml(z.replace(/_/g, " "))}</option>`);
  return `<select id="timezone" name="timezone">${unset}${options.join("")}</select>`;
}

/**
 * The whole HTML document (`<!doctype html>…`), `lang` set to the locale {@link pageStrings} chose for `m.locale`.
 * It is a plain form POSTing url-encoded fields to `m.action` (see {@link parsePreferenceForm} for the field names) that
 * works without JavaScript; its one inline `<style>` and one inline `<script>` carry `nonce="<m.nonce>"`, there are no
 * inline style attributes or event handlers, and it references no external resource. Every model-supplied text (user,
 * names, descriptions, zones, action, nonce, notice, error) is HTML-escaped. Only channels that some category offers get
 * a column. Pure; never throws.
 */
export function renderPreferencePage(m: PageModel): string {
  const { locale, s } = pageStrings(m.locale);
  const nonce = escapeHtml(m.nonce);
  const quiet = m.quietHours ?? DEFAULT_QUIET;
  const banners =
    (m.notice ? `<p class="banner ok" role="status">${escapeHtml(m.notice)}</p>` : "") +
    (m.error ? `<p class="banner err" role="alert"><strong>${escapeHtml(s.errorPrefix)}</strong> ${escapeHtml(m.error)}</p>` : "");
  return `<!doctype html>
<html lang="${escapeHtml(locale)}">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<meta name="robots" content="noindex, nofollow">
<title>${escapeHtml(s.title)}</title>
<style nonce="${nonce}">${CSS}</style>
</head>
<body>
<main>
<h1>${escapeHtml(s.title)}</h1>
<p class="muted">${escapeHtml(s.intro)}</p>
<p class="muted who">${escapeHtml(s.forUser(m.user))}</p>
${banners}
<form id="prefs" method="post" action="${escapeHtml(m.action)}" autocomplete="off">
<input type="hidden" name="form" value="1">
${categoryTable(m, s)}
<fieldset>
<legend>${escapeHtml(s.stopAllLegend)}</legend>
<label class="check"><input type="checkbox" id="marketing" name="marketing" value="stop"${m.marketingOptOut ? " checked" : ""}><span>${escapeHtml(s.stopAllLabel)}</span></label>
<p class="hint">${escapeHtml(s.stopAllHelp)}</p>
</fieldset>
<fieldset>
<legend>${escapeHtml(s.quietLegend)}</legend>
<label class="check"><input type="checkbox" id="quiet" name="quiet" value="on"${m.quietHours ? " checked" : ""}><span>${escapeHtml(s.quietLabel)}</span></label>
<p class="hint">${escapeHtml(s.quietHelp)}</p>
<div class="row">
<label>${escapeHtml(s.from)}<input type="time" id="quiet_start" name="quiet_start" value="${escapeHtml(quiet.start)}"></label>
<label>${escapeHtml(s.to)}<input type="time" id="quiet_end" name="quiet_end" value="${escapeHtml(quiet.end)}"></label>
<label class="tz">${escapeHtml(s.timezoneLabel)}${timezoneSelect(m, s)}</label>
</div>
</fieldset>
<div class="actions">
<button type="submit">${escapeHtml(s.save)}</button>
<span id="dirty" role="status" hidden>${escapeHtml(s.unsaved)}</span>
</div>
</form>
</main>
<script nonce="${nonce}">${SCRIPT}</script>
</body>
</html>
`;
}

/** What a submitted form asks for. */
export interface PreferenceForm {
  /** Per commercial category offered, per channel offered: on or off. Categories/channels not offered are ignored. */
  categories: Record<string, Partial<Record<ContentChannel, boolean>>>;
  marketingOptOut: boolean;
  quietHours: { start: string; end: string } | null;
  timezone: string | undefined;
}

const HHMM = /^([01][0-9]|2[0-3]):[0-5][0-9]$/;
/** The shape of an IANA zone name ("Europe/Berlin", "Etc/GMT+5", "UTC"); Intl decides whether it exists. */
const ZONE_SHAPE = /^[A-Za-z][A-Za-z0-9_+\-/]{0,63}$/;

const invalid = (field: string, rule: string): RequestInvalid => new RequestInvalid(`${field}: ${rule}`, { field });

/** The value of a checkbox field: false when absent, true when `expected`; anything else throws naming `field`. */
function ticked(q: URLSearchParams, field: string, expected: string): boolean {
  const v = q.get(field);
  if (v === null) return false;
  if (v !== expected) throw invalid(field, `must be "${expected}" when present`);
  return true;
}

function quietHoursOf(q: URLSearchParams): { start: string; end: string } | null {
  if (!ticked(q, "quiet", "on")) return null;
  const start = q.get("quiet_start") ?? "";
  const end = q.get("quiet_end") ?? "";
  if (!HHMM.test(start)) throw invalid("quiet_start", "must be HH:MM (00:00-23:59)");
  if (!HHMM.test(end)) throw invalid("quiet_end", "must be HH:MM (00:00-23:59)");
  if (start === end) throw invalid("quiet_end", "must differ from quiet_start");
  return { start, end };
}

function timezoneOf(q: URLSearchParams): string | undefined {
  const tz = q.get("timezone");
  if (tz === null || tz === "") return undefined;
  let known = ZONE_SHAPE.test(tz);
  if (known) {
    try {
      new Intl.DateTimeFormat(undefined, { timeZone: tz });
    } catch {
      known = false;
    }
  }
  if (!known) throw invalid("timezone", "must be an IANA time zone");
  return tz;
}

/**
 * Parses the url-encoded body the page's form posts, against the categories offered. Fields: `form=1` (required: a body
 * without it is not this form, and reading it as one would switch every cell off), `c.<category>.<channel>=on` per ticked
 * commercial cell, `marketing=stop`, `quiet=on` with `quiet_start`/`quiet_end` ("HH:MM"), `timezone` (IANA; empty or
 * absent for none). Only commercial categories and their offered channels are read: an unticked checkbox is absent from
 * the body, so every offered cell not present is off; transactional categories, unknown categories and channels not
 * offered are ignored and never appear in the result. Quiet hours are null when `quiet` is absent, whatever the times.
 * Throws {@link RequestInvalid}
 * (`field` set, message `<field>: <rule>`) for the first invalid field: `form: must be 1`, a present checkbox with
 * another value (`marketing: must be "stop" when present`), `quiet_start`/`quiet_end: must be HH:MM (00:00-23:59)`,
 * `quiet_end: must differ from quiet_start`, `timezone: must be an IANA time zone`.
 */
export function parsePreferenceForm(body: string, offered: readonly PageCategory[]): PreferenceForm {
  const q = new URLSearchParams(body);
  if (q.get("form") !== "1") throw invalid("form", "must be 1 (a body posted by the preference form)");
  const categories = Object.fromEntries(
    offered
      .filter((c) => c.commercial)
      .map((c) => {
        const cells: Partial<Record<ContentChannel, boolean>> = {};
        for (const ch of CONTENT_CHANNELS) if (c.channels[ch] !== undefined) cells[ch] = ticked(q, `c.${c.name}.${ch}`, "on");
        return [c.name, cells] as const;
      }),
  );
  return { categories, marketingOptOut: ticked(q, "marketing", "stop"), quietHours: quietHoursOf(q), timezone: timezoneOf(q) };
}
