// #/jobs: every job with its executions by state; #/jobs/<jobId>: one campaign — executions by state
// over time, the rollout's executions per minute against its limit, aborts and the latest updates.
import { api, badge, card, empty, h, svg, table } from "./util.js";

export const title = "Jobs";

const STATES = ["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "REJECTED", "REMOVED", "CANCELED"];
const SHOWN = ["QUEUED", "IN_PROGRESS", "SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED"];
const COUNTERS = {
  numberOfQueuedThings: "QUEUED",
  numberOfInProgressThings: "IN_PROGRESS",
  numberOfSucceededThings: "SUCCEEDED",
  numberOfFailedThings: "FAILED",
  numberOfTimedOutThings: "TIMED_OUT",
  numberOfCanceledThings: "CANCELED",
};
const RELOAD_MS = 2000;
const DONE_RELOAD_MS = 10_000;
const W = 300;
const H = 100;

function tone(status) {
  if (status === "SUCCEEDED" || status === "COMPLETED") return "ok";
  if (["FAILED", "TIMED_OUT", "REJECTED", "CANCELED"].includes(status)) return "error";
  if (status === "IN_PROGRESS") return "info";
  return "off";
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

function jobLink(jobId) {
  return h("a", { href: `#/jobs/${encodeURIComponent(jobId)}`, text: jobId });
}

// ---- list

function listView(data) {
  if (!data.jobs.length) return empty("No jobs yet — create one with boto3 `iot.create_job` or the AWS CLI.");
  const t = table(["Job", "Status", "Targets", ...SHOWN.map((s) => s.replace("_", " ").toLowerCase()), "Created"], { class: "jobs-table" });
  for (const job of data.jobs) {
    const byState = {};
    for (const [counter, state] of Object.entries(COUNTERS)) byState[state] = job.processDetails?.[counter] ?? 0;
    t.tbody.append(
      h(
        "tr",
        { "data-job": job.jobId },
        h("td", {}, jobLink(job.jobId)),
        h("td", {}, badge(job.status, tone(job.status))),
        h("td", { text: job.targetSelection || "" }),
        SHOWN.map((s) => h("td", { class: "num", "data-state": s, text: byState[s] })),
        h("td", { text: when(job.createdAt) }),
      ),
    );
  }
  return card("Jobs", t.wrap);
}

// ---- one job

function countsPart(counts, total) {
  return h(
    "ul",
    { class: "job-counts", "aria-label": "Executions by state" },
    STATES.filter((s) => counts[s] || SHOWN.includes(s)).map((s) =>
      h("li", { "data-state": s }, badge(s.replace("_", " ").toLowerCase(), tone(s)), " ", h("strong", { class: "num", text: counts[s] })),
    ),
    h("li", { class: "muted", text: `of ${total} execution(s)` }),
  );
}

function statesChart(points) {
  const chart = svg("svg", { class: "job-chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  if (points.length < 2) return chart;
  const t0 = points[0].t;
  const span = Math.max(1e-9, points[points.length - 1].t - t0);
  const max = Math.max(1, ...points.map((p) => SHOWN.reduce((n, s) => Math.max(n, p[s]), 0)));
  for (const s of SHOWN) {
    if (!points.some((p) => p[s])) continue;
    const line = points.map((p) => `${(((p.t - t0) / span) * W).toFixed(1)},${(H - (p[s] / max) * H).toFixed(1)}`).join(" ");
    chart.append(svg("polyline", { class: `state-line state-${s}`, "data-state": s, fill: "none", points: line, "vector-effect": "non-scaling-stroke" }));
  }
  const last = points[points.length - 1];
  chart.setAttribute(
    "aria-label",
    `Executions by state over ${Math.round(span)} s; now ${SHOWN.map((s) => `${last[s]} ${s.toLowerCase()}`).join(", ")}`,
  );
  return h(
    "figure",
    { class: "rate-chart" },
    h("div", { class: "plot" }, chart, h("span", { class: "axis axis-max", text: String(max) })),
    h("figcaption", { class: "legend" }, SHOWN.filter((s) => points.some((p) => p[s])).map((s) => h("span", { class: `key state-key state-${s}`, text: s.replace("_", " ").toLowerCase() }))),
  );
}

function rolloutPart(rollout) {
  const bars = rollout.perMinute;
  const limit = rollout.maximumPerMinute;
  const max = Math.max(1, limit || 0, ...bars);
  const chart = svg("svg", { class: "rollout-chart", viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  const width = W / Math.max(1, bars.length);
  bars.forEach((n, i) => {
    const height = (n / max) * H;
    chart.append(svg("rect", { class: "rollout-bar", x: (i * width + width * 0.1).toFixed(1), y: (H - height).toFixed(1), width: (width * 0.8).toFixed(1), height: height.toFixed(1) }));
  });
  if (limit) {
    const y = (H - (limit / max) * H).toFixed(1);
    chart.append(svg("line", { class: "rollout-limit", x1: 0, x2: W, y1: y, y2: y, "vector-effect": "non-scaling-stroke" }));
  }
  chart.setAttribute("aria-label", `Executions started per minute: ${bars.join(", ")}${limit ? `; limit ${limit} per minute` : ""}`);
  const facts = h(
    "dl",
    { class: "facts rollout-facts" },
    h("dt", { text: "Configured" }),
    h("dd", { "data-part": "rollout-limit", text: limit ? `${limit} per minute` : rollout.exponentialRate ? `exponential from ${rollout.exponentialRate.baseRatePerMinute}/min ×${rollout.exponentialRate.incrementFactor}` : "no limit" }),
    h("dt", { text: "Busiest minute" }),
    h("dd", { "data-part": "rollout-peak", text: `${rollout.peakPerMinute} execution(s)` }),
    h("dt", { text: "Rolled out" }),
    h("dd", { "data-part": "rollout-total", text: `${rollout.total} over ${bars.length} minute(s)` }),
  );
  return card("Rollout", h("div", { class: "plot" }, chart), facts);
}

function abortsPart(job, aborts) {
  const criteria = aborts.criteria.length
    ? h("ul", {}, aborts.criteria.map((c) => h("li", { text: `${c.action} when ${c.failureType} ≥ ${c.thresholdPercentage}% after ${c.minNumberOfExecutedThings} thing(s)` })))
    : h("span", { class: "muted", text: "none configured" });
  const banner = aborts.aborted
    ? h("p", { class: "load-state load-error", role: "alert", "data-part": "aborted", text: `Aborted: ${aborts.comment || aborts.reasonCode || "abort criteria met"}` })
    : aborts.canceled
      ? h("p", { class: "load-state", "data-part": "canceled", text: `Canceled${aborts.comment ? `: ${aborts.comment}` : ""}${aborts.forceCanceled ? " (forced)" : ""}` })
      : null;
  return card(
    "Aborts",
    banner,
    h("dl", { class: "facts" }, h("dt", { text: "Criteria" }), h("dd", {}, criteria), h("dt", { text: "Canceled executions" }), h("dd", { "data-part": "canceled-count", text: aborts.canceledExecutions })),
  );
}

function recentPart(recent) {
  if (!recent.length) return card("Latest updates", empty("No executions yet."));
  const t = table(["Thing", "Status", "Queued", "Started", "Updated"]);
  for (const e of recent) {
    t.tbody.append(
      h("tr", {}, h("td", {}, h("a", { href: `#/thing/${encodeURIComponent(e.thingName)}`, text: e.thingName })), h("td", {}, badge(e.status, tone(e.status))), h("td", { text: when(e.queuedAt) }), h("td", { text: when(e.startedAt) }), h("td", { text: when(e.lastUpdatedAt) })),
    );
  }
  return card("Latest updates", t.wrap);
}

function jobView(data) {
  const job = data.job;
  return [
    h("h2", { class: "job-title" }, h("a", { href: "#/jobs", text: "Jobs" }), " / ", h("span", { text: job.jobId }), " ", badge(job.status, tone(job.status))),
    card("Executions by state", countsPart(data.counts, data.executions), statesChart(data.timeline)),
    h("div", { class: "grid-2" }, rolloutPart(data.rollout), abortsPart(job, data.aborts)),
    recentPart(data.recent),
  ];
}

export function create(main, arg, ctx) {
  const body = h("div", { class: "jobs-view" });
  main.append(body);
  let lastLoad = 0;
  let took = 0;
  let every = RELOAD_MS;
  const path = arg ? `/edgesim/dash/jobs/${encodeURIComponent(arg)}` : "/edgesim/dash/jobs";
  return {
    query: { view: "jobs" },
    fetch: async () => {
      lastLoad = Date.now();
      const data = await api(path);
      took = Date.now() - lastLoad;
      return data;
    },
    render: (data) => {
      // A finished job changes no more (but may be deleted): look less often. A big campaign costs the gateway
      // more per look: keep that to about a tenth of its time.
      every = Math.max(arg && data.job.completedAt ? DONE_RELOAD_MS : RELOAD_MS, 10 * took);
      body.replaceChildren(...[arg ? jobView(data) : listView(data)].flat());
    },
    on: {
      tick: () => {
        if (Date.now() - lastLoad >= every) ctx.reload();
      },
    },
  };
}
