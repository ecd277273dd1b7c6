// Hand-drawn inline SVG charts: the fleet's message-rate chart and rule sparklines.
import { h, svg, setText } from "./util.js";

const WINDOW_S = 300;
const HEIGHT = 100;

function ceilNice(value) {
  if (value <= 1) return 1;
  const step = 10 ** Math.floor(Math.log10(value));
  for (const m of [1, 2, 5, 10]) if (value <= m * step) return m * step;
  return 10 * step;
}

function linePoints(points, key, tEnd, max) {
  return points
    .map((p) => `${(WINDOW_S - (tEnd - p.t) / 1000).toFixed(1)},${(HEIGHT - (p[key] / max) * HEIGHT).toFixed(1)}`)
    .join(" ");
}

/**
 * Messages/s in and out over the last 5 minutes.
 * Returns {el, seed(history), add(point)} where a point is {t, in, out}.
 */
export function rateChart() {
  let points = [];
  const lineIn = svg("polyline", { class: "line-in", fill: "none", "vector-effect": "non-scaling-stroke" });
  const lineOut = svg("polyline", { class: "line-out", fill: "none", "vector-effect": "non-scaling-stroke" });
  const grid = [25, 50, 75].map((y) =>
    svg("line", { class: "grid", x1: 0, x2: WINDOW_S, y1: y, y2: y, "vector-effect": "non-scaling-stroke" }),
  );
  const chart = svg("svg", {
    id: "rate-chart",
    viewBox: `0 0 ${WINDOW_S} ${HEIGHT}`,
    preserveAspectRatio: "none",
    role: "img",
  });
  chart.append(...grid, lineIn, lineOut);

  const maxLabel = h("span", { class: "axis axis-max" });
  const nowIn = h("strong", {});
  const nowOut = h("strong", {});
  const el = h(
    "figure",
    { class: "rate-chart" },
    h("div", { class: "plot" }, chart, maxLabel, h("span", { class: "axis axis-start", text: "−5 min" }), h("span", { class: "axis axis-end", text: "now" })),
    h(
      "figcaption",
      { class: "legend" },
      h("span", { class: "key key-in" }, "in ", nowIn, " msg/s"),
      h("span", { class: "key key-out" }, "out ", nowOut, " msg/s"),
    ),
  );

  function draw() {
    const last = points[points.length - 1];
    if (!last) {
      chart.setAttribute("aria-label", "Message rate: no data yet");
      return;
    }
    const max = ceilNice(Math.max(...points.map((p) => Math.max(p.in, p.out))));
    lineIn.setAttribute("points", linePoints(points, "in", last.t, max));
    lineOut.setAttribute("points", linePoints(points, "out", last.t, max));
    setText(maxLabel, `${max}/s`);
    setText(nowIn, formatRate(last.in));
    setText(nowOut, formatRate(last.out));
    chart.setAttribute("aria-label", `Messages per second over the last 5 minutes; now ${formatRate(last.in)} in, ${formatRate(last.out)} out`);
  }

  return {
    el,
    seed(history) {
      points = (history || []).map(({ t, in: i, out }) => ({ t, in: i, out }));
      draw();
    },
    add({ t, in: i, out }) {
      points.push({ t, in: i, out });
      const cutoff = t - WINDOW_S * 1000;
      while (points.length && points[0].t < cutoff) points.shift();
      draw();
    },
  };
}

function formatRate(value) {
  return value >= 10 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(1);
}

const SPARK_W = 120;
const SPARK_H = 24;

/** A sparkline of the last 120 values; update it with drawSpark(el, values). */
export function sparkline(values) {
  const el = svg("svg", { class: "spark", viewBox: `0 0 ${SPARK_W} ${SPARK_H}`, preserveAspectRatio: "none", "aria-hidden": "true" });
  el.append(svg("polyline", { fill: "none", "vector-effect": "non-scaling-stroke" }));
  drawSpark(el, values);
  return el;
}

export function drawSpark(el, values) {
  const max = Math.max(1, ...values);
  const step = SPARK_W / Math.max(1, SPARK_W - 1);
  const offset = SPARK_W - values.length;
  const points = values.map((v, i) => `${((offset + i) * step).toFixed(1)},${(SPARK_H - 1 - (v / max) * (SPARK_H - 2)).toFixed(1)}`);
  el.firstChild.setAttribute("points", points.join(" "));
}
