// actlab explorer charts: bar histograms, token heat maps, grid heat maps (plain DOM, no library).
"use strict";
(function (A) {
  const el = A.el;

  // orange for positive values, blue for negative; alpha = |v| / max
  A.color = function (v, max) {
    if (!max || !v) return "transparent";
    const a = Math.min(1, Math.abs(v) / max);
    return v > 0 ? `rgba(245, 130, 20, ${(0.08 + 0.82 * a).toFixed(3)})` : `rgba(37, 99, 235, ${(0.08 + 0.82 * a).toFixed(3)})`;
  };

  // bars(counts, edges) with edges.length == counts.length + 1; each bar's title says its range and count
  A.bars = function (counts, edges, testid, label) {
    const top = Math.max(1, ...counts);
    const box = el("div.bars", { "data-testid": testid });
    counts.forEach((c, i) => {
      const range = edges ? `[${A.fmt(edges[i])}, ${A.fmt(edges[i + 1])})` : String(i);
      box.appendChild(el("div.bar", { title: `${range}: ${c}`, "data-count": String(c),
        style: `height:${c ? Math.max(2, (100 * c) / top) : 0}%` }));
    });
    const axis = el("div.axis", {}, el("span", { text: edges ? A.fmt(edges[0]) : "" }),
      el("span", { text: label || "" }), el("span", { text: edges ? A.fmt(edges[edges.length - 1]) : "" }));
    return el("div", {}, box, axis);
  };

  // one example: tokens coloured by activation; the peak token outlined; hover shows the value
  A.tokenHeat = function (ex, max, testid) {
    const row = el("div.ex", { "data-testid": testid || "example" },
      el("span.mx", { text: A.fmt(ex.max), title: "max activation in this window" }));
    ex.tokens.forEach((t, i) => {
      const v = ex.acts[i];
      row.appendChild(el("span.tok" + (i === ex.peak ? ".peak" : ""), {
        text: t, title: `${JSON.stringify(t)}: ${A.fmt(v)}`, "data-act": String(v), "data-i": String(i),
        style: `background:${A.color(v, max)}` }));
    });
    return row;
  };

  // grid heat map: rows x cols of values; hovering a cell writes "row, col: value" into hover
  A.gridHeat = function (rows, cols, values, opts) {
    opts = opts || {};
    const max = opts.max || Math.max(1e-12, ...values.flat().map((x) => Math.abs(x)));
    const hover = el("div.hover", { "data-testid": (opts.testid || "grid") + "-hover", text: "hover a cell" });
    const head = el("tr", {}, el("th"), cols.map((c) => el("th.col", { text: String(c) })));
    const body = rows.map((r, i) => el("tr", {}, el("th", { text: String(r) }), cols.map((c, j) => {
      const v = values[i][j];
      const text = `${r}, ${c}: ${A.fmt(v)}` + (opts.extra ? opts.extra(i, j) : "");
      return el("td", { title: text, "data-row": String(i), "data-col": String(j), "data-value": String(v),
        style: `background:${A.color(v, max)}`, on: { mouseenter: () => { hover.textContent = text; } } });
    })));
    const table = el("table.grid", { "data-testid": opts.testid || "grid" }, el("thead", {}, head), el("tbody", {}, body));
    return el("div", {}, hover, el("div", { style: "overflow:auto" }, table));
  };

  A.table = function (headers, rows, testid) {
    return el("table", { "data-testid": testid }, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) =>
        c instanceof Node ? el("td", {}, c) : el("td" + (typeof c === "number" ? ".num" : ""), { text: typeof c === "number" ? A.fmt(c) : String(c ?? "") }))))));
  };
})(window.actlab);
