// #/rules: rule table with live counters and sparklines, rule details, and a test box.
import { drawSpark, sparkline } from "./chart.js";
import { errorPointer, sqlPre } from "./sql.js";
import { api, badge, card, clockEl, empty, h, pretty, setText, showResult, table } from "./util.js";

export const title = "Rules";

const HISTORY = 120;
const COUNTERS = ["matched", "fired", "errors"];
const COLUMNS = ["Rule", "Enabled", "Matched", "Fired", "Errors", "Matched/s (2 min)", "Actions"];

/** A topic that matches an MQTT filter, to prefill the test box: dt/+/temp -> dt/device-1/temp. */
function sampleTopic(sql) {
  const match = /\bFROM\s+'([^']*)'/i.exec(sql);
  if (!match) return "";
  return match[1]
    .split("/")
    .map((level) => (level === "+" ? "device-1" : level === "#" ? "test" : level))
    .join("/");
}

function errorsList(errors) {
  if (!errors.length) return empty("No errors recorded.");
  const t = table(["Time", "Action", "Message", "Trace id"]);
  for (const e of errors) {
    t.tbody.append(
      h("tr", {}, h("td", {}, clockEl(e.timeMs)), h("td", { text: e.action }), h("td", { text: e.message }), h("td", {}, h("code", { text: e.traceId || "—" }))),
    );
  }
  return t.wrap;
}

/**
 * An SQL error: its first line, then our own pointer at line/column. The server's
 * message may carry its own copy of the source line and caret; only "Hint:" lines
 * after the first are kept.
 */
function errorParts(err, sql) {
  const { line, column } = err.body || {};
  if (!Number.isInteger(line)) return [h("pre", { class: "error-message", text: err.message })];
  const [first, ...rest] = err.message.split("\n");
  return [
    h("p", { text: first }),
    errorPointer(sql, line, Number.isInteger(column) ? column : 1),
    rest.filter((l) => /^\s*Hint:/.test(l)).map((l) => h("p", { text: l.trim() })),
  ];
}

function testBox() {
  const sql = h("textarea", { id: "rule-test-sql", rows: 5, spellcheck: false });
  const topic = h("input", { id: "rule-test-topic", type: "text", autocomplete: "off", placeholder: "dt/device-1/temp" });
  const clientId = h("input", { id: "rule-test-client", type: "text", autocomplete: "off", placeholder: "optional" });
  const payload = h("textarea", { id: "rule-test-payload", rows: 5, spellcheck: false, placeholder: '{"temperature": 31}' });
  const run = h("button", { id: "rule-test-run", type: "submit", text: "Run" });
  const result = h("div", { id: "rule-test-result", class: "result", role: "status", "aria-live": "polite" });
  let suggestedTopic = "";

  function showAnswer(answer) {
    const yes = (ok, text) => badge(text, ok ? "ok" : "off");
    showResult(
      result,
      "ok",
      h(
        "ul",
        { class: "plain" },
        h("li", {}, "Topic filter ", h("code", { text: answer.topicFilter }), " ", yes(answer.topicMatches, answer.topicMatches ? "matches the topic" : "does not match the topic")),
        answer.whereMatched === null || answer.whereMatched === undefined
          ? h("li", {}, "WHERE clause ", badge("not evaluated", "off"))
          : h("li", {}, "WHERE clause ", yes(answer.whereMatched, answer.whereMatched ? "matched" : "did not match")),
        answer.error ? h("li", { class: "error-message", text: `Evaluation error: ${answer.error}` }) : null,
        (answer.explanation || []).map((line) => h("li", { class: "explanation", text: line })),
      ),
      answer.output === null || answer.output === undefined
        ? empty("No output: the rule would not fire for this message.")
        : h("div", {}, h("h4", { text: "Output" }), h("pre", { class: "json", text: pretty(answer.output) })),
    );
  }

  async function submit(event) {
    event.preventDefault();
    const body = { sql: sql.value, topic: topic.value.trim(), payload: payload.value };
    if (clientId.value.trim()) body.clientId = clientId.value.trim();
    run.disabled = true;
    try {
      showAnswer(await api("/edgesim/dash/rules/test", { json: body }));
    } catch (err) {
      showResult(result, "error", ...errorParts(err, body.sql));
    } finally {
      run.disabled = false;
    }
  }

  const el = h(
    "form",
    { class: "test-form", onsubmit: submit },
    h("div", { class: "field field-wide" }, h("label", { for: "rule-test-sql", text: "SQL" }), sql),
    h("div", { class: "field" }, h("label", { for: "rule-test-topic", text: "Topic" }), topic),
    h("div", { class: "field" }, h("label", { for: "rule-test-client", text: "Client id" }), clientId),
    h("div", { class: "field field-wide" }, h("label", { for: "rule-test-payload", text: "Payload" }), payload),
    h("div", { class: "field-wide" }, run, result),
  );

  return {
    el,
    /** Load a rule's SQL (and a matching topic unless the user typed one). */
    useRule(rule) {
      sql.value = rule.sql;
      if (!topic.value || topic.value === suggestedTopic) {
        suggestedTopic = sampleTopic(rule.sql);
        topic.value = suggestedTopic;
      }
    },
    focus: () => sql.focus(),
  };
}

export function create(main, _arg, ctx) {
  const rules = table(COLUMNS, { id: "rules-table" });
  const emptyNote = empty("No rules yet — create one with `edgesim rules create RULE_FILE` or boto3 (iot.create_topic_rule).");
  emptyNote.hidden = true;
  const tester = testBox();
  const rows = new Map(); // ruleName -> {tr, detail, counters, spark, history, loadedErrors, newErrors}
  let loaded = false;
  let reloading = false;

  main.append(card("Rules", rules.wrap, emptyNote), card("Test a rule", tester.el));

  function toggle(row, rule) {
    const open = row.detail.hidden;
    row.detail.hidden = !open;
    row.button.setAttribute("aria-expanded", String(open));
    if (open) tester.useRule(rule);
  }

  function makeRow(rule) {
    const id = `rule-detail-${rows.size}`;
    const row = {
      counters: Object.fromEntries(COUNTERS.map((c) => [c, h("td", { class: "num", "data-counter": c, text: rule.counters[c] })])),
      history: rule.history.slice(-HISTORY),
      loadedErrors: rule.counters.errors,
      newErrors: h("p", { class: "note", hidden: true }),
      button: h("button", { type: "button", class: "link", "aria-expanded": "false", "aria-controls": id, text: rule.ruleName }),
    };
    row.spark = sparkline(row.history);
    const actions = rule.actions.join(", ") + (rule.errorAction ? ` · on error: ${rule.errorAction}` : "");
    row.tr = h(
      "tr",
      { "data-rule": rule.ruleName, class: "clickable", onclick: () => toggle(row, rule) },
      h("td", {}, row.button),
      h("td", {}, badge(rule.enabled ? "enabled" : "disabled", rule.enabled ? "ok" : "off")),
      COUNTERS.map((c) => row.counters[c]),
      h("td", {}, row.spark),
      h("td", { text: actions || "—" }),
    );
    row.newErrors.append(
      h("span", {}),
      " ",
      h("button", { type: "button", text: "Show latest errors", onclick: () => ctx.reload() }),
    );
    row.detail = h(
      "tr",
      { class: "rule-detail", id, hidden: true },
      h(
        "td",
        { colspan: COLUMNS.length },
        rule.description ? h("p", { text: rule.description }) : null,
        h("p", { class: "muted", text: `SQL version ${rule.sqlVersion || "—"}` }),
        sqlPre(rule.sql),
        h(
          "button",
          {
            type: "button",
            text: "Test this rule",
            onclick: () => {
              tester.useRule(rule);
              tester.focus();
            },
          },
        ),
        h("h4", { text: "Last errors" }),
        row.newErrors,
        errorsList(rule.lastErrors),
      ),
    );
    return row;
  }

  function render(data) {
    const expanded = new Set([...rows].filter(([, row]) => !row.detail.hidden).map(([name]) => name));
    rows.clear();
    rules.tbody.replaceChildren();
    for (const rule of [...data.rules].sort((a, b) => a.ruleName.localeCompare(b.ruleName))) {
      const row = makeRow(rule);
      rows.set(rule.ruleName, row);
      if (expanded.has(rule.ruleName)) {
        row.detail.hidden = false;
        row.button.setAttribute("aria-expanded", "true");
      }
      rules.tbody.append(row.tr, row.detail);
    }
    loaded = true;
    emptyNote.hidden = rows.size > 0;
  }

  function update(row, stats) {
    for (const c of COUNTERS) setText(row.counters[c], stats[c]);
    row.history.push(stats.matchedPerS ?? 0);
    if (row.history.length > HISTORY) row.history.shift();
    drawSpark(row.spark, row.history);
    const fresh = stats.errors - row.loadedErrors;
    row.newErrors.hidden = fresh <= 0;
    if (fresh > 0) setText(row.newErrors.firstChild, `${fresh} new error(s) since this list was loaded.`);
  }

  // A rule created or deleted since the page loaded: fetch the list once.
  function reloadOnce() {
    if (reloading || !loaded) return;
    reloading = true;
    ctx.reload().finally(() => {
      reloading = false;
    });
  }

  function onTick(tick) {
    if (!tick.rules) return;
    const names = Object.keys(tick.rules);
    if (names.length !== rows.size || names.some((name) => !rows.has(name))) reloadOnce();
    for (const [name, stats] of Object.entries(tick.rules)) {
      const row = rows.get(name);
      if (row) update(row, stats);
    }
  }

  return {
    query: { view: "rules" },
    fetch: () => api("/edgesim/dash/rules"),
    render,
    on: { tick: onTick },
  };
}
