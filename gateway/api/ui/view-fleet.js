// #/fleet: counts, message-rate chart and the things table.
import { rateChart } from "./chart.js";
import { agoEl, api, attributesText, badge, card, empty, h, setAgo, setText, table } from "./util.js";

export const title = "Fleet";

function thingHref(name) {
  return `#/thing/${encodeURIComponent(name).replace(/%3A/gi, ":")}`;
}

export function stateBadge(connected) {
  return badge(connected ? "connected" : "disconnected", connected ? "ok" : "off");
}

function countBox(id, label) {
  const value = h("span", { id, class: "count-value", text: "0" });
  return { value, el: h("div", { class: "count" }, value, h("span", { class: "count-label", text: label })) };
}

function staticKey(thing) {
  return JSON.stringify([thing.thingType, thing.attributes, thing.groups]);
}

function makeRow(thing) {
  const attrs = attributesText(thing.attributes);
  const groups = (thing.groups || []).join(", ");
  const row = {
    name: thing.name,
    key: staticKey(thing),
    haystack: [thing.name, thing.thingType || "", attrs, groups].join(" ").toLowerCase(),
    state: h("td", {}),
    last: agoEl(thing.lastMessageMs),
  };
  row.tr = h(
    "tr",
    { "data-thing": thing.name },
    h("td", { title: thing.name }, h("a", { href: thingHref(thing.name), text: thing.name })),
    row.state,
    h("td", { text: thing.thingType || "—" }),
    h("td", { class: "attrs", title: attrs, text: attrs || "—" }),
    h("td", { title: groups, text: groups || "—" }),
    h("td", {}, row.last),
  );
  setConnected(row, thing.connected);
  return row;
}

function setConnected(row, connected) {
  const state = connected ? "connected" : "disconnected";
  if (row.tr.dataset.state === state) return false;
  row.tr.dataset.state = state;
  row.state.replaceChildren(stateBadge(connected));
  return true;
}

export function create(main, _arg, ctx) {
  const counts = {
    connected: countBox("count-connected", "connected"),
    disconnected: countBox("count-disconnected", "disconnected"),
    total: countBox("count-total", "things"),
  };
  const connections = h("span", { text: "—" });
  const chart = rateChart();
  const others = h("p", { class: "muted" });
  const otherClients = new Set();

  const filter = h("input", { id: "fleet-filter", type: "search", placeholder: "name, type, attribute, group", autocomplete: "off" });
  const stateSelect = h(
    "select",
    { id: "fleet-state" },
    ["all", "connected", "disconnected"].map((v) => h("option", { value: v, text: v })),
  );
  const shown = h("span", { class: "muted", "aria-live": "polite" });
  const things = table(["Name", "State", "Type", "Attributes", "Groups", "Last message"], { id: "fleet-table" });
  const emptyNote = empty("");
  emptyNote.hidden = true;
  const rows = new Map();
  let countValues = { connected: 0, disconnected: 0, total: 0 };

  main.append(
    h(
      "div",
      { class: "fleet-top" },
      card("Things", h("div", { class: "counts" }, counts.connected.el, counts.disconnected.el, counts.total.el), h("p", { class: "muted" }, "MQTT connections: ", connections), others),
      card("Messages per second", chart.el),
    ),
    card(
      "Fleet",
      h(
        "div",
        { class: "toolbar" },
        h("label", { for: "fleet-filter", text: "Filter" }),
        filter,
        h("label", { for: "fleet-state", text: "State" }),
        stateSelect,
        shown,
      ),
      things.wrap,
      emptyNote,
    ),
  );

  function showCounts() {
    for (const [key, box] of Object.entries(counts)) setText(box.value, countValues[key]);
  }

  function showOthers() {
    setText(others, otherClients.size ? `Other clients: ${[...otherClients].sort().join(", ")}` : "");
  }

  function matches(row, query, state) {
    return (state === "all" || row.tr.dataset.state === state) && (!query || row.haystack.includes(query));
  }

  function applyFilter() {
    const query = filter.value.trim().toLowerCase();
    const state = stateSelect.value;
    let visible = 0;
    for (const row of rows.values()) {
      const show = matches(row, query, state);
      row.tr.hidden = !show;
      if (show) visible += 1;
    }
    setText(shown, rows.size ? `${visible} of ${rows.size} shown` : "");
    emptyNote.hidden = visible > 0;
    setText(
      emptyNote,
      rows.size
        ? "No things match the filter."
        : "No things yet — create one with `edgesim things create NAME` or boto3 (iot.create_thing).",
    );
  }

  // Coalesce filter runs: typing and presence bursts re-filter at most every 120 ms.
  let filterTimer = null;
  function scheduleFilter() {
    filterTimer ??= setTimeout(() => {
      filterTimer = null;
      applyFilter();
    }, 120);
  }
  filter.addEventListener("input", scheduleFilter);
  stateSelect.addEventListener("change", applyFilter);

  function render(data) {
    const sorted = [...data.things].sort((a, b) => a.name.localeCompare(b.name));
    const names = new Set(sorted.map((thing) => thing.name));
    for (const [name, row] of rows) {
      if (!names.has(name)) {
        row.tr.remove();
        rows.delete(name);
      }
    }
    // Walk the table once, moving or inserting only rows that are not already in place.
    let cursor = things.tbody.firstElementChild;
    for (const thing of sorted) {
      let row = rows.get(thing.name);
      if (row && row.key === staticKey(thing)) {
        setConnected(row, thing.connected);
        setAgo(row.last, thing.lastMessageMs);
      } else {
        const fresh = makeRow(thing);
        if (row) {
          if (row.tr === cursor) cursor = fresh.tr;
          row.tr.replaceWith(fresh.tr);
        }
        row = fresh;
        rows.set(thing.name, row);
      }
      if (row.tr === cursor) cursor = cursor.nextElementSibling;
      else things.tbody.insertBefore(row.tr, cursor);
    }
    countValues = { ...data.counts };
    showCounts();
    otherClients.clear();
    for (const id of data.otherClients || []) otherClients.add(id);
    showOthers();
    chart.seed(data.history);
    applyFilter();
  }

  function onPresence(event) {
    const connected = event.eventType === "connected";
    const row = rows.get(event.clientId);
    if (!row) {
      if (connected) otherClients.add(event.clientId);
      else otherClients.delete(event.clientId);
      showOthers();
      // Maybe a thing registered after the page loaded: re-fetch once the burst settles.
      if (connected) reloadSoon();
      return;
    }
    if (!setConnected(row, connected)) return;
    countValues.connected += connected ? 1 : -1;
    countValues.disconnected += connected ? -1 : 1;
    showCounts();
    scheduleFilter();
  }

  let reloadTimer = null;
  function reloadSoon() {
    reloadTimer ??= setTimeout(() => {
      reloadTimer = null;
      ctx.reload();
    }, 1000);
  }

  function onTick(tick) {
    chart.add(tick);
    setText(connections, tick.connections);
    for (const [id, ms] of Object.entries(tick.lastMessage || {})) {
      const row = rows.get(id);
      if (row) setAgo(row.last, ms);
    }
  }

  return {
    query: { view: "fleet" },
    fetch: () => api("/edgesim/dash/fleet"),
    render,
    on: { tick: onTick, presence: onPresence },
    destroy() {
      clearTimeout(filterTimer);
      clearTimeout(reloadTimer);
    },
  };
}
