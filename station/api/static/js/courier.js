/* Courier handheld: log in with id + PIN, open a session, scan or type each waybill, and
 * watch where it should go (guided) or where the sensor saw it land (free). The session is
 * polled every 500 ms: placements come from shelf sensors, not from this page. When the station
 * cannot tell whose parcel a sensed put is (another courier's slot lit beside it, a put
 * beside the lit slot, a sensor that disagreed), the parcel is "unverified": no pickup code
 * is sent until the courier answers here whether it is in the slot named (docs/adr/0095). */
"use strict";

(() => {
  const { $, el, api } = PS;
  const PAGE = "courier";
  const SESSION_KEY = "ps.courier.session";
  const STATE_TEXT = { waiting: "等待放入 waiting", placed: "已放入 placed", failed: "失败 failed",
                       unverified: "请确认格口 confirm the slot" };
  let token = PS.getToken(PAGE);
  let session = null;      // {session_id, mode, colour}
  let lastPending = null;  // pending id of the newest scan, to follow on the target panel
  let pollTimer = null;

  function showError(r) {
    const b = (r && r.body) || {};
    const box = $("#error");
    box.replaceChildren(el("strong", {}, b.error || `HTTP ${r.status}`), ": ", b.message || "");
    if (Array.isArray(b.problems)) box.append(" (" + b.problems.map(p => `${p.field}: ${p.problem}`).join("; ") + ")");
    box.className = "msg error";
    box.dataset.code = b.error || String(r.status);
  }
  function clearError() { $("#error").classList.add("hidden"); $("#error").removeAttribute("data-code"); }

  function view(name) {
    for (const id of ["login", "open", "work"]) $("#" + id).classList.toggle("hidden", id !== name);
    $("#logout").classList.toggle("hidden", name === "login");
    const info = PS.tokenInfo(token);
    $("#who").textContent = info && name !== "login" ? info.subject : "";
  }

  /** A 401 means the token expired or the key changed: back to the login form. */
  function authLost(r) {
    if (r.status !== 401) return false;
    logout();
    showError(r);
    return true;
  }

  async function login(e) {
    e.preventDefault();
    clearError();
    const r = await api(null, "POST", "/api/courier/login", { courier_id: $("#courier-id").value.trim(), pin: $("#pin").value });
    $("#pin").value = "";
    if (!r.ok) { showError(r); return; }
    token = r.body.token;
    PS.setToken(PAGE, token);
    view("open");
  }

  function logout() {
    PS.setToken(PAGE, "");
    localStorage.removeItem(SESSION_KEY);
    token = ""; session = null;
    clearInterval(pollTimer);
    view("login");
  }

  async function openSession(e) {
    e.preventDefault();
    clearError();
    const r = await api(token, "POST", "/api/courier/sessions", { mode: $("#mode").value });
    if (authLost(r)) return;
    if (!r.ok) { showError(r); return; }
    startWork(r.body);
  }

  function startWork(s) {
    session = s;
    localStorage.setItem(SESSION_KEY, JSON.stringify(s));
    $("#session-id").textContent = s.session_id;
    $("#session-mode").textContent = s.mode === "free" ? "自由 free" : "指定 guided";
    $("#session-colour").style.background = s.colour || "#fff";
    $("#items").replaceChildren();
    $("#target").classList.add("hidden");
    view("work");
    $("#waybill").focus();
    clearInterval(pollTimer);
    pollTimer = setInterval(poll, 500);
    poll();
  }

  async function scan(e) {
    e.preventDefault();
    clearError();
    const body = { waybill: $("#waybill").value.trim(), phone: $("#phone").value.trim(), size: $("#size").value };
    $("#scan-btn").disabled = true;
    const r = await api(token, "POST", `/api/courier/sessions/${encodeURIComponent(session.session_id)}/scans`, body);
    $("#scan-btn").disabled = false;
    if (authLost(r)) return;
    if (!r.ok) { showError(r); return; }
    lastPending = r.body.pending_id;
    showTarget({ state: "waiting", slot: r.body.slot, waybill: r.body.waybill });
    if (r.body.repeated) {
      const box = $("#error");
      box.replaceChildren("已扫描过，格口不变 · scanned before: same slot as then");
      box.className = "msg info";
      box.dataset.code = "repeated";
    }
    $("#waybill").value = ""; $("#phone").value = "";
    $("#waybill").focus();
    poll();
  }

  /** The big line the courier looks at: where to put the parcel, then where it landed. */
  function showTarget(item) {
    const t = $("#target");
    t.classList.remove("hidden");
    t.dataset.state = item.state;
    t.dataset.slot = item.slot || "";
    if (item.state === "placed") {
      t.replaceChildren(`✓ ${item.slot}`, el("small", {}, `已放入 ${item.slot} · placed in ${item.slot} (${item.waybill})`));
      t.dataset.tone = "ok";
    } else if (item.state === "unverified") {
      const slot = item.confirm_slot;
      const yes = el("button", { class: "primary", id: "confirm-yes", type: "button" }, `是，在 ${slot} · Yes, it is in ${slot}`);
      const no = el("button", { class: "danger", id: "confirm-no", type: "button" }, `不在 · No, it is not there`);
      yes.addEventListener("click", () => confirmSlot(item.id, slot));
      no.addEventListener("click", () => confirmSlot(item.id, null));
      t.replaceChildren(`? ${slot}`,
        el("small", {}, `包裹在 ${slot} 吗？确认前不发取件码 · Is this parcel in slot ${slot}? No pickup code is sent until you confirm (${item.waybill})`),
        el("div", { class: "row" }, yes, no));
      t.dataset.tone = "warn";
    } else if (item.state === "failed") {
      t.replaceChildren(`✗ ${item.slot || ""}`, el("small", {}, `失败 failed: ${item.reason || ""} (${item.waybill})`));
      t.dataset.tone = "bad";
    } else if (item.slot && session.mode !== "free") {
      t.replaceChildren(`→ ${item.slot}`, el("small", {}, `请放入亮灯格口 ${item.slot} · put it in the lit slot ${item.slot} (${item.waybill})`));
      t.dataset.tone = "warn";
    } else {
      t.replaceChildren("→ ?", el("small", {}, `放入任意空格口，传感器会识别 · put it in any free slot; the sensor will tell (${item.waybill})`));
      t.dataset.tone = "warn";
    }
  }

  /** The courier's answer: `slot` = "yes, it is in this slot", null = "no" (then put it in the lit slot). */
  async function confirmSlot(pendingId, slot) {
    clearError();
    const r = await api(token, "POST",
      `/api/courier/sessions/${encodeURIComponent(session.session_id)}/items/${encodeURIComponent(pendingId)}/confirm`, { slot });
    if (authLost(r)) return;
    if (!r.ok) { showError(r); return; }
    lastPending = pendingId;
    showTarget(r.body);
    poll();
  }

  async function poll() {
    if (!session) return;
    const r = await api(token, "GET", `/api/courier/sessions/${encodeURIComponent(session.session_id)}`);
    if (authLost(r)) return;
    if (!r.ok) {
      if (r.status === 404) { localStorage.removeItem(SESSION_KEY); session = null; clearInterval(pollTimer); view("open"); }
      return;
    }
    const items = r.body.items || [];
    $("#items").replaceChildren(...items.map(it => el("tr", { dataset: { pending: it.id, state: it.state, waybill: it.waybill } },
      el("td", {}, it.waybill), el("td", {}, it.size || ""),
      el("td", { class: "slot-cell" }, it.state === "unverified" ? `${it.confirm_slot}?` : (it.slot || "—")),
      el("td", {}, el("span", { class: "state state-" + it.state }, STATE_TEXT[it.state] || it.state)),
      el("td", { class: "reason" }, it.reason || ""))));
    const n = s => items.filter(i => i.state === s).length;
    $("#counts").textContent = `${n("placed")} placed · ${n("waiting")} waiting · ${n("unverified")} to confirm · ${n("failed")} failed`;
    // a parcel to confirm comes first, whichever scan is newest: its code waits for the answer
    const ask = items.find(i => i.state === "unverified");
    const newest = ask || items.find(i => i.id === lastPending);
    if (newest) showTarget(newest);
    if (r.body.state !== "open") {
      clearInterval(pollTimer);
      localStorage.removeItem(SESSION_KEY);
      $("#target").classList.remove("hidden");
      $("#target").replaceChildren("会话已结束", el("small", {}, "The session is closed."));
    }
  }

  async function closeSession() {
    if (!session) return;
    const r = await api(token, "POST", `/api/courier/sessions/${encodeURIComponent(session.session_id)}/close`);
    if (authLost(r)) return;
    if (!r.ok) { showError(r); return; }
    await poll();
    clearInterval(pollTimer);
    localStorage.removeItem(SESSION_KEY);
    session = null;
    view("open");
  }

  document.addEventListener("DOMContentLoaded", async () => {
    PS.largeText("courier");
    $("#login-form").addEventListener("submit", login);
    $("#open-form").addEventListener("submit", openSession);
    $("#scan-form").addEventListener("submit", scan);
    // A handheld scanner types the waybill and presses Enter: go on to the phone, not submit.
    $("#waybill").addEventListener("keydown", e => {
      if (e.key === "Enter" && !$("#phone").value.trim()) { e.preventDefault(); $("#phone").focus(); }
    });
    $("#close-btn").addEventListener("click", closeSession);
    $("#logout").addEventListener("click", logout);
    if (!token) { view("login"); return; }
    const me = await api(token, "GET", "/api/courier/me");
    if (!me.ok) { logout(); return; }
    const saved = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    if (saved) startWork(saved); else view("open");
  });
})();
