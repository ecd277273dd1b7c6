// Small DOM, formatting and fetch helpers shared by every view.
// Strings from the server only ever reach the page as text nodes (h() children,
// textContent, attribute values); nothing here or in the views uses innerHTML.

/**
 * Build an element: h("a", {href: "#/x", class: "c", "data-thing": n, onclick: f}, "text", child).
 * Attributes named on* are event listeners; null/false attributes and children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** SVG elements need their own namespace. */
export function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

/** Set an element's text only when it changed (cheap on big tables). */
export function setText(el, text) {
  const value = String(text);
  if (el.textContent !== value) el.textContent = value;
}

/** A card with a heading, used by every view. */
export function card(title, ...children) {
  return h("section", { class: "card" }, h("h2", { text: title }), ...children);
}

export function empty(text) {
  return h("p", { class: "empty", text });
}

export function badge(text, tone) {
  return h("span", { class: `badge badge-${tone}`, text });
}

/** A table inside a horizontally scrollable wrapper. */
export function table(headers, attrs = {}) {
  const tbody = h("tbody");
  const el = h("table", attrs, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col", text: t })))), tbody);
  return { wrap: h("div", { class: "table-wrap" }, el), table: el, tbody };
}

// ---- fetch ------------------------------------------------------------------

class HttpError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.Message)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/** GET (or POST `json`) and return the parsed JSON, or throw HttpError with the server's message. */
export async function api(path, { json } = {}) {
  const init = { credentials: "same-origin" };
  if (json !== undefined) {
    init.method = "POST";
    init.headers = { "Content-Type": "application/json" };
    init.body = JSON.stringify(json);
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = { message: text };
  }
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

// ---- time -------------------------------------------------------------------

// Relative times use the gateway's clock (from `tick`.t) so a skewed or simulated
// clock does not show "-3 s ago".
let serverOffsetMs = 0;

export function syncClock(serverMs) {
  serverOffsetMs = serverMs - Date.now();
}

function now() {
  return Date.now() + serverOffsetMs;
}

const pad = (n) => String(n).padStart(2, "0");

function clockTime(ms) {
  if (!Number.isFinite(ms)) return "—";
  const d = new Date(ms);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function ago(ms, at = now()) {
  if (!Number.isFinite(ms)) return "never";
  const s = Math.max(0, Math.round((at - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** A <time> showing "12 s ago" (kept fresh by refreshAgo) with HH:MM:SS as tooltip. */
export function agoEl(ms) {
  const el = h("time", {});
  setAgo(el, ms);
  return el;
}

export function setAgo(el, ms) {
  if (!Number.isFinite(ms)) {
    delete el.dataset.ago;
    el.removeAttribute("datetime");
    el.title = "";
    setText(el, "never");
    return;
  }
  el.dataset.ago = String(ms);
  el.dateTime = new Date(ms).toISOString();
  el.title = clockTime(ms);
  setText(el, ago(ms));
}

/** A <time> showing HH:MM:SS. */
export function clockEl(ms) {
  const el = h("time", { text: clockTime(ms) });
  if (Number.isFinite(ms)) el.dateTime = new Date(ms).toISOString();
  return el;
}

/** "HH:MM:SS (12 s ago)" */
export function whenEl(ms) {
  if (!Number.isFinite(ms)) return h("span", { class: "muted", text: "never" });
  return h("span", {}, clockEl(ms), " (", agoEl(ms), ")");
}

/** Re-render every relative time under root; called once per tick. */
export function refreshAgo(root) {
  const at = now();
  for (const el of root.querySelectorAll("time[data-ago]")) setText(el, ago(Number(el.dataset.ago), at));
}

// ---- values -----------------------------------------------------------------

export function pretty(value) {
  return value === undefined ? "null" : JSON.stringify(value, null, 2);
}

/** A payload as display text: indented JSON when it parses, else the text; base64 as is. */
function payloadText(payload, encoding) {
  if (encoding === "base64") return payload;
  try {
    return JSON.stringify(JSON.parse(payload), null, 2);
  } catch {
    return payload;
  }
}

export function payloadPre(payload, encoding) {
  return h("pre", { class: "payload", text: payloadText(payload, encoding) });
}

export function attributesText(attributes) {
  return Object.entries(attributes || {})
    .map(([k, v]) => `${k}=${v}`)
    .join(" ");
}

export function shortId(id, keep = 10) {
  return id && id.length > keep ? `${id.slice(0, keep)}…` : id || "";
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

export function num(n, digits = 0) {
  return n === null || n === undefined ? "—" : Number(n).toFixed(digits);
}

/** Run fn (which rebuilds part of root) and keep <details data-key> that were open, open. */
export function keepOpen(root, fn) {
  const open = new Set([...root.querySelectorAll("details[data-key][open]")].map((d) => d.dataset.key));
  fn();
  for (const d of root.querySelectorAll("details[data-key]")) if (open.has(d.dataset.key)) d.open = true;
}

/** Reflect a form's outcome in a live region: tone is "ok" or "error". */
export function showResult(el, tone, ...children) {
  el.replaceChildren(...children);
  el.dataset.tone = tone;
}

/** An MQTT 5 message's properties (content type, response topic, correlation data, user properties) as a list. */
function propertiesList(properties) {
  if (!properties) return null;
  const rows = [];
  for (const [key, label] of [
    ["contentType", "content type"],
    ["payloadFormatIndicator", "payload format"],
    ["responseTopic", "response topic"],
    ["correlationData", "correlation data (base64)"],
    ["messageExpiry", "expires in (s)"],
  ]) {
    if (properties[key] !== undefined) rows.push(h("div", {}, h("span", { class: "muted", text: `${label}: ` }), h("code", { text: String(properties[key]) })));
  }
  for (const pair of properties.userProperties || []) {
    rows.push(h("div", {}, h("span", { class: "muted", text: "user property: " }), h("code", { text: `${pair.key} = ${pair.value}` })));
  }
  return rows.length ? h("div", { class: "msg-props", role: "group", "aria-label": "MQTT 5 properties" }, ...rows) : null;
}

/** One MQTT message as a list item: time, topic, QoS, client id, MQTT 5 properties, payload. */
export function messageItem(message) {
  return h(
    "li",
    { class: "message", "data-topic": message.topic },
    h(
      "div",
      { class: "message-meta" },
      clockEl(message.timestampMs),
      h("code", { class: "topic", text: message.topic }),
      h("span", { class: "muted", text: `QoS ${message.qos}` }),
      message.retain ? badge("retained", "info") : null,
      h("span", { class: "muted", text: message.clientId ? `from ${message.clientId}` : "from (unknown)" }),
      message.encoding === "base64" ? badge("base64", "info") : null,
      message.properties ? badge("MQTT 5", "info") : null,
    ),
    propertiesList(message.properties),
    payloadPre(message.payload, message.encoding),
  );
}

/** Prepend an item to a list and drop the oldest beyond max. */
export function prependCapped(list, item, max) {
  list.prepend(item);
  while (list.childElementCount > max) list.lastElementChild.remove();
}

/**
 * Keep container's children in step with a keyed list without rebuilding
 * unchanged items: make(item) returns {el, update(item)}; update runs every sync.
 * emptyEl is shown when the list is empty.
 */
export function keyedList(container, emptyEl) {
  let entries = new Map();
  return function sync(items, keyOf, make) {
    const next = new Map();
    for (const item of items) {
      const key = keyOf(item);
      const entry = entries.get(key) || make(item);
      entry.update(item);
      next.set(key, entry);
    }
    entries = next;
    const wanted = next.size ? [...next.values()].map((e) => e.el) : [emptyEl];
    const current = container.children;
    if (wanted.length !== current.length || wanted.some((el, i) => current[i] !== el)) container.replaceChildren(...wanted);
    return entries;
  };
}
