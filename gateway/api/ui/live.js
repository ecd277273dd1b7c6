// The one EventSource of the current view, and the header's live indicator.

const EVENTS = ["tick", "presence", "shadow", "message", "skipped"];
const RETRY_MS = 3000;

function setIndicator(open) {
  const el = document.getElementById("live");
  el.dataset.state = open ? "open" : "closed";
  el.textContent = open ? "Live" : "Disconnected";
}

/**
 * Open /edgesim/dash/events?<query> and dispatch its events to handlers[name](data).
 * onOpen(reconnected) runs on every `open`; reconnected is true after an error.
 * Returns a function that closes the stream for good.
 */
export function openStream(query, handlers, onOpen) {
  let source = null;
  let failed = false;
  let retryTimer = null;
  let closed = false;

  function dispatch(name, event) {
    if (!handlers[name]) return;
    let data;
    try {
      data = JSON.parse(event.data);
    } catch {
      return;
    }
    handlers[name](data);
  }

  function onError(event) {
    // The server's own `event: error` arrives as a MessageEvent with data;
    // a connection failure is a plain Event.
    if (event.data !== undefined) {
      dispatch("error", event);
      return;
    }
    failed = true;
    setIndicator(false);
    // EventSource retries network errors itself, but gives up on an HTTP error
    // status; retry those ourselves.
    if (source.readyState === EventSource.CLOSED && !closed) retryTimer = setTimeout(connect, RETRY_MS);
  }

  function connect() {
    source = new EventSource(`/edgesim/dash/events?${new URLSearchParams(query)}`);
    source.addEventListener("open", () => {
      setIndicator(true);
      onOpen(failed);
      failed = false;
    });
    source.addEventListener("error", onError);
    for (const name of EVENTS) source.addEventListener(name, (event) => dispatch(name, event));
  }

  setIndicator(false);
  connect();
  return () => {
    closed = true;
    clearTimeout(retryTimer);
    source.close();
    setIndicator(false);
  };
}
