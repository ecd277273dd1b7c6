// #/edge: one card per edge core, live from tick.edge and presence.
import { api, badge, bytes, empty, h, keyedList, table, whenEl } from "./util.js";

export const title = "Edge cores";

function onlineBadge(online) {
  return badge(online ? "online" : "offline", online ? "ok" : "off");
}

function healthBadge(status) {
  if (!status) return h("span", { class: "muted", text: "unknown" });
  return badge(status.toLowerCase(), status === "HEALTHY" ? "ok" : "error");
}

function spoolPart(spool) {
  if (!spool) return h("div", { "data-part": "spool" }, h("span", { class: "muted", text: "no spool" }));
  const ratio = spool.maxBytes > 0 ? Math.min(1, spool.bytes / spool.maxBytes) : 0;
  return h(
    "div",
    { "data-part": "spool" },
    h("div", {}, `${spool.messages} message(s), ${bytes(spool.bytes)} of ${bytes(spool.maxBytes)}`),
    h(
      "div",
      { class: "bar", role: "meter", "aria-label": "Spool usage", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": Math.round(ratio * 100) },
      h("div", { class: `bar-fill${ratio > 0.8 ? " bar-high" : ""}`, style: `width: ${(ratio * 100).toFixed(1)}%` }),
    ),
  );
}

function syncPart(sync) {
  if (!sync) return h("span", { class: "muted", text: "not configured" });
  return h("span", {}, `${sync.shadows} shadow(s), ${sync.pending} pending · last sync `, whenEl(sync.lastSyncMs));
}

function componentsTable(components) {
  if (!components.length) return empty("No components deployed.");
  const t = table(["Component", "State", "Restarts"]);
  for (const c of components) {
    const tone = c.state === "RUNNING" || c.state === "FINISHED" ? "ok" : c.state === "BROKEN" || c.state === "ERRORED" ? "error" : "off";
    t.tbody.append(h("tr", {}, h("td", { text: c.name }), h("td", {}, badge(c.state, tone)), h("td", { class: "num", text: c.restarts })));
  }
  return t.wrap;
}

/** A core's card; its body is rebuilt only when the core's data changed. */
function coreCard(core) {
  const state = h("span", {});
  const body = h("div", {});
  const el = h("section", { class: "card core", "data-core": core.name }, h("h2", {}, h("span", { text: core.name }), " ", state), body);
  let last = null;

  return {
    el,
    setOnline(online) {
      el.dataset.state = online ? "online" : "offline";
      state.replaceChildren(onlineBadge(online));
    },
    update(c) {
      this.setOnline(c.online);
      const key = JSON.stringify(c);
      if (key === last) return;
      last = key;
      body.replaceChildren(
        h(
          "dl",
          { class: "facts" },
          h("dt", { text: "Last report" }), h("dd", {}, whenEl(c.lastReportMs)),
          h("dt", { text: "Health" }), h("dd", {}, healthBadge(c.status)),
          h("dt", { text: "Spool" }), h("dd", {}, spoolPart(c.spool)),
          h("dt", { text: "Shadow sync" }), h("dd", {}, syncPart(c.shadowSync)),
        ),
        h("h3", { text: "Components" }),
        componentsTable(c.components),
      );
    },
  };
}

export function create(main) {
  const cores = h("div", { class: "cores" });
  const sync = keyedList(
    cores,
    empty("No edge cores yet — start one with `edgesim edge run NAME --config examples/edge/edge.yaml`."),
  );
  let entries = new Map();
  main.append(cores);

  function render(edge) {
    entries = sync(edge.cores, (c) => c.name, coreCard);
  }

  function onPresence(event) {
    entries.get(event.clientId)?.setOnline(event.eventType === "connected");
  }

  return {
    query: { view: "edge" },
    fetch: () => api("/edgesim/dash/edge"),
    render,
    on: { tick: (tick) => tick.edge && render(tick.edge), presence: onPresence },
  };
}
