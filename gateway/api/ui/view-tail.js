// #/tail: live messages matching an MQTT topic filter.
import { card, empty, h, messageItem, prependCapped, setText } from "./util.js";

export const title = "Live messages";

const MAX_ITEMS = 500;

export function create(main, _arg, ctx) {
  const filter = h("input", { id: "tail-filter", type: "text", placeholder: "e.g. dt/#", autocomplete: "off", spellcheck: false });
  const start = h("button", { id: "tail-start", type: "submit", text: "Start" });
  const pause = h("button", { id: "tail-pause", type: "button", "aria-pressed": "false", text: "Pause", disabled: true });
  const clear = h("button", { id: "tail-clear", type: "button", text: "Clear" });
  const error = h("span", { id: "tail-error", class: "error-text", role: "alert" });
  const status = h("span", { id: "tail-status", role: "status", "aria-live": "polite" });
  const counter = h("span", { class: "muted" });
  const list = h("ul", { id: "tail-list", class: "messages" });
  const emptyNote = empty("");

  let listening = null; // the filter being tailed, null before Start
  let paused = false;
  let held = []; // messages received while paused, newest last
  let received = 0;
  let skipped = 0;

  main.append(
    card(
      "Live messages",
      h(
        "form",
        { class: "toolbar", onsubmit: onStart },
        h("label", { for: "tail-filter", text: "Topic filter" }),
        filter,
        start,
        pause,
        clear,
        error,
      ),
      h("p", { class: "status" }, status, " ", counter),
      list,
      emptyNote,
    ),
  );

  // #tail-status is a live region, so it only changes on start/pause/skips;
  // the per-message counter sits next to it, outside the live region.
  function showStatus() {
    let text = "Not listening.";
    if (listening !== null) text = `${paused ? "Paused" : "Listening"} on ${listening}.`;
    if (skipped) text += ` ${skipped} messages skipped to keep up.`;
    setText(status, text);
    showCounter();
  }

  function showCounter() {
    setText(counter, paused ? `${held.length} new message(s) held while paused` : `${received} message(s) received`);
    emptyNote.hidden = list.childElementCount > 0;
    setText(emptyNote, listening === null ? "Enter a topic filter (e.g. dt/# or # for everything) and press Start." : `Waiting for messages on ${listening}…`);
  }

  function onStart(event) {
    event.preventDefault();
    listening = filter.value.trim() || "#";
    filter.value = listening;
    setText(error, "");
    list.replaceChildren();
    received = 0;
    skipped = 0;
    held = [];
    setPaused(false);
    pause.disabled = false;
    ctx.restream({ view: "tail", filter: listening });
    showStatus();
  }

  function setPaused(value) {
    paused = value;
    pause.setAttribute("aria-pressed", String(paused));
    setText(pause, paused ? "Resume" : "Pause");
    if (!paused) {
      for (const message of held.slice(-MAX_ITEMS)) prependCapped(list, messageItem(message), MAX_ITEMS);
      held = [];
    }
    showStatus();
  }

  pause.addEventListener("click", () => setPaused(!paused));
  clear.addEventListener("click", () => {
    list.replaceChildren();
    received = 0;
    skipped = 0;
    held = [];
    showStatus();
  });

  function onMessage(message) {
    if (listening === null) return;
    received += 1;
    if (paused) {
      held.push(message);
      if (held.length > MAX_ITEMS) held.shift();
    } else {
      prependCapped(list, messageItem(message), MAX_ITEMS);
    }
    showCounter();
  }

  function onSkipped({ count }) {
    skipped += count;
    showStatus();
  }

  // e.g. an invalid filter: the server subscribed to nothing.
  function onError({ message }) {
    setText(error, message);
    listening = null;
    pause.disabled = true;
    showStatus();
  }

  showStatus();
  return {
    // Until Start, the stream carries only ticks and presence (any message is ignored).
    query: { view: "tail" },
    on: { message: onMessage, skipped: onSkipped, error: onError },
  };
}
