// actlab explorer live pages (server only): prompt view, attention view, steering playground.
"use strict";
(function (A) {
  const el = A.el;
  const enc = encodeURIComponent;
  const needServer = () => el("p.err", { text: "this page runs the model: open it from `actlab serve`" });

  function saeSelect(current) {
    const s = el("select", { "data-testid": "sae-select" }, el("option", { value: "", text: "(no SAE)" }),
      A.ofKind("explain.latent_cache").map((a) => el("option", { value: a.id, text: a.id, selected: a.id === current })));
    return s;
  }

  A.pages.prompt = async function () {
    if (A.static) return needServer();
    const q = A.query();
    const text = el("textarea", { "data-testid": "prompt-text", text: q.text || "The apple and the pear are fruit." });
    const sae = saeSelect(q.sae || (A.ofKind("explain.latent_cache")[0] || {}).id);
    const site = el("input", { type: "text", placeholder: "extra site, e.g. blocks.0.mlp_act", "data-testid": "site", size: 28 });
    const measure = el("select", { "data-testid": "measure" });
    const result = el("div", { "data-testid": "prompt-result" });
    let timer = null, seq = 0;
    async function run() {
      const my = ++seq;
      try {
        const r = await A.post("/api/prompt", { text: text.value, sae: sae.value || null, site: site.value.trim() || null, k: 5 });
        if (my !== seq) return;
        render(r);
      } catch (e) { if (my === seq) result.replaceChildren(A.error(e)); }
    }
    function render(r) {
      const opts = Object.keys(r.norms).map((s) => ["norm " + s, r.norms[s]]);
      if (r.features) opts.unshift(["top feature value", r.features.map((f) => (f[0] ? f[0][1] : 0))]);
      if (r.neurons) opts.unshift(["top neuron value", r.neurons.map((f) => (f[0] ? f[0][1] : 0))]);
      const prev = measure.value;
      measure.replaceChildren(...opts.map(([name], i) => el("option", { value: String(i), text: name, selected: name === prev })));
      const paint = () => {
        const vals = opts[Number(measure.value) || 0][1];
        const max = Math.max(1e-12, ...vals.map(Math.abs));
        heat.replaceChildren(...r.tokens.map((t, i) => el("span.tok", { text: t, title: `${JSON.stringify(t)}: ${A.fmt(vals[i])}`,
          "data-i": String(i), "data-value": String(vals[i]), style: `background:${A.color(vals[i], max)}` })));
      };
      const heat = el("div.ex", { "data-testid": "prompt-heat" });
      measure.onchange = paint;
      paint();
      const head = ["#", "token", ...r.layers.map((s) => "|" + s.replace("blocks.", "").replace(".resid_post", "") + "|")];
      if (r.features) head.push("top features");
      if (r.neurons) head.push("top neurons");
      const rows = r.tokens.map((t, i) => {
        const row = [i, JSON.stringify(t), ...r.layers.map((s) => r.norms[s][i])];
        if (r.features) row.push(el("span", {}, r.features[i].map(([id, v]) =>
          el("a.pill", { href: `#/feature/${enc(r.sae)}/${id}`, text: `#${id} ${A.fmt(v)}`, "data-testid": "token-feature" }))));
        if (r.neurons) row.push(el("span", {}, r.neurons[i].map(([id, v]) => el("span.pill", { text: `n${id} ${A.fmt(v)}` }))));
        return row;
      });
      result.replaceChildren(heat, el("p.muted", { "data-testid": "timing", text: `forward ${A.fmt(r.forward_ms)} ms, total ${A.fmt(r.total_ms)} ms` }),
        A.table(head, rows, "token-table"));
    }
    const schedule = () => { clearTimeout(timer); timer = setTimeout(run, 250); };
    text.addEventListener("input", schedule);
    sae.addEventListener("change", run);
    site.addEventListener("change", run);
    run();
    return el("div", {}, el("h1", { text: "prompt view" }), el("p.muted", { text: "type: features, neurons and site norms update per token" }),
      text, el("div.row", {}, el("label", {}, "SAE ", sae), site, el("label", {}, "colour by ", measure),
        el("button", { text: "run", "data-testid": "prompt-run", on: { click: run } })), result);
  };

  A.pages.attention = async function () {
    if (A.static) return needServer();
    const m = await A.get("/api/model");
    const text = el("textarea", { "data-testid": "attn-text", text: "When Mary and John went to the store, John gave a drink to" });
    const layer = el("select", { "data-testid": "layer" }, Array.from({ length: m.n_layers || 0 }, (_, i) => el("option", { value: String(i), text: "layer " + i })));
    const head = el("select", { "data-testid": "head" });
    const view = el("div", { "data-testid": "attn-result" });
    let data = null;
    const paint = () => {
      if (!data) return;
      const h = Number(head.value) || 0;
      const labels = data.tokens.map((t, i) => `${i} ${JSON.stringify(t)}`);
      view.replaceChildren(A.gridHeat(labels, labels, data.pattern[h], { testid: "attn", max: 1 }));
    };
    async function run() {
      try {
        data = await A.post("/api/attention", { text: text.value, layer: Number(layer.value) || 0 });
        const prev = head.value;
        head.replaceChildren(...Array.from({ length: data.n_heads }, (_, i) => el("option", { value: String(i), text: "head " + i, selected: String(i) === prev })));
        paint();
      } catch (e) { view.replaceChildren(A.error(e)); }
    }
    layer.addEventListener("change", run);
    head.addEventListener("change", paint);
    run();
    return el("div", {}, el("h1", { text: "attention" }), el("p.muted", { text: "rows: query token; columns: key token" }), text,
      el("div.row", {}, layer, head, el("button", { text: "run", "data-testid": "attn-run", on: { click: run } })), view);
  };

  A.pages.steer = async function () {
    if (A.static) return needServer();
    const q = A.query();
    const kind = el("select", { "data-testid": "kind" }, ["feature", "direction", "contrast"].map((k) =>
      el("option", { value: k, text: k, selected: k === (q.direction ? "direction" : q.kind || "feature") })));
    const sae = saeSelect(q.sae || (A.ofKind("explain.latent_cache")[0] || {}).id);
    const feature = el("input", { type: "number", min: 0, value: q.feature || "0", "data-testid": "feature", style: "width:90px" });
    const dir = el("select", { "data-testid": "direction" }, A.ofKind("steer.direction").map((a) => el("option", { value: a.id, text: a.id, selected: a.id === q.direction })));
    const pos = el("textarea", { "data-testid": "positive", placeholder: "positive prompts, one a line" });
    const neg = el("textarea", { "data-testid": "negative", placeholder: "negative prompts, one a line" });
    const site = el("input", { type: "text", placeholder: "site (default: the feature's / direction's)", "data-testid": "steer-site", size: 30 });
    const strength = el("input", { type: "number", step: "any", value: q.strength || "4", "data-testid": "strength", style: "width:90px" });
    const ntok = el("input", { type: "number", min: 1, max: A.index.limits.max_new_tokens, value: "16", "data-testid": "max-new-tokens", style: "width:70px" });
    const prompt = el("textarea", { "data-testid": "steer-prompt", text: q.prompt || "I think that" });
    const plain = el("div.gen.card", { "data-testid": "plain" });
    const steered = el("div.gen.card", { "data-testid": "steered" });
    const note = el("p.muted", { "data-testid": "steer-note" });
    const fields = { feature: el("div.row", {}, el("label", {}, "SAE ", sae), el("label", {}, "feature ", feature)),
      direction: el("div.row", {}, el("label", {}, "direction ", dir)), contrast: el("div.cols", {}, pos, neg) };
    const showKind = () => { for (const [k, f] of Object.entries(fields)) f.style.display = k === kind.value ? "" : "none"; };
    kind.addEventListener("change", showKind);
    showKind();
    async function run() {
      const body = { prompt: prompt.value, kind: kind.value, strength: Number(strength.value), max_new_tokens: Number(ntok.value),
        site: site.value.trim() || null };
      if (kind.value === "feature") Object.assign(body, { sae: sae.value, feature: Number(feature.value) });
      if (kind.value === "direction") body.direction = dir.value;
      if (kind.value === "contrast") Object.assign(body, { positive: pos.value.split("\n").filter((x) => x.trim()), negative: neg.value.split("\n").filter((x) => x.trim()) });
      plain.textContent = steered.textContent = "...";
      try {
        const r = await A.post("/api/steer", body);
        plain.textContent = r.plain;
        steered.textContent = r.steered;
        note.textContent = `${r.unit ? "unit direction" : "raw vector"} (norm ${A.fmt(r.vector_norm)}) x ${A.fmt(r.strength)} added at ${r.site}`;
      } catch (e) { plain.textContent = steered.textContent = ""; note.replaceChildren(A.error(e)); }
    }
    return el("div", {}, el("h1", { text: "steering playground" }), el("div.row", {}, el("label", {}, "direction from ", kind)),
      fields.feature, fields.direction, fields.contrast,
      el("div.row", {}, site, el("label", {}, "strength ", strength), el("label", {}, "new tokens ", ntok)), prompt,
      el("div.row", {}, el("button", { text: "generate", "data-testid": "steer-run", on: { click: run } })), note,
      el("div.cols", {}, el("div", {}, el("h2", { text: "plain" }), plain), el("div", {}, el("h2", { text: "steered" }), steered)));
  };
})(window.actlab);
