// actlab explorer read-only pages: home, model overview, SAE overview + search, feature page, patching view.
"use strict";
(function (A) {
  const el = A.el;
  const enc = encodeURIComponent;

  A.pages.home = async function () {
    const idx = await A.loadIndex();
    const kinds = [["explain.latent_cache", "SAEs / latent caches", (a) => "#/sae/" + enc(a.id)],
      ["patch.result", "patching results", (a) => "#/patch/" + enc(a.id)],
      ["stats.report", "stats reports", () => "#/model"],
      ["steer.direction", "steering directions", (a) => "#/steer?direction=" + enc(a.id)],
      ["dictionary", "dictionaries", null]];
    const out = el("div", {}, el("h1", { text: "actlab explorer" }),
      el("p.muted", { text: `serving ${idx.roots.join(", ")}` + (idx.model ? ` - model ${idx.model}` : "") }));
    for (const [kind, title, href] of kinds) {
      const items = A.ofKind(kind);
      if (!items.length) continue;
      out.appendChild(el("h2", { text: title }));
      out.appendChild(el("ul", { "data-testid": "list-" + kind }, items.map((a) =>
        el("li", {}, href ? A.link(href(a), a.id) : el("span", { text: a.id }), el("span.muted", { text: "  " + a.path })))));
    }
    const graphs = (idx.graphs || []).filter((f) => f.graphs.length);
    if (graphs.length) {
      out.appendChild(el("h2", { text: "attribution graphs" }));
      out.appendChild(el("ul", { "data-testid": "list-circuits.graph" }, graphs.flatMap((f) => f.graphs.map((x) =>
        el("li", {}, A.link(`#/graph/${enc(f.id)}/${enc(x.slug)}`, `${f.id} / ${x.slug}`, { "data-testid": "graph-link" }),
          el("span.muted", { text: "  " + x.prompt }))))));
    }
    return out;
  };

  A.pages.model = async function () {
    const m = await A.get("/api/model");
    const out = el("div", {}, el("h1", { text: "model " + (m.model || "(none)") }));
    if (m.loaded) {
      out.appendChild(el("div.stats", {}, A.stat("layers", m.n_layers, "n-layers"), A.stat("d_model", m.d_model, "d-model"),
        A.stat("family", m.family || "-"), A.stat("sites", m.sites.length, "n-sites")));
      const norms = el("div.card", { "data-testid": "layer-norms" }, el("p.muted", { text: "per-layer residual norms..." }));
      out.appendChild(el("h2", { text: "per-layer residual norm (mean over tokens of a sample prompt)" }));
      out.appendChild(norms);
      if (!A.static) A.post("/api/prompt", { text: "The quick brown fox jumps over the lazy dog." }).then((r) => {
        const mean = r.layers.map((s) => r.norms[s].reduce((a, b) => a + b, 0) / r.norms[s].length);
        norms.replaceChildren(A.bars(mean, null, "norm-bars", "layer 0 .. " + (mean.length - 1)),
          A.table(["site", "mean |h|"], r.layers.map((s, i) => [s, mean[i]]), "norm-table"));
      }).catch((e) => norms.replaceChildren(A.error(e)));
      out.appendChild(el("details", {}, el("summary", { text: `sites (${m.sites.length})` }),
        el("div", { "data-testid": "sites" }, m.sites.map((s) => el("span.pill", { text: s })))));
    } else {
      out.appendChild(el("p.muted", { text: "no model loaded (start the server with --model to see its sites)" }));
    }
    for (const s of m.stats) {
      out.appendChild(el("h2", { text: `stats report ${s.id} (${s.n_tokens} tokens)` }));
      out.appendChild(el("p.muted", { text: (s.rule || "") + (s.recurring_channels.length ?
        ` - recurring massive channels ${s.recurring_channels.join(", ")}` : " - no recurring massive channels") }));
      out.appendChild(A.table(["site", "top |h| (max)", "top |h| (median)", "median |h|", "massive / seq"],
        s.layers.map((L) => [L.site, L.top1_max, L.top1_median, L.median_abs, L.massive_per_seq]), "stats-table"));
      for (const f of s.figures) out.appendChild(el("figure.card", {}, el("img", { src: f.url.replace(/^\//, A.static ? "" : "/"),
        alt: f.name, style: "max-width:100%" }), el("figcaption.muted", { text: f.name })));
    }
    return out;
  };

  A.pages.sae = async function (sid) {
    const [o, list] = await Promise.all([A.get(`/api/sae/${enc(sid)}`), A.get(`/api/sae/${enc(sid)}/features?limit=20000`)]);
    const out = el("div", {}, el("h1", { text: `SAE ${o.id}` }),
      el("p.muted", { text: `${o.arch || o.source} at ${o.site}` + (o.note ? ` - ${o.note}` : "") }),
      el("div.stats", {}, A.stat("features", o.n_features, "n-features"), A.stat("tokens", o.n_tokens, "n-tokens"),
        A.stat("dead", o.dead, "dead"), A.stat(`dense (>${o.dense_threshold})`, o.dense, "dense"),
        A.stat("L0", A.fmt(o.l0), "l0"), A.stat("FVU", o.fvu === null ? "-" : A.fmt(o.fvu), "fvu"),
        A.stat("explained", o.n_explained, "n-explained")),
      el("h2", { text: "feature density (log10 of the firing fraction; dead features left out)" }),
      A.bars(o.density_hist.counts, o.density_hist.log10_edges, "density-hist", "log10 density"));
    const rows = list.features;
    const box = el("input", { type: "text", placeholder: "search id, explanation or top token", "data-testid": "search", size: 40 });
    const count = el("span.muted", { "data-testid": "match-count" });
    const body = el("tbody");
    const show = () => {
      const q = box.value.trim().toLowerCase();
      let hits = q ? rows.filter((f) => String(f.id) === q || f.explanation.toLowerCase().includes(q) || f.top_token.toLowerCase().includes(q)) : rows;
      if (/^\d+$/.test(q)) hits = hits.sort((a, b) => (String(b.id) === q) - (String(a.id) === q));
      count.textContent = `${hits.length} of ${rows.length} features`;
      body.replaceChildren(...hits.slice(0, 200).map((f) => el("tr", { "data-testid": "feature-row" },
        el("td", {}, A.link(`#/feature/${enc(sid)}/${f.id}`, "#" + f.id, { "data-testid": "feature-link" })),
        el("td.num", { text: A.fmt(f.density) }), el("td.num", { text: A.fmt(f.max) }),
        el("td", {}, el("code", { text: JSON.stringify(f.top_token) })), el("td", { text: f.explanation }))));
    };
    box.addEventListener("input", show);
    show();
    out.appendChild(el("h2", { text: "features" }));
    out.appendChild(el("div.row", {}, box, count));
    out.appendChild(el("table", { "data-testid": "feature-table" }, el("thead", {}, el("tr", {},
      ["feature", "density", "max", "top token", "explanation"].map((h) => el("th", { text: h })))), body));
    return out;
  };

  A.pages.feature = async function (sid, j) {
    const f = await A.get(`/api/sae/${enc(sid)}/feature/${enc(j)}`);
    const out = el("div", {}, el("h1", { "data-testid": "feature-title", text: `feature ${f.id} of ${f.sae}` }),
      el("div.row", {}, A.link(`#/sae/${enc(sid)}`, "back to the SAE"),
        f.id > 0 ? A.link(`#/feature/${enc(sid)}/${f.id - 1}`, "previous") : null,
        f.id + 1 < f.n_features ? A.link(`#/feature/${enc(sid)}/${f.id + 1}`, "next") : null,
        !A.static && f.steerable ? el("button", { "data-testid": "steer-button", text: "steer with this feature",
          on: { click: () => { location.hash = `#/steer?sae=${enc(sid)}&feature=${f.id}`; } } }) : null),
      el("div.stats", {}, A.stat("density", A.fmt(f.density), "density"), A.stat("active tokens", `${f.count} / ${f.n_tokens}`, "count"),
        A.stat("max", A.fmt(f.max), "max"), A.stat("mean when active", A.fmt(f.mean), "mean")));
    out.appendChild(el("div.card", { "data-testid": "explanation" }, el("b", { text: "explanation: " }),
      el("span", { text: f.explanation || "(none yet)" }),
      Object.keys(f.scores || {}).length ? el("div", { "data-testid": "scores" }, Object.entries(f.scores).map(([k, v]) =>
        el("span.pill", { text: `${k} ${typeof v === "number" ? A.fmt(v) : JSON.stringify(v)}` }))) : null));
    out.appendChild(el("h2", { text: "activation histogram (log-spaced bins of active values)" }));
    out.appendChild(A.bars(f.hist.counts, f.hist.edges, "act-hist", "activation"));
    const cols = el("div.cols");
    if (f.promoted) cols.appendChild(el("div.card", { "data-testid": "promoted" }, el("b", { text: "promotes" }), el("div", {},
      f.promoted.top.map(([t, v]) => el("span.pill", { text: `${JSON.stringify(t)} +${A.fmt(v)}` }))),
      el("b", { text: "suppresses" }), el("div", {}, f.promoted.bottom.map(([t, v]) => el("span.pill", { text: `${JSON.stringify(t)} ${A.fmt(v)}` })))));
    if (f.nearest.length) cols.appendChild(el("div.card", { "data-testid": "nearest" }, el("b", { text: "nearest features (decoder cosine)" }),
      el("div", {}, f.nearest.map((n) => el("div", {}, A.link(`#/feature/${enc(sid)}/${n.id}`, "#" + n.id),
        el("span.muted", { text: ` ${A.fmt(n.cos)} ` }), el("span", { text: n.explanation || JSON.stringify(n.top_token) }))))));
    out.appendChild(cols);
    out.appendChild(el("h2", { text: `top examples (${f.top.length})` }));
    out.appendChild(el("div", { "data-testid": "top-examples" }, f.top.map((x) => A.tokenHeat(x, f.max, "top-example"))));
    out.appendChild(el("h2", { text: "examples across activation quantiles (lowest first)" }));
    out.appendChild(el("div", { "data-testid": "quantile-examples" }, f.quantiles.map((x) =>
      el("div", {}, el("span.muted", { text: `quantile ${x.quantile}` }), A.tokenHeat(x, f.max, "quantile-example")))));
    if (!f.top.length) out.appendChild(el("p.muted", { text: "this feature never fires on the cached tokens" }));
    return out;
  };

  A.pages.patch = async function (pid) {
    const p = await A.get(`/api/patch/${enc(pid)}`);
    const norm = !!p.normalized;
    const out = el("div", {}, el("h1", { text: `patching: ${p.id}` }),
      el("p.muted", { text: `${p.method} patching (${p.direction}), metric ${p.metric}: clean ${A.fmt(p.clean)}, corrupt ${A.fmt(p.corrupt)}. ` +
        `Rows: ${p.row_dim}; columns: ${p.col_dim}. Colour: ${norm ? "normalised effect (1 = fully restored)" : "raw metric"}.` }));
    out.appendChild(A.gridHeat(p.rows, p.cols, norm ? p.normalized : p.values, {
      testid: "patch", max: norm ? 1 : undefined,
      extra: (i, j) => (norm ? ` (raw ${A.fmt(p.values[i][j])})` : "") }));
    return out;
  };
})(window.actlab);
