// actlab explorer, static export only: unpacks the packed data files (compact.py: 15 bits per UTF-16 character ->
// gzip -> JSON or integer columns) and expands the compact feature pages into the served JSON shape.
"use strict";
(function (A) {
  const memo = {};
  A.loadData = (key) => (memo[key] = memo[key] || A.get("/api/" + key));

  // text of 15-bit characters (U+4E00 + value) -> the n bytes it carries
  function unb15(s, n) {
    const out = new Uint8Array(n);
    let acc = 0, bits = 0, k = 0;
    for (let i = 0; i < s.length && k < n; i++) {
      acc = (acc << 15) | (s.charCodeAt(i) - 0x4e00);
      bits += 15;
      while (bits >= 8 && k < n) { bits -= 8; out[k++] = (acc >>> bits) & 255; }
      acc &= (1 << bits) - 1;
    }
    if (k !== n) throw new Error(`packed data ends early (${k} of ${n} bytes)`);
    return out;
  }

  async function gunzip(bytes) {
    const s = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Uint8Array(await new Response(s).arrayBuffer());
  }

  // byte-plane columns (Packer.pack) -> {name: Float64Array}
  function columns(raw, spec) {
    const cols = {};
    let off = 0;
    for (const [name, n, w] of spec) {
      const a = new Float64Array(n);
      for (let b = 0, scale = 1; b < w; b++, scale *= 256) {
        const base = off + b * n;
        for (let i = 0; i < n; i++) a[i] += raw[base + i] * scale;
      }
      cols[name] = a;
      off += n * w;
    }
    if (off !== raw.length) throw new Error(`packed columns hold ${off} of ${raw.length} bytes`);
    return cols;
  }

  A.unpack = async function (v) {
    const raw = await gunzip(unb15(v.$pack, v.n));
    if (v.fmt === "json") return JSON.parse(new TextDecoder().decode(raw));
    return { cols: columns(raw, v.spec), x: v.x || {} };
  };

  const TEN = Array.from({ length: 23 }, (_, k) => parseFloat("1e" + k));   // exact powers of ten
  // the exact decimal m * 10^e as the double JSON would give (one correctly rounded operation)
  const dec = (m, e) => (e >= 0 ? (e < 23 ? m * TEN[e] : parseFloat(m + "e" + e)) : (e > -23 ? m / TEN[-e] : parseFloat(m + "e" + e)));

  // a shard's columns -> {id: compact feature dict}, read in the order compact.pack_shard wrote them
  function readShard({ cols, x }) {
    const pos = {};
    const u = (name) => { const p = pos[name] || 0; pos[name] = p + 1; return cols[name][p]; };
    const i = (name) => { const v = u(name); return v % 2 ? -(v + 1) / 2 : v / 2; };
    const f = (name) => { const m = i(name); return dec(m, i(name + "^")); };
    const out = {};
    const n = cols.id ? cols.id.length : 0;
    for (let r = 0; r < n; r++) {
      const j = u("id");
      const o = { c: u("c"), m: f("m"), u: f("m"), h: [], t: [], q: [] };
      let prev = 0;
      for (let k = u("hn"); k > 0; k--) { prev += u("hb"); o.h.push([prev, u("hc")]); }
      const nt = u("nt"), nq = u("nq");
      for (let k = 0; k < nt + nq; k++) {
        const ex = [u("es"), u("el"), u("ep"), []];
        let p = 0;
        for (let z = u("ez"); z > 0; z--) { p += u("ei"); ex[3].push([p, f("a")]); }
        if (k >= nt) ex.push(i("eq"));
        (k < nt ? o.t : o.q).push(ex);
      }
      o.n = [];
      for (let k = u("nn"); k > 0; k--) o.n.push([u("ni"), f("n")]);
      if (u("pp")) {
        o.p = [];
        for (let s = 0; s < 2; s++) {
          const ids = [], vals = [];
          for (let k = u("pn"); k > 0; k--) { ids.push(u("pi")); vals.push(f("p")); }
          o.p.push(ids, vals);
        }
      }
      if (x[j]) { o.e = x[j].e; o.s = x[j].s; }
      out[j] = o;
    }
    return out;
  }

  const shards = {};
  const loadShard = (sid, s) => (shards[sid + "/" + s] = shards[sid + "/" + s] ||
    A.loadData(`sae/${sid}/fs/${s}`).then(readShard, () => ({})));
  const rows = {};
  const loadRows = (sid, c) => (rows[sid + "/" + c] = rows[sid + "/" + c] ||
    A.loadData(`sae/${sid}/rows/${c}`).then((v) => v.cols.t));

  A.staticFeature = async function (sid, j) {
    const [ov, list, vocab] = await Promise.all([A.loadData(`sae/${sid}`), A.loadData(`sae/${sid}/features`),
      A.loadData(`sae/${sid}/vocab`)]);
    const f = (await loadShard(sid, Math.floor(j / ov.export.shard)))[j];
    if (!f) throw new Error(`not in this export: feature ${j}`);
    const C = ov.export.rows_chunk;
    const need = new Set();
    for (const x of f.t.concat(f.q)) for (let r = x[0]; r < x[0] + x[1]; r++) need.add(Math.floor(r / C));
    const chunks = {};
    await Promise.all([...need].map(async (c) => { chunks[c] = await loadRows(sid, c); }));
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
