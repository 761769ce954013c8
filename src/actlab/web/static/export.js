// actlab explorer, static export only: expands the compact feature pages (compact.py) into the served JSON shape.
"use strict";
(function (A) {
  const memo = {};
  A.loadData = (key) => (memo[key] = memo[key] || A.get("/api/" + key));

  A.staticFeature = async function (sid, j) {
    const [ov, list, vocab] = await Promise.all([A.loadData(`sae/${sid}`), A.loadData(`sae/${sid}/features`),
      A.loadData(`sae/${sid}/vocab`)]);
    const shard = await A.loadData(`sae/${sid}/fs/${Math.floor(j / ov.export.shard)}`).catch(() => ({}));
    const f = shard[j];
    if (!f) throw new Error(`not in this export: feature ${j}`);
    const C = ov.export.rows_chunk;
    const need = new Set();
    for (const x of f.t.concat(f.q)) for (let r = x[0]; r < x[0] + x[1]; r++) need.add(Math.floor(r / C));
    const chunks = {};
    await Promise.all([...need].map(async (c) => { chunks[c] = await A.loadData(`sae/${sid}/rows/${c}`); }));
    const piece = (t) => (t in vocab ? vocab[t] : "#" + t);
    const ex = (x) => {
      const acts = new Array(x[1]).fill(0);
      for (const [i, v] of x[3]) acts[i] = v;
      const tokens = acts.map((_, i) => piece(chunks[Math.floor((x[0] + i) / C)][(x[0] + i) % C]));
      return { tokens, acts, max: Math.max(...acts), peak: x[2], quantile: x.length > 4 ? x[4] : -1, start: x[0] };
    };
    const byId = (i) => list.features[i] || { explanation: "", top_token: "" };
    const counts = new Array(ov.export.hist_edges.length - 1).fill(0);
    for (const [b, n] of f.h) counts[b] = n;
    return {
      sae: sid, id: j, n_features: ov.n_features, site: ov.site, count: f.c, n_tokens: ov.n_tokens,
      density: f.c / Math.max(1, ov.n_tokens), max: f.m, mean: f.u,
      hist: { edges: ov.export.hist_edges, counts }, top: f.t.map(ex), quantiles: f.q.map(ex),
      explanation: f.e || null, scores: f.s || {}, steerable: false,
      nearest: (f.n || []).map(([i, cos]) => ({ id: i, cos, explanation: byId(i).explanation, top_token: byId(i).top_token })),
      promoted: f.p ? { top: f.p[0].map((t, i) => [piece(t), f.p[1][i]]), bottom: f.p[2].map((t, i) => [piece(t), f.p[3][i]]) } : null,
    };
  };
})(window.actlab);
