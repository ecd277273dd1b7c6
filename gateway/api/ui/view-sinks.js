// #/sinks: Kinesis streams (with a record browser), SQS queues, Lambda functions and
// Firehose delivery streams, live from tick.sinks.
import {
  api,
  badge,
  bytes,
  card,
  clockEl,
  empty,
  h,
  keyedList,
  num,
  payloadPre,
  setText,
  shortId,
  table,
  whenEl,
} from "./util.js";

export const title = "Sinks";

const count = (name) => h("span", { class: "num", "data-count": name, text: "0" });
const stat = (label, value) => h("span", { class: "stat" }, `${label} `, value);

// ---- Kinesis ----------------------------------------------------------------

function shardRow(shard) {
  const records = h("td", { class: "num", "data-count": "records" });
  const open = h("td", {});
  return {
    el: h("tr", { "data-shard": shard.shardId }, h("td", {}, h("code", { text: shard.shardId })), open, records),
    update(s) {
      setText(records, s.records);
      const label = s.open ? "open" : "closed";
      if (open.textContent !== label) open.replaceChildren(badge(label, s.open ? "ok" : "off"));
    },
  };
}

function streamItem(stream) {
  const status = h("span", {});
  const records = count("total");
  const inPerSec = h("span", { class: "num" });
  const throttles = count("throttles");
  const shards = table(["Shard", "State", "Records"]);
  const syncShards = keyedList(shards.tbody, h("tr", {}, h("td", { colspan: 3, class: "empty", text: "No shards." })));
  return {
    el: h(
      "div",
      { class: "sink", "data-stream": stream.streamName },
      h("h3", {}, h("span", { text: stream.streamName }), " ", status),
      h("p", { class: "stats" }, stat("records", records), stat("in/s", inPerSec), stat("throttles", throttles)),
      shards.wrap,
    ),
    update(s) {
      if (status.textContent !== s.status) status.replaceChildren(badge(s.status, s.status === "ACTIVE" ? "ok" : "info"));
      setText(records, s.records);
      setText(inPerSec, num(s.inPerSec, 1));
      setText(throttles, s.throttles);
      syncShards(s.shards, (shard) => shard.shardId, shardRow);
    },
  };
}

function recordItem(record) {
  return h(
    "li",
    { class: "message" },
    h(
      "div",
      { class: "message-meta" },
      clockEl(record.arrivalMs),
      h("code", { title: record.sequenceNumber, text: `#${shortId(record.sequenceNumber, 16)}` }),
      h("span", { class: "muted", text: `key ${record.partitionKey}` }),
      record.encoding === "base64" ? badge("base64", "info") : null,
    ),
    payloadPre(record.data, record.encoding),
  );
}

/** Choose stream + shard, list records 50 at a time. */
function recordBrowser() {
  const streamSelect = h("select", { id: "records-stream" });
  const shardSelect = h("select", { id: "records-shard" });
  const list = h("ul", { id: "records-list", class: "messages" });
  const more = h("button", { type: "button", text: "More", hidden: true });
  const status = h("p", { class: "muted", role: "status", "aria-live": "polite", text: "Choose a stream and a shard, then Show records." });
  let streams = [];
  let next = null;

  function setOptions(select, values) {
    const chosen = select.value;
    if ([...select.options].map((o) => o.value).join("\n") !== values.join("\n")) {
      select.replaceChildren(...values.map((v) => h("option", { value: v, text: v })));
      if (values.includes(chosen)) select.value = chosen;
    }
  }

  function showShards() {
    const stream = streams.find((s) => s.streamName === streamSelect.value);
    setOptions(shardSelect, stream ? stream.shards.map((s) => s.shardId) : []);
  }
  streamSelect.addEventListener("change", showShards);

  async function fetchPage(after) {
    const params = new URLSearchParams({ shard: shardSelect.value, limit: "50" });
    if (after) params.set("after", after);
    setText(status, "Loading…");
    try {
      const page = await api(`/edgesim/dash/kinesis/${encodeURIComponent(streamSelect.value)}/records?${params}`);
      list.append(...page.records.map(recordItem));
      next = page.next;
      more.hidden = !next;
      setText(status, page.records.length ? `${list.childElementCount} record(s) shown.` : after ? "No more records yet." : "No records in this shard.");
    } catch (err) {
      setText(status, `Could not read records: ${err.message}`);
    }
  }

  function onLoad(event) {
    event.preventDefault();
    if (!streamSelect.value || !shardSelect.value) return;
    list.replaceChildren();
    next = null;
    fetchPage(null);
  }
  more.addEventListener("click", () => fetchPage(next));

  const el = h(
    "div",
    { class: "record-browser" },
    h("h3", { text: "Record browser" }),
    h(
      "form",
      { class: "toolbar", onsubmit: onLoad },
      h("label", { for: "records-stream", text: "Stream" }),
      streamSelect,
      h("label", { for: "records-shard", text: "Shard" }),
      shardSelect,
      h("button", { type: "submit", text: "Show records" }),
    ),
    status,
    list,
    more,
  );

  return {
    el,
    update(kinesis) {
      streams = kinesis;
      el.hidden = !kinesis.length;
      setOptions(streamSelect, kinesis.map((s) => s.streamName));
      showShards();
    },
  };
}

// ---- SQS ----------------------------------------------------------------------

function queueRow(queue) {
  const counts = { visible: count("visible"), inflight: count("inflight"), delayed: count("delayed"), dlq: count("dlq") };
  const dlqName = h("td", {});
  return {
    el: h(
      "tr",
      { "data-queue": queue.queueName },
      h("td", {}, h("span", { title: queue.url, text: queue.queueName }), queue.fifo ? [" ", badge("FIFO", "info")] : null),
      h("td", {}, counts.visible),
      h("td", {}, counts.inflight),
      h("td", {}, counts.delayed),
      dlqName,
      h("td", {}, counts.dlq),
    ),
    update(q) {
      setText(counts.visible, q.visible);
      setText(counts.inflight, q.inFlight);
      setText(counts.delayed, q.delayed);
      setText(dlqName, q.deadLetter ? q.deadLetter.queueName : "—");
      setText(counts.dlq, q.deadLetter ? q.deadLetter.visible : "—");
    },
  };
}

// ---- Lambda -----------------------------------------------------------------

function logItem(log) {
  return h(
    "li",
    { class: log.error ? "log log-error" : "log" },
    h("div", { class: "message-meta" }, clockEl(log.timeMs), h("code", { title: log.requestId, text: shortId(log.requestId, 8) }), log.error ? badge("error", "error") : null),
    h("pre", { class: "payload", text: log.error ? `${log.text}\n${log.error}`.trim() : log.text }),
  );
}

function functionItem(fn) {
  const invocations = count("invocations");
  const errors = count("errors");
  const duration = h("span", { class: "num" });
  const logs = h("ul", { class: "messages" });
  const logCount = h("span", {});
  let logKey = null;
  return {
    el: h(
      "div",
      { class: "sink", "data-function": fn.functionName },
      h("h3", {}, h("span", { text: fn.functionName }), " ", h("span", { class: "muted", text: fn.runtime })),
      h("p", { class: "stats" }, stat("invocations", invocations), stat("errors", errors), stat("avg duration", duration)),
      h("details", {}, h("summary", {}, "Recent logs (", logCount, ")"), logs),
    ),
    update(f) {
      setText(invocations, f.invocations);
      setText(errors, f.errors);
      setText(duration, Number.isFinite(f.avgDurationMs) ? `${num(f.avgDurationMs, 1)} ms` : "—");
      const key = `${f.logs.length}:${f.logs[0]?.requestId}:${f.logs[0]?.timeMs}`;
      if (key === logKey) return;
      logKey = key;
      setText(logCount, f.logs.length);
      logs.replaceChildren(...(f.logs.length ? f.logs.map(logItem) : [empty("No invocations yet.")]));
    },
  };
}

// ---- Firehose ---------------------------------------------------------------

function objectItem(bucket, object) {
  const href = `/edgesim/dash/s3/${encodeURIComponent(bucket)}?key=${encodeURIComponent(object.key)}`;
  return h(
    "li",
    {},
    h("a", { href, target: "_blank", rel: "noopener", text: object.key }),
    h("span", { class: "muted" }, ` · ${bytes(object.size)} · `, whenEl(object.lastModifiedMs)),
  );
}

function firehoseItem(stream) {
  const buffered = count("buffered");
  const objects = h("ul", { class: "objects" });
  let objectsKey = null;
  return {
    el: h(
      "div",
      { class: "sink", "data-firehose": stream.deliveryStreamName },
      h("h3", { text: stream.deliveryStreamName }),
      h("p", { class: "stats" }, stat("destination", h("code", { text: `s3://${stream.bucket}/${stream.prefix || ""}` })), stat("buffered", buffered)),
      h("h4", { text: "Recent objects" }),
      objects,
    ),
    update(s) {
      setText(buffered, s.buffered);
      const key = s.objects.map((o) => `${o.key}:${o.lastModifiedMs}`).join("|");
      if (key === objectsKey) return;
      objectsKey = key;
      objects.replaceChildren(...(s.objects.length ? s.objects.map((o) => objectItem(s.bucket, o)) : [empty("Nothing delivered yet.")]));
    },
  };
}

// ---- CloudWatch (what cloudwatchLogs / cloudwatchMetric rule actions wrote) --

function logGroupRow(group) {
  const events = count("events");
  const last = h("td", {});
  return {
    el: h("tr", { "data-log-group": group.logGroupName }, h("td", { text: `log group ${group.logGroupName}` }), h("td", {}, events), last),
    update(g) {
      setText(events, g.events);
      last.replaceChildren(whenEl(g.lastTimestamp));
    },
  };
}

function metricRow(metric) {
  const value = h("span", { class: "num" });
  const points = count("datapoints");
  const last = h("td", {});
  return {
    el: h(
      "tr",
      { "data-metric": `${metric.namespace}/${metric.metricName}` },
      h("td", {}, `metric ${metric.namespace} / ${metric.metricName} = `, value, ` ${metric.unit}`),
      h("td", {}, points),
      last,
    ),
    update(m) {
      setText(value, m.lastValue);
      setText(points, m.datapoints);
      last.replaceChildren(whenEl(m.lastTimestamp));
    },
  };
}

// ---- the view ---------------------------------------------------------------

export function create(main) {
  const streamsBox = h("div", { class: "stack" });
  const browser = recordBrowser();
  const queues = table(["Queue", "Visible", "In flight", "Delayed", "Dead-letter queue", "DLQ depth"], { id: "sqs-table" });
  const functionsBox = h("div", { class: "stack" });
  const firehoseBox = h("div", { class: "stack" });
  const cloudwatch = table(["CloudWatch (kept locally)", "Entries", "Latest"], { id: "cloudwatch-table" });
  const sync = {
    kinesis: keyedList(streamsBox, empty("No Kinesis streams yet — create one with `edgesim streams create NAME` or boto3 (kinesis.create_stream).")),
    sqs: keyedList(queues.tbody, h("tr", {}, h("td", { colspan: 6, class: "empty", text: "No SQS queues yet — create one with boto3 (sqs.create_queue)." }))),
    lambda: keyedList(functionsBox, empty("No Lambda functions yet — deploy one with `edgesim functions deploy path/to/module.py:handler`.")),
    firehose: keyedList(firehoseBox, empty("No Firehose delivery streams yet — create one with boto3 (firehose.create_delivery_stream).")),
    cloudwatch: keyedList(cloudwatch.tbody, h("tr", {}, h("td", { colspan: 3, class: "empty", text: "Nothing yet — rules with cloudwatchLogs or cloudwatchMetric actions write here (`edgesim cloudwatch logs`)." }))),
  };

  main.append(
    card("Kinesis streams", streamsBox, browser.el),
    card("SQS queues", queues.wrap),
    h("div", { class: "grid-2" }, card("Lambda functions", functionsBox), card("Firehose delivery streams", firehoseBox)),
    card("CloudWatch logs and metrics", cloudwatch.wrap),
  );

  function render(sinks) {
    sync.kinesis(sinks.kinesis, (s) => s.streamName, streamItem);
    browser.update(sinks.kinesis);
    sync.sqs(sinks.sqs, (q) => q.queueName, queueRow);
    sync.lambda(sinks.lambda, (f) => f.functionName, functionItem);
    sync.firehose(sinks.firehose, (f) => f.deliveryStreamName, firehoseItem);
    const cw = sinks.cloudwatch || { logGroups: [], metrics: [] };
    const entries = [...cw.logGroups.map((g) => ({ ...g, kind: "log" })), ...cw.metrics.map((m) => ({ ...m, kind: "metric" }))];
    sync.cloudwatch(entries, (e) => (e.kind === "log" ? `log:${e.logGroupName}` : `metric:${e.namespace}/${e.metricName}/${e.unit}`), (e) => (e.kind === "log" ? logGroupRow(e) : metricRow(e)));
  }

  return {
    query: { view: "sinks" },
    fetch: () => api("/edgesim/dash/sinks"),
    render,
    on: { tick: (tick) => tick.sinks && render(tick.sinks) },
  };
}
