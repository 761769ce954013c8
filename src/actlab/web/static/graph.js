// actlab explorer graph view: an attribution graph (circuit-tracer JSON from actlab circuits graph) as SVG; nodes at
// (context position, layer), links sized by |weight| and coloured by sign, hover / click for a node's values and edges.
"use strict";
(function (A) {
  const el = A.el;
  const enc = encodeURIComponent;
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, String(v));
    return e;
  };
  const TYPES = { "embedding": "tok", "logit": "logit", "mlp reconstruction error": "err", "cross layer transcoder": "lat" };

  // row of a node: tokens (layer "E") at the bottom, then block 0, 1, ..., the logits (layer n_layers + 1) on top
  const rowOf = (n) => (n.layer === "E" ? 0 : n.feature_type === "logit" ? Number(n.layer) : Number(n.layer) + 1);

  A.graphLayout = function (g) {
    const P = Math.max(1, (g.metadata.prompt_tokens || []).length, ...g.nodes.map((n) => n.ctx_idx + 1));
    const R = Math.max(1, ...g.nodes.map((n) => rowOf(n) + 1));
    const cells = {};
    for (const n of g.nodes) (cells[rowOf(n) + "," + n.ctx_idx] ||= []).push(n);
    // a column per position, as wide as its busiest cell; positions holding only their token stay narrow
    const per = Array.from({ length: P }, () => 0), busy = Array.from({ length: P }, () => false);
    for (const [k, c] of Object.entries(cells)) {
      const p = Number(k.split(",")[1]);
      per[p] = Math.max(per[p], c.length);
      if (c.some((n) => n.layer !== "E")) busy[p] = true;
    }
    const colW = per.map((c, p) => (busy[p] ? Math.max(64, 16 * c + 12) : 44));
    const x0 = colW.reduce((acc, w) => { acc.push(acc[acc.length - 1] + w); return acc; }, [56]);
    const rowH = 64, left = 56, bottom = 40, top = 18;
    // by node (circuit-tracer's error ids "0_{layer}_{pos}" can equal a layer-0 latent's) and by id for the links
    const at = new Map(), pos = {};
    for (const c of Object.values(cells)) c.forEach((n, k) => {
      const xy = { x: x0[n.ctx_idx] + colW[n.ctx_idx] / 2 + (k - (c.length - 1) / 2) * 16,
        y: top + (R - 1 - rowOf(n)) * rowH + rowH / 2 };
      at.set(n, xy);
      pos[n.node_id] ||= xy;
    });
    return { P, R, colW, x0, rowH, left, top, bottom, at, pos, width: x0[P] + 10, height: top + R * rowH + bottom };
  };

  function edgeList(title, edges, other, testid) {
    return el("div.card", { "data-testid": testid }, el("b", { text: title }), edges.length ? A.table(["node", "weight"],
      edges.map((e) => [other(e), e.weight]), testid + "-table") : el("p.muted", { text: "none" }));
  }

  A.pages.graph = async function (gid, slug) {
    if (!slug) {
      const f = (A.index.graphs || []).find((x) => x.id === gid);
      if (!f) throw new Error(`no graph folder ${gid}`);
      return el("div", {}, el("h1", { text: `attribution graphs in ${gid}` }), el("ul", { "data-testid": "graph-list" },
        f.graphs.map((x) => el("li", {}, A.link(`#/graph/${enc(gid)}/${enc(x.slug)}`, x.slug), el("span.muted", { text: "  " + x.prompt })))));
    }
    const g = await A.get(`/api/graph/${enc(gid)}/${enc(slug)}`);
    const L = A.graphLayout(g);
    const byId = Object.fromEntries(g.nodes.map((n) => [n.node_id, n]));
    const maxW = Math.max(1e-12, ...g.links.map((l) => Math.abs(l.weight)));
    const root = svg("svg", { width: L.width, height: L.height, viewBox: `0 0 ${L.width} ${L.height}`, "data-testid": "graph-svg", class: "graph" });
    const gl = svg("g", { class: "links" }), gn = svg("g", { class: "nodes" }), ga = svg("g", { class: "axes" });
    const toks = g.metadata.prompt_tokens || [];
    for (let p = 0; p < L.P; p++) {
      const t = svg("text", { x: L.x0[p] + L.colW[p] / 2, y: L.height - 14, class: "tick", "text-anchor": "middle", "data-testid": "graph-token" });
      t.textContent = JSON.stringify(toks[p] ?? "").slice(0, 8);
      ga.appendChild(t);
    }
    for (let r = 0; r < L.R; r++) {
      const t = svg("text", { x: 4, y: L.top + (L.R - 1 - r) * L.rowH + L.rowH / 2 + 4, class: "tick" });
      t.textContent = r === 0 ? "tokens" : r === L.R - 1 && g.nodes.some((n) => n.feature_type === "logit") ? "logits" : "L" + (r - 1);
      ga.appendChild(t);
    }
    const lines = [];
    for (const l of g.links) {
      const a = L.pos[l.source], b = L.pos[l.target];
      if (!a || !b) continue;
      const line = svg("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "link " + (l.weight >= 0 ? "pos" : "neg"),
        "stroke-width": (0.4 + 4 * Math.abs(l.weight) / maxW).toFixed(2), "data-source": l.source, "data-target": l.target,
        "data-weight": l.weight });
      lines.push([l, line]);
      gl.appendChild(line);
    }
    const info = el("div.card.graph-info", { "data-testid": "graph-info" }, el("p.muted", { text: "hover or click a node" }));
    let pinned = null;
    const show = (n) => {
      const inc = g.links.filter((l) => l.target === n.node_id).sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 8);
      const out = g.links.filter((l) => l.source === n.node_id).sort((a, b) => Math.abs(b.weight) - Math.abs(a.weight)).slice(0, 8);
      const name = (id) => (byId[id] ? `${id} ${byId[id].clerp || ""}`.trim() : id);
      const v = (k, label, x) => el("div.stat", { "data-testid": "info-" + k, "data-value": JSON.stringify(x) },
        el("div.k", { text: label }), el("div.v", { text: typeof x === "number" ? A.fmt(x) : String(x ?? "-") }));
      info.replaceChildren(el("div.stats", {}, v("id", "node", n.node_id), v("type", "type", n.feature_type),
        v("layer", "layer", n.layer), v("pos", "position", n.ctx_idx), v("activation", "activation", n.activation),
        v("influence", "influence", n.influence), n.feature_type === "logit" ? v("prob", "probability", n.token_prob) : null),
      n.clerp ? el("p", { "data-testid": "info-clerp", text: n.clerp }) : null,
      el("div.cols", {}, edgeList("top incoming edges", inc, (e) => name(e.source), "info-in"),
        edgeList("top outgoing edges", out, (e) => name(e.target), "info-out")));
      for (const [l, line] of lines) line.classList.toggle("hot", l.source === n.node_id || l.target === n.node_id);
    };
    for (const n of g.nodes) {
      const p = L.at.get(n);
      const kind = TYPES[n.feature_type] || "lat";
      const c = svg("circle", { cx: p.x, cy: p.y, r: n.is_target_logit ? 9 : 6, class: `node ${kind}` + (n.is_target_logit ? " target" : ""),
        "data-node-id": n.node_id, "data-testid": n.is_target_logit ? "target-node" : "graph-node" });
      const tip = svg("title");
      tip.textContent = `${n.node_id}: ${n.clerp || n.feature_type}`;
      c.appendChild(tip);
      c.addEventListener("mouseenter", () => { if (!pinned) show(n); });
      c.addEventListener("click", () => {
        if (pinned) pinned.classList.remove("pinned");
        pinned = c;
        c.classList.add("pinned");
        show(n);
      });
      gn.appendChild(c);
    }
    root.append(ga, gl, gn);
    const m = g.metadata;
    const target = g.nodes.find((n) => n.is_target_logit);
    return el("div", {}, el("h1", { text: `attribution graph ${g.slug}`, "data-testid": "graph-title" }),
      el("p.muted", { text: `${JSON.stringify(m.prompt || "")} - ${g.nodes.length} nodes, ${g.links.length} links` +
        (target ? ` - target ${target.clerp}` : "") + (m.scan ? ` - ${m.scan}` : "") }),
      g.truncated ? el("p.err", { "data-testid": "graph-truncated", text: `showing the ${g.nodes.length} most influential of ` +
        `${g.truncated.nodes} nodes and ${g.links.length} of ${g.truncated.links} links (server limits)` }) : null,
      el("p.muted", { text: "x: context position; y: layer (tokens at the bottom, logits on top). Links: width |weight|, " +
        "orange positive, blue negative. The target logit is outlined." }),
      el("div.graph-wrap", {}, root), info);
  };
})(window.actlab);
