/* The demo's virtual room: LEDs as the simulated shelves show them, a click is a hand
 * putting or taking a parcel, the SMS inbox, and the exit's document camera. Demo only
 * (served by `shelf-sim demo`, never by `station run`). */
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  let exitToken = "";

  async function call(method, url, body) {
    const res = await fetch(url, {
      method, headers: body ? { "Content-Type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    return { ok: res.ok, status: res.status, body: data };
  }

  function showError(text) {
    const el = $("room-error");
    el.textContent = text || "";
    el.classList.toggle("hidden", !text);
  }

  const buttons = new Map();   // slot -> its button: built once, updated in place (a click
                               // never lands on a button that a refresh just replaced)

  function slotButton(s) {
    const b = document.createElement("button");
    b.className = "slot-btn";
    b.type = "button";
    b.dataset.slot = s.slot;
    b.appendChild(document.createTextNode(s.slot));
    const c = document.createElement("span");
    c.className = "count";
    b.appendChild(c);
    b.addEventListener("click", () => hand(s.slot));
    return b;
  }

  function updateButton(b, s) {
    b.dataset.count = String(s.count);
    b.dataset.lit = String(s.colours.length > 0);
    b.dataset.colours = s.colours.join(",");
    const colour = s.colours[0] || "";
    b.style.background = colour || "";
    b.style.color = colour ? "#000" : "";
    b.setAttribute("aria-label", `slot ${s.slot}, ${s.count} parcel(s)` + (colour ? `, lit ${s.colours.join(" ")}` : ""));
    b.querySelector(".count").textContent = s.count ? "■".repeat(Math.min(s.count, 4)) : "·";
  }

  function renderRoom(room) {
    const root = $("shelves");
    if (!buttons.size) {
      for (const shelf of room.shelves) {
        const box = document.createElement("div");
        box.className = "shelf";
        const h = document.createElement("h3");
        h.textContent = `货架 ${shelf.number} ${shelf.outbound ? "寄件 outbound" : ""} (${shelf.device})`;
        const grid = document.createElement("div");
        grid.className = "shelf-grid";
        grid.style.gridTemplateColumns = `repeat(${shelf.columns}, minmax(2.6rem, 1fr))`;
        for (const s of shelf.slots) {
          const b = slotButton(s);
          buttons.set(s.slot, b);
          grid.appendChild(b);
        }
        box.append(h, grid);
        root.appendChild(box);
      }
    }
    for (const shelf of room.shelves) {
      for (const s of shelf.slots) {
        const b = buttons.get(s.slot);
        if (b) updateButton(b, s);
      }
    }
    const held = $("held");
    const shown = Array.from(held.children).map((li) => li.dataset.waybill).join(",");
    if (shown !== room.held.join(",")) {
      held.replaceChildren(...room.held.map((w) => {
        const li = document.createElement("li");
        li.textContent = w;
        li.dataset.waybill = w;
        return li;
      }));
    }
    $("exit-btn").disabled = room.held.length === 0;
  }

  let smsShown = "";

  function renderSms(messages) {
    const key = JSON.stringify(messages);
    if (key === smsShown) return;
    smsShown = key;
    $("sms").replaceChildren(...messages.map((m) => {
      const li = document.createElement("li");
      li.dataset.kind = m.kind;
      li.dataset.to = m.to;
      const head = document.createElement("div");
      head.textContent = `${m.to} · ${m.kind}`;
      li.appendChild(head);
      if (m.code) {
        const code = document.createElement("div");
        code.className = "code";
        code.textContent = m.code;
        li.appendChild(code);
      }
      const text = document.createElement("details");
      const summary = document.createElement("summary");
      summary.textContent = "全文 Full text";
      const body = document.createElement("div");
      body.className = "muted";
      body.textContent = m.text || "";
      text.append(summary, body);
      li.appendChild(text);
      return li;
    }));
  }

  async function refresh() {
    const [room, sms] = await Promise.all([call("GET", "/demo/api/room"), call("GET", "/demo/api/sms")]);
    if (room.ok) renderRoom(room.body);
    if (sms.ok) renderSms(sms.body.messages);
  }

  async function hand(slot) {
    const what = $("hand").value;
    const res = await call("POST", `/demo/api/room/${encodeURIComponent(slot)}/${what}`);
    showError(res.ok ? "" : (res.body && res.body.detail) || `HTTP ${res.status}`);
    await refresh();
  }

  async function showAtExit() {
    const waybills = Array.from(document.querySelectorAll("#held li")).map((li) => li.dataset.waybill);
    if (!waybills.length) return;
    if (!exitToken) {
      const t = await call("GET", "/demo/api/exit-token");
      exitToken = t.ok ? t.body.token : "";
    }
    const res = await fetch("/api/exit/waybills", {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + exitToken },
      body: JSON.stringify({ waybills }),
    });
    const body = await res.json().catch(() => ({}));
    const out = $("exit-result");
    out.classList.remove("hidden");
    out.dataset.allowed = String(res.ok && body.allowed === true);
    out.classList.toggle("error", !(res.ok && body.allowed));
    out.textContent = res.ok ? `${body.allowed ? "出口已开 Exit open" : "出口未开 Exit stays locked"}: ${body.message || ""}`
      : (body.message || `HTTP ${res.status}`);
    if (res.ok && body.allowed) await call("POST", "/demo/api/exit/shown", { waybills });
    await refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("exit-btn").addEventListener("click", showAtExit);
    refresh();
    setInterval(refresh, 700);
  });
})();
