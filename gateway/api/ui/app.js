// edgesim dashboard: theme, hash routing, and the life cycle of the current view
// (its JSON load and its one EventSource).
import { openStream } from "./live.js";
import { h, refreshAgo, syncClock } from "./util.js";
import * as edge from "./view-edge.js";
import * as fleet from "./view-fleet.js";
import * as jobs from "./view-jobs.js";
import * as rules from "./view-rules.js";
import * as sinks from "./view-sinks.js";
import * as tail from "./view-tail.js";
import * as thing from "./view-thing.js";

const ROUTES = { fleet, thing, tail, rules, sinks, edge, jobs };
const LOAD_FALLBACK_MS = 1500;

// ---- theme --------------------------------------------------------------------

const THEME_KEY = "edgesim.theme";
const darkQuery = window.matchMedia("(prefers-color-scheme: dark)");

function storedTheme() {
  try {
    return localStorage.getItem(THEME_KEY);
  } catch {
    return null;
  }
}

function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
  const button = document.getElementById("theme-toggle");
  const other = theme === "dark" ? "light" : "dark";
  button.textContent = other === "dark" ? "☾ Dark" : "☀ Light";
  button.setAttribute("aria-label", `Switch to ${other} theme`);
}

function setupTheme() {
  applyTheme(storedTheme() || (darkQuery.matches ? "dark" : "light"));
  darkQuery.addEventListener("change", () => {
    if (!storedTheme()) applyTheme(darkQuery.matches ? "dark" : "light");
  });
  document.getElementById("theme-toggle").addEventListener("click", () => {
    const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(THEME_KEY, next);
    } catch {
      // Storage disabled: the choice lasts until reload.
    }
    applyTheme(next);
  });
}

// ---- views --------------------------------------------------------------------

function parseHash() {
  const [, name, ...rest] = location.hash.split("/");
  if (!ROUTES[name] || (name === "thing" && !rest.length)) return { name: "fleet", arg: null };
  let arg = rest.join("/");
  try {
    arg = decodeURIComponent(arg);
  } catch {
    // Keep the raw text.
  }
  return { name, arg };
}

/**
 * Mount a view module into main and keep it fed: its JSON is fetched when the stream
 * opens (first time and after every reconnect, so nothing is missed), or after a short
 * fallback delay if the stream cannot open. Returns a function that tears it all down.
 */
function startView(module, arg, main) {
  let active = true;
  let seq = 0;
  let stopStream = null;
  // "Loading…" until the first render, then hidden; the reason when a load fails.
  const banner = h("p", { class: "load-state", role: "status", text: "Loading…" });
  main.append(banner);

  async function load() {
    if (!view.fetch) return;
    const mine = ++seq;
    try {
      const data = await view.fetch();
      if (!active || mine !== seq) return;
      banner.hidden = true;
      view.render(data);
    } catch (err) {
      if (!active || mine !== seq) return;
      banner.className = "load-state load-error";
      banner.textContent = `Could not load this page: ${err.message}`;
      banner.hidden = false;
    }
  }

  const ctx = {
    restream: (query) => listen(query),
    reload: load,
  };
  const view = module.create(main, arg, ctx);
  banner.hidden = !view.fetch;

  const handlers = {
    ...view.on,
    tick(data) {
      syncClock(data.t);
      refreshAgo(main);
      view.on.tick?.(data);
    },
  };

  function listen(query) {
    stopStream?.();
    stopStream = openStream(query, handlers, () => load());
  }

  listen(view.query);
  const fallback = setTimeout(() => seq === 0 && load(), LOAD_FALLBACK_MS);

  return () => {
    active = false;
    clearTimeout(fallback);
    stopStream();
    view.destroy?.();
  };
}

let stopCurrent = null;

function route() {
  const { name, arg } = parseHash();
  const main = document.getElementById("main");
  stopCurrent?.();
  main.replaceChildren();
  for (const link of document.querySelectorAll("a[data-nav]")) {
    const current = link.dataset.nav === (name === "thing" ? "fleet" : name);
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // Every view but a thing's (whose name is its heading) gets a heading for screen readers.
  const { title } = ROUTES[name];
  if (title) main.append(h("h1", { class: "sr-only", text: title }));
  document.title = `${title || arg} · edgesim`;
  stopCurrent = startView(ROUTES[name], arg, main);
}

// The skip link must not touch location.hash (that is the router's).
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  document.getElementById("main").focus();
});

setupTheme();
window.addEventListener("hashchange", route);
route();
