// #/fleet: counts, message-rate chart and the things table.
//
// Fleets of 10,000+ things are normal, so the table is windowed: every thing lives in a
// plain object (`records`), and only the rows that fall inside the table's scroll box
// (plus a few above and below) exist in the DOM. Spacer rows in <thead>/<tfoot> (not in
// <tbody>, so `tbody tr` is always a real thing) keep the scroll height right. Ticks and
// presence events update the objects and touch only the rows on screen; the counts
// always cover the whole fleet.
import { rateChart } from "./chart.js";
import { api, attributesText, badge, card, empty, h, setAgo, setText, table } from "./util.js";

export const title = "Fleet";

const COLUMNS = ["Name", "State", "Type", "Attributes", "Groups", "Last message"];
const OVERSCAN = 12; // rows rendered beyond each edge of the scroll box
const ROW_ESTIMATE = 33; // px, until the first row has been measured
const REFILTER_MS = 120; // presence bursts re-filter (state filter only) at most this often

const collator = new Intl.Collator();

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

/** The JS side of one thing: everything a row shows, and what the filter searches. */
function makeRecord(thing) {
  const attrs = attributesText(thing.attributes);
  const groups = (thing.groups || []).join(", ");
  const type = thing.thingType || "";
  return {
    name: thing.name,
    type,
    attrs,
    groups,
    connected: Boolean(thing.connected),
    lastMessageMs: thing.lastMessageMs ?? null,
    haystack: `${thing.name} ${type} ${attrs} ${groups}`.toLowerCase(),
  };
}

/** An empty table row; bindRow() fills it for a record (rows are recycled while scrolling). */
function makeRow() {
  const row = {
    name: null,
    attrs: null,
    groups: null,
    lastMs: undefined,
    link: h("a", {}),
    badge: h("span", {}),
    type: h("td", {}),
    attrsCell: h("td", { class: "attrs" }),
    groupsCell: h("td", {}),
    last: h("time", {}),
  };
  row.nameCell = h("td", {}, row.link);
  row.tr = h("tr", {}, row.nameCell, h("td", {}, row.badge), row.type, row.attrsCell, row.groupsCell, h("td", {}, row.last));
  return row;
}

function setRowState(row, connected) {
  const state = connected ? "connected" : "disconnected";
  if (row.tr.dataset.state === state) return;
  row.tr.dataset.state = state;
  row.badge.className = `badge badge-${connected ? "ok" : "off"}`;
  row.badge.textContent = state;
}

function setRowLast(row, ms) {
  if (row.lastMs === ms) return;
  row.lastMs = ms;
  setAgo(row.last, ms);
}

function bindRow(row, rec, index) {
  if (row.name !== rec.name) {
    row.name = rec.name;
    row.tr.dataset.thing = rec.name;
    row.link.setAttribute("href", thingHref(rec.name));
    row.link.textContent = rec.name;
    row.nameCell.title = rec.name;
    row.lastMs = undefined; // another thing's time: always rewrite
  }
  setRowState(row, rec.connected);
  setText(row.type, rec.type || "—");
  if (row.attrs !== rec.attrs) {
    row.attrs = rec.attrs;
    row.attrsCell.title = rec.attrs;
    row.attrsCell.textContent = rec.attrs || "—";
  }
  if (row.groups !== rec.groups) {
    row.groups = rec.groups;
    row.groupsCell.title = rec.groups;
    row.groupsCell.textContent = rec.groups || "—";
  }
  setRowLast(row, rec.lastMessageMs);
  row.tr.setAttribute("aria-rowindex", String(index + 2)); // row 1 is the header
}

function spacer(cls) {
  const tr = h("tr", { class: `fleet-spacer ${cls}`, "aria-hidden": "true", hidden: true }, h("td", { colspan: COLUMNS.length }));
  return tr;
}

function setSpacer(tr, px) {
  tr.hidden = px <= 0;
  const height = `${px}px`;
  if (tr.style.height !== height) tr.style.height = height;
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
  const things = table(COLUMNS, { id: "fleet-table" });
  const { tbody } = things;
  const scroller = things.wrap;
  scroller.classList.add("fleet-scroll");
  scroller.tabIndex = 0; // keyboard users can scroll the table
  scroller.setAttribute("role", "region");
  scroller.setAttribute("aria-label", "Things");
  const headRow = things.table.tHead.rows[0];
  headRow.setAttribute("aria-rowindex", "1");
  const topSpacer = spacer("fleet-spacer-top");
  const bottomSpacer = spacer("fleet-spacer-bottom");
  things.table.tHead.append(topSpacer);
  things.table.createTFoot().append(bottomSpacer);
  const emptyNote = empty("");
  emptyNote.hidden = true;

  /** name -> record, for the whole fleet. */
  let records = new Map();
  /** Every record, by name. */
  let sorted = [];
  /** The records that pass the filter, in table order. */
  let matched = [];
  /** name -> row currently in the table body. */
  const rendered = new Map();
  const spare = [];
  let first = 0; // matched[first .. last) are rendered
  let last = 0;
  let rowHeight = 0; // measured from a real row; 0 = not yet
  let headHeight = 0;
  let viewHeight = 0;
  let loaded = false;
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

  // ---- the window of rendered rows -----------------------------------------------

  /** The slice of `matched` that covers the scroll box, plus overscan. */
  function range() {
    const n = matched.length;
    const rh = rowHeight || ROW_ESTIMATE;
    const view = viewHeight || scroller.clientHeight || window.innerHeight;
    const page = Math.ceil(view / rh) + 2 * OVERSCAN;
    const top = Math.max(0, scroller.scrollTop - (headHeight || rh));
    // Never start past the last full page: a short result (or a scroll position the
    // shrunken table no longer has) still renders everything it can show.
    const start = Math.max(0, Math.min(Math.floor(top / rh) - OVERSCAN, n - page));
    return [start, Math.min(n, start + page)];
  }

  function renderWindow(force = false) {
    const [start, end] = range();
    if (!force && start === first && end === last) return;
    first = start;
    last = end;
    const want = matched.slice(start, end);
    const keep = new Set();
    for (const rec of want) keep.add(rec.name);
    for (const [name, row] of rendered) {
      if (keep.has(name)) continue;
      row.tr.remove();
      rendered.delete(name);
      spare.push(row);
    }
    // Walk the body once, inserting only rows that are not already in place.
    let cursor = tbody.firstElementChild;
    want.forEach((rec, i) => {
      let row = rendered.get(rec.name);
      if (!row) {
        row = spare.pop() || makeRow();
        rendered.set(rec.name, row);
      }
      bindRow(row, rec, start + i);
      if (row.tr === cursor) cursor = cursor.nextElementSibling;
      else tbody.insertBefore(row.tr, cursor);
    });
    const rh = rowHeight || ROW_ESTIMATE;
    setSpacer(topSpacer, start * rh);
    setSpacer(bottomSpacer, (matched.length - end) * rh);
    things.table.setAttribute("aria-rowcount", String(matched.length + 1));
    if (!rowHeight && want.length) measure();
  }

  /** Read the real row and header heights once (and after a resize), then re-window. */
  function measure() {
    const rows = tbody.rows;
    const top = rows[0].getBoundingClientRect();
    // The pitch from row to row (not one row's box), so the spacers line up exactly.
    const height = rows.length > 1 ? (rows[rows.length - 1].getBoundingClientRect().top - top.top) / (rows.length - 1) : top.height;
    if (!height) return; // not laid out (detached or hidden): keep the estimate
    rowHeight = height;
    headHeight = headRow.getBoundingClientRect().height;
    viewHeight = scroller.clientHeight;
    renderWindow(true);
  }

  scroller.addEventListener("scroll", () => renderWindow(), { passive: true });
  const resize = new ResizeObserver(() => {
    if (!rendered.size) return;
    rowHeight = 0; // fonts or widths may have changed the row height
    measure();
  });
  resize.observe(scroller);

  // ---- filtering -------------------------------------------------------------------

  function applyFilter({ toTop = false } = {}) {
    const query = filter.value.trim().toLowerCase();
    const state = stateSelect.value;
    const want = state === "connected";
    matched =
      !query && state === "all"
        ? sorted
        : sorted.filter((rec) => (state === "all" || rec.connected === want) && (!query || rec.haystack.includes(query)));
    if (toTop && scroller.scrollTop) scroller.scrollTop = 0;
    renderWindow(true);
    setText(shown, sorted.length ? `${matched.length} of ${sorted.length} shown` : "");
    emptyNote.hidden = !loaded || matched.length > 0;
    setText(
      emptyNote,
      sorted.length
        ? "No things match the filter."
        : "No things yet — create one with `edgesim things create NAME` or boto3 (iot.create_thing).",
    );
  }

  // Typing re-filters once per frame (a pass over 10,000 things takes a few ms).
  let filterFrame = 0;
  function filterSoon() {
    filterFrame ||= requestAnimationFrame(() => {
      filterFrame = 0;
      applyFilter({ toTop: true });
    });
  }
  filter.addEventListener("input", filterSoon);
  stateSelect.addEventListener("change", () => applyFilter({ toTop: true }));

  // Presence bursts change what a state filter matches: re-filter once they settle.
  let refilterTimer = null;
  function refilterSoon() {
    refilterTimer ??= setTimeout(() => {
      refilterTimer = null;
      applyFilter();
    }, REFILTER_MS);
  }

  // ---- data --------------------------------------------------------------------------

  function render(data) {
    records = new Map();
    for (const thing of data.things) records.set(thing.name, makeRecord(thing));
    sorted = [...records.values()].sort((a, b) => collator.compare(a.name, b.name));
    loaded = true;
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
    const rec = records.get(event.clientId);
    if (!rec) {
      if (connected) otherClients.add(event.clientId);
      else otherClients.delete(event.clientId);
      showOthers();
      // Maybe a thing registered after the page loaded: re-fetch once the burst settles.
      if (connected) reloadSoon();
      return;
    }
    if (rec.connected === connected) return;
    rec.connected = connected;
    countValues.connected += connected ? 1 : -1;
    countValues.disconnected += connected ? -1 : 1;
    showCounts();
    const row = rendered.get(rec.name);
    if (row) setRowState(row, connected);
    if (stateSelect.value !== "all") refilterSoon();
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
    const changed = tick.lastMessage;
    if (!changed) return;
    // Up to one entry per thing: update the records, touch only rendered rows.
    for (const id in changed) {
      const rec = records.get(id);
      if (!rec) continue;
      rec.lastMessageMs = changed[id];
      const row = rendered.get(id);
      if (row) setRowLast(row, rec.lastMessageMs);
    }
  }

  return {
    query: { view: "fleet" },
    fetch: () => api("/edgesim/dash/fleet"),
    render,
    on: { tick: onTick, presence: onPresence },
    destroy() {
      cancelAnimationFrame(filterFrame);
      clearTimeout(refilterTimer);
      clearTimeout(reloadTimer);
      resize.disconnect();
    },
  };
}
