// actlab explorer core: data access (server API or the static export's data files), routing, DOM helpers.
"use strict";
const A = (window.actlab = window.actlab || {});
A.static = !!window.ACTLAB_STATIC;
A.pages = {};
A._pending = {};

// The static export's data files call this with the API path they stand for.
window.ACTLAB_DATA = function (key, value) {
  const p = A._pending[key];
  if (p) { delete A._pending[key]; p.resolve(value); }
};

function dataFile(path) {
  return "data/" + path.replace(/^\/api\//, "").split("?")[0] + ".js";
}

// the static export's feature list is columnar (smaller): rows again here
function columns(v) {
  const features = v.density.map((d, i) => ({ id: i, density: d, max: v.max[i], top_token: v.top_token[i], explanation: v.explanation[i] }));
  return { total: features.length, offset: 0, features };
}

A.get = function (path) {
  if (!A.static) return A.request("GET", path);
  const m = path.match(/^\/api\/sae\/([^/?]+)\/feature\/(\d+)$/);
  if (m && A.staticFeature) return A.staticFeature(decodeURIComponent(m[1]), Number(m[2]));   // export.js
  const key = path.replace(/^\/api\//, "").split("?")[0];
  return new Promise((resolve, reject) => {
    const done = (v) => resolve(v && v.columnar ? columns(v) : v);
    // a packed file (compact.py) is unpacked by export.js first
    A._pending[key] = { resolve: (v) => (v && v.$pack ? A.unpack(v).then(done, reject) : done(v)), reject };
    const s = document.createElement("script");
    s.src = dataFile(path);
    s.onerror = () => { delete A._pending[key]; reject(new Error("not in this export: " + key)); };
    s.onload = () => s.remove();
    document.head.appendChild(s);
  });
};

A.post = function (path, body) {
  if (A.static) return Promise.reject(new Error("live pages need the server (actlab serve)"));
  return A.request("POST", path, body);
};

A.request = async function (method, path, body) {
  const opts = { method, headers: {} };
  if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["content-type"] = "application/json"; }
  const t0 = performance.now();
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  A.status(method + " " + path.split("?")[0] + " " + r.status + " in " + Math.round(performance.now() - t0) + " ms");
  if (!r.ok) {
    let d = data.detail;
    if (Array.isArray(d)) d = d.map((x) => (x.loc || []).slice(1).join(".") + ": " + x.msg).join("; ");
    throw new Error(d || ("HTTP " + r.status));
  }
  return data;
};

A.status = function (text) { const s = document.getElementById("status"); if (s) s.textContent = text; };

// el("div.card", {title: "x"}, child, "text", ...) -> element
A.el = function (tag, attrs, ...kids) {
  const [name, ...cls] = tag.split(".");
  const e = document.createElement(name);
  if (cls.length) e.className = cls.join(" ");
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (k === "text") e.textContent = v;
    else if (k === "style") e.style.cssText = v;   // CSSOM, allowed by the CSP (a style attribute is not)
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined && k !== false)
    e.appendChild(typeof k === "string" || typeof k === "number" ? document.createTextNode(String(k)) : k);
  return e;
};

// 4 significant digits, trailing zeros dropped ("6.933", "0.003906", "12")
A.fmt = function (x) {
  if (x === null || x === undefined || Number.isNaN(Number(x))) return "-";
  return String(parseFloat(Number(x).toPrecision(4)));
};

A.stat = (k, v, id) => A.el("div.stat", { "data-testid": id }, A.el("div.k", { text: k }), A.el("div.v", { text: String(v) }));
A.error = (e) => A.el("div.err", { "data-testid": "error", text: String(e.message || e) });
A.link = (href, text, attrs) => A.el("a", Object.assign({ href, text: String(text) }, attrs || {}));

A.query = function () {
  const h = location.hash.replace(/^#/, "");
  const i = h.indexOf("?");
  return i < 0 ? {} : Object.fromEntries(new URLSearchParams(h.slice(i + 1)));
};

A.index = null;
A.loadIndex = async function () {
  if (!A.index) A.index = await A.get("/api/index");
  return A.index;
};
A.ofKind = (kind) => (A.index ? A.index.artifacts.filter((a) => a.kind === kind) : []);

A.route = async function () {
  const main = document.getElementById("main");
  const h = location.hash.replace(/^#\/?/, "").split("?")[0];
  const parts = h.split("/").filter(Boolean).map(decodeURIComponent);
  const page = A.pages[parts[0] || "home"] || A.pages.home;
  main.replaceChildren(A.el("p.muted", { text: "loading..." }));
  try {
    await A.loadIndex();
    const node = await page(...parts.slice(1));
    main.replaceChildren(node);
    main.setAttribute("data-page", parts[0] || "home");
  } catch (e) {
    main.replaceChildren(A.error(e));
    main.setAttribute("data-page", "error");
  }
};

window.addEventListener("hashchange", A.route);
window.addEventListener("DOMContentLoaded", () => {
  if (A.static) for (const a of document.querySelectorAll("#nav a")) a.remove();
  A.route();
});
