/* Shared by the three pages: the stored credential, API calls with JSON errors, small DOM
 * helpers.
 *
 * No credential is ever taken from the address bar (ADR 0130): the courier page keeps the
 * token its PIN login returned, the kiosk the device credential it got by pairing, each in
 * localStorage under a per-page key; the operator console holds an HttpOnly session cookie
 * that scripts cannot read at all. */
"use strict";

const PS = (() => {
  function tokenKey(page) { return "ps.token." + page; }

  function setToken(page, token) {
    if (token) localStorage.setItem(tokenKey(page), token);
    else localStorage.removeItem(tokenKey(page));
  }

  function getToken(page) { return localStorage.getItem(tokenKey(page)) || ""; }

  /** Decode the role and subject from a ps1 token (display only; the server checks it). */
  function tokenInfo(token) {
    const parts = (token || "").split(".");
    if (parts.length !== 5 || parts[0] !== "ps1") return null;
    return { role: parts[1], subject: parts[2], expires: Number(parts[3]) };
  }

  /**
   * Call the API with the page's token. Resolves to {ok, status, body, headers}; never
   * rejects on HTTP errors (network failures give status 0), so callers show messages.
   */
  async function api(token, method, path, body, opts) {
    const headers = { "Accept": "application/json" };
    if (token) headers["Authorization"] = "Bearer " + token;
    // a page's own timer, not a person: it does not keep an operator session from idling out
    if (opts && opts.background) headers["X-PS-Background"] = "1";
    let payload;
    if (body instanceof Blob) { payload = body; headers["Content-Type"] = body.type || "image/jpeg"; }
    else if (body !== undefined && body !== null) { payload = JSON.stringify(body); headers["Content-Type"] = "application/json"; }
    let res;
    try {
      res = await fetch(path, { method, headers, body: payload, cache: "no-store", signal: opts && opts.signal });
    } catch (err) {
      return { ok: false, status: 0, body: { error: "network", message: String(err) }, headers: new Headers() };
    }
    let data = null;
    const type = res.headers.get("content-type") || "";
    if (opts && opts.raw) data = await res.blob();
    else if (type.includes("json")) { try { data = await res.json(); } catch (_) { data = null; } }
    else data = await res.text();
    return { ok: res.ok, status: res.status, body: data, headers: res.headers };
  }

  /** Fetch with the token and save the answer as a file (links cannot carry a header). */
  async function download(token, path, filename) {
    const r = await api(token, "GET", path, null, { raw: true });
    if (!r.ok) return r;
    const url = URL.createObjectURL(r.body);
    const a = document.createElement("a");
    a.href = url; a.download = filename;
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    return r;
  }

  function $(sel, root) { return (root || document).querySelector(sel); }
  function $all(sel, root) { return Array.from((root || document).querySelectorAll(sel)); }

  /** Build an element: el("div", {class: "x", dataset: {slot: "1"}}, "text", child). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "dataset") Object.assign(node.dataset, v);
      else if (k === "style") Object.assign(node.style, v);
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function fmtTime(ts) {
    if (!ts) return "";
    const d = typeof ts === "number" ? new Date(ts * 1000) : new Date(ts);
    if (isNaN(d)) return String(ts);
    return d.toLocaleString();
  }

  /** Text colour that reads on `hex` (black on light colours, white on dark). */
  function inkFor(hex) {
    const m = /^#?([0-9a-f]{6})$/i.exec(hex || "");
    if (!m) return "#000";
    const n = parseInt(m[1], 16);
    // WCAG relative luminance: the ink with the higher contrast ratio on this colour
    const lin = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    const L = 0.2126 * lin((n >> 16) & 255) + 0.7152 * lin((n >> 8) & 255) + 0.0722 * lin(n & 255);
    const dark = 0.0056;  // #111
    return (L + 0.05) / (dark + 0.05) >= 1.05 / (L + 0.05) ? "#111" : "#fff";
  }

  /**
   * The large-text / high-contrast mode of a personal screen (courier handheld, operator
   * console): the `#large-text` button switches it and this browser remembers it for `page`;
   * until then it follows the system's "more contrast" setting. (The shared kiosk keeps it
   * for one visit only: kiosk.js.)
   */
  function largeText(page) {
    const key = "ps.large." + page;
    const button = $("#large-text");
    const set = on => {
      document.documentElement.classList.toggle("large-text", on);
      if (button) button.setAttribute("aria-pressed", String(on));
    };
    const stored = localStorage.getItem(key);
    set(stored === null ? window.matchMedia("(prefers-contrast: more)").matches : stored === "1");
    if (button) button.addEventListener("click", () => {
      const on = !document.documentElement.classList.contains("large-text");
      set(on);
      localStorage.setItem(key, on ? "1" : "0");
    });
  }

  return { setToken, getToken, tokenInfo, api, download, $, $all, el, fmtTime, inkFor, largeText };
})();
