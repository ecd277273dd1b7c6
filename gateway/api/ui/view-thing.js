// #/thing/NAME: identity, shadows (live), desired-state form, messages, certificates,
// policies and effective permissions.
import { stateBadge } from "./view-fleet.js";
import {
  agoEl,
  api,
  attributesText,
  badge,
  card,
  clockEl,
  empty,
  h,
  keepOpen,
  messageItem,
  prependCapped,
  pretty,
  setAgo,
  setText,
  shortId,
  showResult,
  table,
  whenEl,
} from "./util.js";

const MAX_MESSAGES = 100;
const MAX_HISTORY = 20;
const CHECK_ACTIONS = {
  "iot:Connect": "client/",
  "iot:Publish": "topic/",
  "iot:Subscribe": "topicfilter/",
  "iot:Receive": "topic/",
  "iot:RetainPublish": "topic/",
  "iot:GetThingShadow": "thing/",
  "iot:UpdateThingShadow": "thing/",
  "iot:DeleteThingShadow": "thing/",
};

const shadowKey = (shadowName) => (shadowName === null || shadowName === undefined ? "classic" : `named:${shadowName}`);
const thingPath = (name) => `/edgesim/dash/thing/${encodeURIComponent(name)}`;

// ---- shadows ----------------------------------------------------------------

function historyItem(key, entry) {
  return h(
    "li",
    {},
    h(
      "details",
      { "data-key": `${key}:v${entry.version}` },
      h("summary", {}, `version ${entry.version} · `, clockEl(entry.timestampMs)),
      h("pre", { class: "json", text: pretty(entry.state) }),
    ),
  );
}

/** A shadow's section; returns {el, update(shadow), pushHistory(entry), setHistory(list)}. */
function shadowSection(shadowName) {
  const key = shadowKey(shadowName);
  const parts = Object.fromEntries(["desired", "reported", "delta"].map((p) => [p, h("pre", { class: "json", "data-part": p })]));
  const version = h("span", { "data-part": "version" });
  const time = h("span", {});
  const deleted = badge("deleted", "off");
  const historyList = h("ol", { class: "history" });
  const historyCount = h("span", {});
  const el = h(
    "section",
    { class: "shadow", "data-shadow": key },
    h(
      "div",
      { class: "shadow-head" },
      h("h3", { text: shadowName === null ? "Classic shadow" : `Named shadow “${shadowName}”` }),
      h("span", { class: "muted" }, "version ", version),
      time,
      deleted,
    ),
    h(
      "div",
      { class: "shadow-parts" },
      Object.entries(parts).map(([name, pre]) => h("figure", {}, h("figcaption", { text: name }), pre)),
    ),
    h("details", { "data-key": `${key}:history` }, h("summary", {}, "Version history (", historyCount, ")"), historyList),
  );
  let history = [];

  function showHistory() {
    setText(historyCount, history.length);
    keepOpen(historyList, () => historyList.replaceChildren(...history.map((entry) => historyItem(key, entry))));
  }

  return {
    el,
    version: () => Number(version.textContent),
    update(shadow, timestampMs) {
      for (const [name, pre] of Object.entries(parts)) setText(pre, pretty(shadow.state?.[name] ?? null));
      setText(version, shadow.version);
      time.replaceChildren(whenEl(timestampMs));
      deleted.hidden = !shadow.deleted;
    },
    setHistory(list) {
      history = (list || []).slice(0, MAX_HISTORY);
      showHistory();
    },
    pushHistory(entry) {
      history = [entry, ...history.filter((e) => e.version !== entry.version)].slice(0, MAX_HISTORY);
      showHistory();
    },
  };
}

function shadowOrder(a, b) {
  if (a === null) return -1;
  if (b === null) return 1;
  return a.localeCompare(b);
}

// ---- static sections --------------------------------------------------------

function certificatesTable(certificates) {
  if (!certificates.length) return empty("No certificates attached — attach one with `edgesim certs create` or boto3 (iot.attach_thing_principal).");
  const t = table(["Certificate", "Status", "Subject", "Not after", "Created"]);
  for (const cert of certificates) {
    t.tbody.append(
      h(
        "tr",
        {},
        h("td", {}, h("code", { title: cert.certificateId, text: shortId(cert.certificateId) })),
        h("td", {}, badge(cert.status, cert.status === "ACTIVE" ? "ok" : "off")),
        h("td", { text: cert.subject || "—" }),
        h("td", { text: cert.notAfter || "—" }),
        h("td", {}, clockEl(cert.createdMs), " ", h("span", { class: "muted" }, "(", agoEl(cert.createdMs), ")")),
      ),
    );
  }
  return t.wrap;
}

function policiesList(policies) {
  if (!policies.length) return empty("No policies — attach one to the thing's certificate with `edgesim policies attach` or boto3.");
  return h(
    "div",
    { class: "stack" },
    policies.map((policy) =>
      h(
        "details",
        { "data-key": `policy:${policy.policyName}:${policy.via}` },
        h("summary", {}, h("strong", { text: policy.policyName }), h("span", { class: "muted", title: policy.via, text: ` via certificate ${shortId(policy.via)}` })),
        h("pre", { class: "json", text: pretty(policy.document) }),
      ),
    ),
  );
}

function allowedBadge(allowed) {
  return badge(allowed ? "allowed" : "denied", allowed ? "ok" : "error");
}

function fillPermissions(tbody, permissions) {
  tbody.replaceChildren(
    ...permissions.map((p) =>
      h(
        "tr",
        {},
        h("td", { text: p.action }),
        h("td", {}, h("code", { text: p.resource })),
        h("td", {}, allowedBadge(p.allowed)),
        h("td", { text: p.why }),
      ),
    ),
  );
}

// ---- forms ------------------------------------------------------------------

function checkForm(thing) {
  const action = h(
    "select",
    { id: "check-action" },
    Object.keys(CHECK_ACTIONS).map((a) => h("option", { value: a, text: a })),
  );
  const resource = h("input", { id: "check-resource", type: "text", autocomplete: "off", required: true });
  const result = h("div", { id: "check-result", class: "result", role: "status", "aria-live": "polite" });
  const suggest = () => {
    const prefix = CHECK_ACTIONS[action.value];
    resource.placeholder = `${prefix}${prefix === "client/" || prefix === "thing/" ? thing : "…"}`;
  };
  action.addEventListener("change", suggest);
  suggest();

  async function submit(event) {
    event.preventDefault();
    const params = new URLSearchParams({ action: action.value, resource: resource.value.trim() });
    try {
      const answer = await api(`${thingPath(thing)}/check?${params}`);
      showResult(result, answer.allowed ? "ok" : "error", allowedBadge(answer.allowed), " ", h("code", { text: answer.resource }), h("p", { text: answer.why }));
    } catch (err) {
      showResult(result, "error", err.message);
    }
  }

  return h(
    "form",
    { class: "inline-form", onsubmit: submit },
    h("label", { for: "check-action", text: "Action" }),
    action,
    h("label", { for: "check-resource", text: "Resource" }),
    resource,
    h("button", { type: "submit", text: "Check" }),
    result,
  );
}

function desiredForm(thing, currentDesired, onAccepted) {
  const select = h("select", { id: "desired-shadow" }, h("option", { value: "", text: "classic" }));
  const newName = h("input", { id: "desired-new-name", type: "text", autocomplete: "off", placeholder: "e.g. config" });
  const input = h("textarea", { id: "desired-input", rows: 6, spellcheck: false, placeholder: '{"color": "green"}' });
  const submitButton = h("button", { id: "desired-submit", type: "submit", text: "Update desired state" });
  const result = h("div", { id: "desired-result", class: "result", role: "status", "aria-live": "polite" });
  let prefilled = "";

  // Show the chosen shadow's desired state, unless the user already typed something.
  function prefill() {
    if (input.value !== prefilled) return;
    const desired = currentDesired(select.value || null);
    prefilled = desired ? pretty(desired) : "";
    input.value = prefilled;
  }
  select.addEventListener("change", prefill);

  function parseDesired() {
    let desired;
    try {
      desired = JSON.parse(input.value);
    } catch (err) {
      throw new Error(`Invalid JSON: ${err.message}. Nothing was sent.`);
    }
    if (desired !== null && (typeof desired !== "object" || Array.isArray(desired))) {
      throw new Error("The desired state must be a JSON object (or null to clear it). Nothing was sent.");
    }
    return desired;
  }

  async function submit(event) {
    event.preventDefault();
    const shadowName = newName.value.trim() || select.value;
    let desired;
    try {
      desired = parseDesired();
    } catch (err) {
      showResult(result, "error", err.message);
      input.focus();
      return;
    }
    const query = shadowName ? `?name=${encodeURIComponent(shadowName)}` : "";
    submitButton.disabled = true;
    try {
      const doc = await api(`/things/${encodeURIComponent(thing)}/shadow${query}`, { json: { state: { desired } } });
      showResult(result, "ok", `Accepted: ${shadowName ? `shadow “${shadowName}”` : "classic shadow"} is now at version ${doc.version}.`);
      newName.value = "";
      onAccepted(shadowName || null);
      select.value = shadowName;
    } catch (err) {
      showResult(result, "error", `Refused: ${err.message}`);
    } finally {
      submitButton.disabled = false;
    }
  }

  const el = h(
    "form",
    { class: "desired-form", onsubmit: submit },
    h("div", { class: "field" }, h("label", { for: "desired-shadow", text: "Shadow" }), select),
    h("div", { class: "field" }, h("label", { for: "desired-new-name", text: "…or a new named shadow" }), newName),
    h("div", { class: "field field-wide" }, h("label", { for: "desired-input", text: "Desired state (JSON object)" }), input),
    h("div", { class: "field-wide" }, submitButton, result),
  );

  return {
    el,
    setShadows(names) {
      const chosen = select.value;
      select.replaceChildren(
        h("option", { value: "", text: "classic" }),
        ...names.filter((n) => n !== null).map((n) => h("option", { value: n, text: n })),
      );
      select.value = names.includes(chosen) || chosen === "" ? chosen : "";
      prefill();
    },
  };
}

// ---- the view ---------------------------------------------------------------

export function create(main, name) {
  const header = {
    state: h("span", {}),
    type: h("dd", {}),
    version: h("dd", {}),
    attributes: h("dd", {}),
    groups: h("dd", {}),
    since: h("dd", {}),
    last: agoEl(null),
  };
  const shadowsBox = h("div", { class: "stack" });
  const shadows = new Map(); // shadowKey -> {name, section, desired}
  const messages = h("ul", { id: "thing-messages", class: "messages" });
  const messagesEmpty = empty("No messages from this thing yet.");
  const certificates = h("div", {});
  const policies = h("div", {});
  const permissions = table(["Action", "Resource", "Result", "Why"], { id: "permissions" });
  const form = desiredForm(name, (shadowName) => shadows.get(shadowKey(shadowName))?.desired ?? null, ensureShadow);
  const content = h(
    "div",
    { id: "thing", "data-thing": name, hidden: true },
    h(
      "section",
      { class: "card thing-head" },
      h("h1", {}, h("span", { text: name }), " ", header.state),
      h(
        "dl",
        { class: "facts" },
        h("dt", { text: "Type" }), header.type,
        h("dt", { text: "Registry version" }), header.version,
        h("dt", { text: "Attributes" }), header.attributes,
        h("dt", { text: "Groups" }), header.groups,
        h("dt", { text: "Connected since" }), header.since,
        h("dt", { text: "Last message" }), h("dd", {}, header.last),
      ),
    ),
    card("Shadows", shadowsBox),
    card("Set desired state", form.el),
    card("Recent messages", messages, messagesEmpty),
    h(
      "div",
      { class: "grid-2" },
      card("Certificates", certificates),
      card("Policies", policies),
    ),
    card("Effective permissions", permissions.wrap, h("h3", { text: "Check an action" }), checkForm(name)),
  );
  main.append(content);

  function setConnected(connected, sinceMs) {
    header.state.replaceChildren(stateBadge(connected));
    header.since.replaceChildren(connected ? whenEl(sinceMs) : h("span", { class: "muted", text: "not connected" }));
  }

  function ensureShadow(shadowName) {
    const key = shadowKey(shadowName);
    if (!shadows.has(key)) {
      const entry = { name: shadowName, section: shadowSection(shadowName), desired: null };
      entry.section.update({ version: "—", state: {} }, null);
      shadows.set(key, entry);
      showShadows();
    }
    return shadows.get(key);
  }

  function showShadows() {
    const ordered = [...shadows.values()].sort((a, b) => shadowOrder(a.name, b.name));
    shadowsBox.replaceChildren(...ordered.map((s) => s.section.el));
    if (!ordered.length) shadowsBox.append(empty("No shadows yet — set a desired state below, or publish to $aws/things/NAME/shadow/update."));
    form.setShadows(ordered.map((s) => s.name));
  }

  function render(data) {
    content.hidden = false;
    setConnected(data.connected, data.connectedSinceMs);
    setText(header.type, data.thingType || "—");
    setText(header.version, data.version);
    setText(header.attributes, attributesText(data.attributes) || "—");
    setText(header.groups, (data.groups || []).join(", ") || "—");
    setAgo(header.last, data.lastMessageMs);

    shadows.clear();
    for (const shadow of data.shadows) {
      const entry = { name: shadow.shadowName, section: shadowSection(shadow.shadowName), desired: shadow.state?.desired ?? null };
      entry.section.update(shadow, Number.isFinite(shadow.timestampS) ? shadow.timestampS * 1000 : null);
      entry.section.setHistory(shadow.history);
      shadows.set(shadowKey(shadow.shadowName), entry);
    }
    keepOpen(shadowsBox, showShadows);

    messages.replaceChildren(...data.recentMessages.slice(0, MAX_MESSAGES).map(messageItem));
    messagesEmpty.hidden = messages.childElementCount > 0;
    certificates.replaceChildren(certificatesTable(data.certificates));
    keepOpen(policies, () => policies.replaceChildren(policiesList(data.policies)));
    fillPermissions(permissions.tbody, data.permissions);
    if (!data.permissions.length) permissions.tbody.append(h("tr", {}, h("td", { colspan: 4, class: "empty", text: "No permissions: the thing has no attached policy." })));
  }

  function onShadow(event) {
    if (event.thing !== name) return;
    const entry = ensureShadow(event.shadowName);
    if (!event.deleted && event.version < entry.section.version()) return;
    entry.desired = event.state?.desired ?? null;
    entry.section.update(event, event.timestampMs);
    entry.section.pushHistory({ version: event.version, timestampMs: event.timestampMs, state: { desired: event.state?.desired ?? null, reported: event.state?.reported ?? null } });
  }

  function onMessage(message) {
    prependCapped(messages, messageItem(message), MAX_MESSAGES);
    messagesEmpty.hidden = true;
    setAgo(header.last, message.timestampMs);
  }

  function onPresence(event) {
    if (event.clientId === name) setConnected(event.eventType === "connected", event.timestamp);
  }

  function onTick(tick) {
    const ms = tick.lastMessage?.[name];
    if (ms !== undefined) setAgo(header.last, ms);
  }

  return {
    query: { view: "thing", thing: name },
    fetch: () => api(thingPath(name)),
    render,
    on: { tick: onTick, presence: onPresence, shadow: onShadow, message: onMessage },
  };
}
