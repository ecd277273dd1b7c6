// A tiny AWS IoT SQL highlighter: builds DOM nodes (text nodes only, so nothing is
// ever interpreted as HTML) and a line/column pointer for SQL errors.
import { h } from "./util.js";

const KEYWORDS = new Set(
  "SELECT FROM WHERE AS AND OR NOT CASE WHEN THEN ELSE END IN IS NULL TRUE FALSE".split(" "),
);

// One alternative per token kind; the last one catches any other character.
const TOKEN =
  /('(?:[^']|'')*'?|"(?:[^"\\]|\\.)*"?)|(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)|([A-Za-z_][A-Za-z0-9_]*)(?=(\s*\()?)|(<>|!=|<=|>=|\|\||[-+*/%=<>])|(\s+|[^])/g;

function tokenize(sql) {
  const tokens = [];
  for (const m of sql.matchAll(TOKEN)) {
    const [text, string, number, word, call, operator] = m;
    let kind = "plain";
    if (string) kind = "string";
    else if (number) kind = "number";
    else if (word) kind = KEYWORDS.has(word.toUpperCase()) ? "keyword" : call ? "function" : "plain";
    else if (operator) kind = "operator";
    tokens.push({ kind, text });
  }
  return tokens;
}

/** A <pre class="sql"> with highlighted tokens. */
export function sqlPre(sql) {
  return h(
    "pre",
    { class: "sql" },
    tokenize(sql).map(({ kind, text }) => (kind === "plain" ? text : h("span", { class: `tok-${kind}`, text }))),
  );
}

/**
 * The SQL line an error points at, with a caret under the column:
 *   line 2: WHERE temp > > 3
 *                       ^
 * line and column are 1-based.
 */
export function errorPointer(sql, line, column) {
  const lines = sql.split("\n");
  const index = Math.min(Math.max(line, 1), lines.length) - 1;
  const prefix = `line ${index + 1}: `;
  const text = lines[index];
  const col = Math.min(Math.max(column, 1), text.length + 1);
  // Keep tabs in the caret line so it lines up under tabbed SQL.
  const indent = " ".repeat(prefix.length) + text.slice(0, col - 1).replace(/[^\t]/g, " ");
  return h("pre", { class: "sql-error" }, `${prefix}${text}\n${indent}^`);
}
