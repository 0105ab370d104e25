/* Operator console: the live room (shelf map, doors, devices, alarms), the event log with
 * filters, chain verification, export, and replay of any past instant.
 *
 * The operator logs in with id + password (ADR 0130); the station answers with an HttpOnly,
 * SameSite=Strict session cookie that every call of this page (and the server-sent event
 * stream) carries by itself. The page never sees the session id, and no credential is ever
 * in the address bar. A 401 (session idle, revoked, logged out) brings the login form back;
 * a viewer's page hides the admin controls, which the station refuses them anyway. */
"use strict";

(() => {
  const { $, el, api } = PS;
  const token = "";  // the session cookie authenticates; no bearer token on this page
  const st = {
    live: null, lastSeq: 0, replaySeq: null, replayReq: 0, playing: false,
    refreshTimer: null, sliderTimer: null, source: null, filtered: false, streamSeq: 0,
    verifyTimer: null, verifiedAt: 0, settleTimer: null,
  };

  // ---------- helpers ----------------------------------------------------------------------

  function showError(r) {
    if (r && r.status === 401) { showLogin(true); return; }
    const b = (r && r.body) || {};
    const box = $("#error");
    box.textContent = `${b.error || "HTTP " + r.status}: ${b.message || ""}`;
    box.classList.remove("hidden");
    clearTimeout(showError.timer);
    showError.timer = setTimeout(() => box.classList.add("hidden"), 8000);
  }

  /** datetime-local value (local time) -> the log's UTC ISO form with microseconds. */
  function isoFromLocal(value, endOfSecond) {
    if (!value) return "";
    const d = new Date(value);
    if (isNaN(d)) return "";
    // The log's times have microseconds; "until 10:00:05" means up to 10:00:05.999999.
    return d.toISOString().replace(/\.(\d{3})Z$/, (_, ms) =>
      "." + (endOfSecond && ms === "000" ? "999999" : ms + (endOfSecond ? "999" : "000")) + "Z");
  }

  function localFromIso(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return "";
    const pad = n => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  // ---------- the room ---------------------------------------------------------------------

  /** What the shelf controllers report they show and sense, by slot address (live only). */
  function reportedBySlot(view) {
    const out = {};
    if (!view.reported) return out;
    for (const sh of view.shelves) {
      const rep = (view.reported[sh.device] || {}).reported;
      if (!rep) continue;
      const key = (row, col) => `${sh.number}-${row}-${String(col).padStart(2, "0")}`;
      for (const l of rep.lights || []) (out[key(l.row, l.col)] ||= {}).colours = (l.colours || []).map(c => c.toUpperCase());
      for (const o of rep.occupied || []) (out[key(o.row, o.col)] ||= {}).count = o.count;
      for (const sl of sh.slots) {
        const r = (out[sl.slot] ||= {});
        r.colours ||= [];
        r.count ??= 0;
      }
    }
    return out;
  }

  function renderSlot(s, rep) {
    const light = s.light || null;
    const colours = light ? light.colours : [];
    const pattern = light ? light.pattern : "";
    const cls = ["slot"];
    if (s.parcels > 0) cls.push("occupied");
    if (colours.length) cls.push("lit");
    if (pattern && pattern !== "solid") cls.push("pattern-" + pattern);
    // The database's view against the device's: an LED that shows something else, or a
    // sensor that feels a different number of parcels, is worth a look.
    let note = "";
    if (rep) {
      const want = colours.map(c => c.toUpperCase()).join(",");
      const shows = rep.colours.join(",");
      if (want !== shows) note += ` · LED shows ${shows || "off"}`;
      if (rep.count !== s.parcels) note += ` · sensor feels ${rep.count}`;
      if (note) cls.push("mismatch");
    }
    const node = el("div", {
      class: cls.join(" "),
      dataset: { slot: s.slot, parcels: String(s.parcels), colours: colours.join(","), pattern: pattern || "",
                 mismatch: note ? note.slice(3) : null },
      title: `${s.slot} · ${s.size} · ${s.parcels}/${s.capacity}` + (colours.length ? ` · ${colours.join("/")} ${pattern}` : "") + note,
    }, el("span", { class: "addr" }, `${s.row}-${String(s.col).padStart(2, "0")}`),
       s.parcels ? el("span", { class: "count" }, s.parcels > 1 ? `■${s.parcels}` : "■") : null);
    if (colours.length) {
      node.style.background = colours[0];
      node.style.color = PS.inkFor(colours[0]);
      node.style.setProperty("--c1", colours[0]);
      node.style.setProperty("--c2", colours[1] || colours[0]);
    }
    return node;
  }

  function renderShelves(view) {
    const reported = reportedBySlot(view);
    const shelves = view.shelves.map(sh => {
      const grid = el("div", { class: "shelf-grid" }, sh.slots.map(sl => renderSlot(sl, reported[sl.slot])));
      grid.style.gridTemplateColumns = `repeat(${sh.columns}, 44px)`;
      return el("div", { class: "shelf", dataset: { shelf: String(sh.number) } },
        el("h3", {}, `货架 ${sh.number} `, el("span", { class: "en" }, `shelf ${sh.number}${sh.outbound ? " · outbound 寄件" : ""} · ${sh.device}`)),
        grid);
    });
    $("#shelves").replaceChildren(...shelves);
  }

  const DOOR_TEXT = {
    "door.opened": ["开 open", "warn"], "door.closed": ["关 closed", "ok"], "door.locked": ["锁 locked", "ok"],
    "door.unlocked": ["解锁 unlocked", "warn"], "door.forced_open": ["强行打开 forced open", "bad"],
    "door.held_open": ["未关 held open", "bad"], "door.emergency_release": ["紧急释放 emergency", "bad"],
  };

  function renderDoors(view) {
    const rows = [];
    for (const [door, d] of Object.entries(view.doors || {})) {
      const [text, kind] = DOOR_TEXT[d.last] || [d.last || "–", "off"];
      const rep = view.reported && view.reported[door] && view.reported[door].reported;
      const now = rep ? el("span", { class: "muted", dataset: { reported: `${rep.locked ? "locked" : "unlocked"},${rep.open ? "open" : "closed"}` } },
        ` · 设备 device: ${rep.locked ? "锁 locked" : "未锁 unlocked"}, ${rep.open ? "开 open" : "关 closed"}${rep.emergency ? ", 紧急 emergency" : ""}`) : null;
      rows.push(el("span", {}, door), el("span", { dataset: { door, last: d.last || "" } },
        el("span", { class: "badge " + kind }, text), " ", el("span", { class: "muted" }, PS.fmtTime(d.at)), now));
    }
    $("#doors").replaceChildren(...rows);
  }

  function renderDevices(view) {
    const chips = Object.entries(view.devices || {}).sort().map(([id, d]) =>
      el("span", { class: "badge " + (d.online ? "ok" : "bad"), dataset: { device: id, online: String(d.online) },
                   title: d.boot_id ? "boot " + d.boot_id : "" }, `${id} ${d.online ? "在线 online" : "离线 offline"}`));
    $("#devices").replaceChildren(...chips);
  }

  function renderAlarms(view, replaying) {
    const alarms = view.alarms || [];
    if (!alarms.length) { $("#alarms").replaceChildren(el("span", { class: "muted" }, "无 none")); return; }
    $("#alarms").replaceChildren(...alarms.map(a => el("div", { class: "alarm", dataset: { alarm: a.id, kind: a.kind } },
      el("div", {}, el("strong", {}, a.kind), " ", a.subject, el("br"), a.message,
         el("div", { class: "muted" }, PS.fmtTime(a.raised_at))),
      replaying ? null : el("button", { onclick: () => ackAlarm(a.id) }, "确认 Ack"))));
  }

  function renderSessions(view) {
    const rows = view.sessions || [];
    if (!rows.length) { $("#sessions").replaceChildren(el("span", { class: "muted" }, "无 none")); return; }
    $("#sessions").replaceChildren(...rows.map(s => {
      const sw = el("span", { class: "swatch" });
      sw.style.background = s.colour || "#fff";
      return el("div", {}, sw, " ", `${s.kind} · ${s.actor}`, el("span", { class: "muted" }, ` · ${PS.fmtTime(s.opened_at)}`));
    }));
  }

  function renderRoom(view, replaying) {
    renderShelves(view);
    renderDoors(view);
    renderDevices(view);
    renderAlarms(view, replaying);
    renderSessions(view);
    $("#map-when").textContent = replaying ? `@ ${PS.fmtTime(view.at)}` : "实时 live";
    $("#map-panel").dataset.seq = String(view.seq);
    $("#map-panel").dataset.mode = replaying ? "replay" : "live";
  }

  async function refreshState(background) {
    const r = await api(token, "GET", "/api/operator/state", null, { background: background === true });
    if (r.status === 401) { showLogin(true); return null; }
    if (!r.ok) { showError(r); return null; }
    st.live = r.body;
    $("#station-id").textContent = r.body.station;
    setLastSeq(r.body.seq);
    if (st.replaySeq === null) renderRoom(r.body, false);
    return r.body;
  }

  /** Refresh soon after an event, and once more a little later: devices report their new
   *  state after the event that changed it, and a passing LED/sensor difference must clear. */
  function scheduleRefresh() {
    clearTimeout(st.refreshTimer);
    clearTimeout(st.settleTimer);
    st.refreshTimer = setTimeout(() => refreshState(true), 120);
    st.settleTimer = setTimeout(() => refreshState(true), 1500);
  }

  function setLastSeq(seq) {
    if (seq > st.lastSeq) st.lastSeq = seq;
    $("#seq").textContent = String(st.lastSeq);
    const slider = $("#rp-slider");
    slider.max = String(Math.max(1, st.lastSeq));
    if (st.replaySeq === null) { slider.value = slider.max; }
  }

  async function ackAlarm(id) {
    const r = await api(token, "POST", `/api/operator/alarms/${encodeURIComponent(id)}/ack`);
    if (!r.ok) showError(r);
    refreshState();
  }

  // ---------- event log --------------------------------------------------------------------

  function filterParams() {
    const p = new URLSearchParams();
    const since = isoFromLocal($("#f-since").value, false), until = isoFromLocal($("#f-until").value, true);
    if (since) p.set("since", since);
    if (until) p.set("until", until);
    for (const [id, key] of [["#f-type", "type"], ["#f-subject", "subject"], ["#f-actor", "actor"], ["#f-phone", "phone"]]) {
      const v = $(id).value.trim();
      if (v) p.set(key, v);
    }
    return p;
  }

  function eventRow(ev, fresh) {
    const data = JSON.stringify(ev.data);
    return el("tr", { class: fresh ? "fresh" : null, dataset: { seq: String(ev.seq), type: ev.type },
                      title: "点击回放到此 · click to replay to here", onclick: () => replayTo(ev.seq) },
      el("td", {}, String(ev.seq)), el("td", {}, PS.fmtTime(ev.ts)), el("td", {}, ev.type),
      el("td", {}, ev.actor), el("td", {}, ev.subject),
      el("td", { class: "pics" }, ev.snapshot ? el("button", { class: "snap", onclick: e => { e.stopPropagation(); showSnapshot(ev.snapshot); } }, "快照 photo") : "",
        ...roomPicture(ev, "thumb")),
      el("td", { class: "data", title: data }, data));
  }

  // ---------- room pictures (#21.3) ----------------------------------------------------------
  // A witnessed event carries `picture` (a room camera's picture id, or null and
  // `picture_reason`), and an alarm `clip`. The files are sealed on disk; the station serves
  // them decrypted to a logged-in operator only, so they are fetched with the session and
  // shown from blob: URLs, lazily (a log of 300 rows must not fetch 300 pictures at once).

  const REASONS = { camera_down: "摄像头离线 camera down", stale: "画面过旧 stale frame",
                    not_seen: "无摄像头覆盖 no camera sees it", writer_busy: "写入繁忙 writer busy",
                    snapshots_off: "快照已关闭 snapshots off" };

  const lazy = "IntersectionObserver" in window ? new IntersectionObserver(entries => {
    for (const en of entries) {
      if (!en.isIntersecting) continue;
      lazy.unobserve(en.target);
      loadPicture(en.target);
    }
  }, { rootMargin: "200px" }) : null;

  function roomPicture(ev, cls) {
    const d = ev.data || {};
    if (!("picture" in d)) return [];
    const out = [];
    if (d.picture) {
      const img = el("img", { class: `room-pic ${cls}`, alt: "room picture 现场画面", dataset: { ref: d.picture },
                              title: "现场画面 room picture (click to enlarge)",
                              onclick: e => { e.stopPropagation(); showSnapshot(d.picture); } });
      if (lazy && cls === "thumb") lazy.observe(img); else loadPicture(img);
      out.push(img);
    } else {
      out.push(el("span", { class: "no-pic muted", dataset: { reason: d.picture_reason || "" } },
                  "无画面 no picture: " + (REASONS[d.picture_reason] || d.picture_reason || "?")));
    }
    if (d.clip) out.push(el("button", { class: "clip", dataset: { clip: d.clip },
                                        onclick: e => { e.stopPropagation(); showClip(d.clip); } }, "片段 clip"));
    return out;
  }

  async function loadPicture(img) {
    const r = await api(token, "GET", `/api/operator/snapshots/${encodeURIComponent(img.dataset.ref)}`, null, { raw: true });
    if (!r.ok) {
      img.replaceWith(el("span", { class: "no-pic muted", dataset: { reason: "pruned" } },
                         r.status === 404 ? "画面已清理 picture pruned" : "画面不可用 not available"));
      return;
    }
    img.addEventListener("load", () => { URL.revokeObjectURL(img.src); img.dataset.loaded = "true"; }, { once: true });
    img.src = URL.createObjectURL(r.body);
  }

  async function showClip(ref) {
    const r = await api(token, "GET", `/api/operator/clips/${encodeURIComponent(ref)}`);
    if (!r.ok) { showError(r); return; }
    const frames = [];
    for (const f of r.body.frames) {
      const fr = await api(token, "GET", `/api/operator/clips/${encodeURIComponent(ref)}/${f.n}`, null, { raw: true });
      if (fr.ok) frames.push({ t: f.t, url: URL.createObjectURL(fr.body) });
    }
    if (!frames.length) return;
    const img = $("#snapshot-img");
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    let i = 0;
    const step = () => {
      const f = frames[i % frames.length];
      img.src = f.url;
      img.title = `${f.t >= 0 ? "+" : ""}${f.t.toFixed(2)} s`;
      i++;
    };
    step();
    const timer = setInterval(step, 250);
    const dlg = $("#snapshot-dialog");
    dlg.addEventListener("close", () => { clearInterval(timer); for (const f of frames) URL.revokeObjectURL(f.url); }, { once: true });
    dlg.showModal();
  }

  async function loadEvents() {
    const p = filterParams();
    st.filtered = [...p.keys()].length > 0;
    p.set("limit", "300");
    const r = await api(token, "GET", "/api/operator/events?" + p.toString());
    if (!r.ok) { showError(r); return; }
    $("#events").replaceChildren(...r.body.events.map(ev => eventRow(ev, false)));
    $("#log-count").textContent = `${r.body.events.length} shown${st.filtered ? " (filtered 已筛选)" : ""}`;
    setLastSeq(r.body.last_seq);
    markCurrent();
  }

  function markCurrent() {
    for (const tr of document.querySelectorAll("#events tr.current")) tr.classList.remove("current");
    if (st.replaySeq === null) return;
    const tr = document.querySelector(`#events tr[data-seq="${st.replaySeq}"]`);
    if (tr) tr.classList.add("current");
  }

  function onEvent(ev) {
    if (ev.seq <= st.streamSeq) return;
    st.streamSeq = ev.seq;
    setLastSeq(ev.seq);
    if (!st.filtered && !document.querySelector(`#events tr[data-seq="${ev.seq}"]`)) {
      const body = $("#events");
      body.prepend(eventRow(ev, true));
      while (body.children.length > 500) body.lastChild.remove();
      $("#log-count").textContent = `${body.children.length} shown`;
    }
    scheduleRefresh();
    // Re-walk the chain now and then as it grows (at most every 10 s: it reads the whole log).
    if (!st.verifyTimer && Date.now() - st.verifiedAt > 10000) {
      st.verifyTimer = setTimeout(() => { st.verifyTimer = null; verify(true); }, 1000);
    }
  }

  async function showSnapshot(ref) {
    const r = await api(token, "GET", `/api/operator/snapshots/${encodeURIComponent(ref)}`, null, { raw: true });
    if (!r.ok) {
      // a pruned snapshot: the event keeps its reference, the file is gone (#14.13)
      const msg = r.status === 404 ? "快照已清理 snapshot pruned (past its retention, or removed to keep the disk free)" : "not available";
      showError({ status: r.status, body: { error: r.status === 404 ? "snapshot_pruned" : "snapshot", message: msg } });
      return;
    }
    const img = $("#snapshot-img");
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(r.body);
    $("#snapshot-dialog").showModal();
  }

  // ---------- live stream ------------------------------------------------------------------

  function connect(afterSeq) {
    // The stream's credential is the session cookie, sent by the browser same-site only.
    st.streamSeq = afterSeq;
    const src = new EventSource(`/api/operator/stream?after_seq=${afterSeq}`);
    st.source = src;
    const badge = $("#live");
    src.onopen = () => { badge.className = "badge ok"; badge.textContent = "实时 live"; badge.dataset.state = "live"; };
    src.onerror = () => {
      badge.className = "badge bad"; badge.textContent = "断开 reconnecting…"; badge.dataset.state = "down";
      // EventSource retries by itself (events it sends again are dropped by seq); after a
      // refused connection (401, a restart mid-handshake) it gives up, so start a new one.
      if (src.readyState === EventSource.CLOSED) setTimeout(() => connect(st.streamSeq), 5000);
    };
    src.addEventListener("log", e => { try { onEvent(JSON.parse(e.data)); } catch (_) { /* skip a bad line */ } });
  }

  // ---------- replay -----------------------------------------------------------------------

  async function replayTo(seq) {
    seq = Math.max(1, Math.min(Number(seq) || 1, Math.max(1, st.lastSeq)));
    st.replaySeq = seq;
    document.body.classList.add("replaying");
    $("#rp-slider").value = String(seq);
    $("#rp-seq").value = String(seq);
    markCurrent();
    const req = ++st.replayReq;
    const r = await api(token, "GET", `/api/operator/replay?seq=${seq}`);
    if (req !== st.replayReq || st.replaySeq === null) return r;
    if (!r.ok) { showError(r); return r; }
    showReplay(r.body);
    return r;
  }

  function showReplay(view) {
    renderRoom(view, true);
    const ev = view.event;
    const info = $("#rp-info");
    info.dataset.seq = ev ? String(ev.seq) : "";
    info.textContent = ev ? `回放 replay · seq ${ev.seq} · ${PS.fmtTime(ev.ts)} · ${ev.type} · ${ev.subject}` : "回放 replay · 空 empty log";
    $("#rp-picture").replaceChildren(...(ev ? roomPicture(ev, "step") : []));
    if (view.at) $("#rp-at").value = localFromIso(view.at);
  }

  async function replayAt() {
    const at = isoFromLocal($("#rp-at").value, true);
    if (!at) return;
    stopPlay();
    const req = ++st.replayReq;
    document.body.classList.add("replaying");
    const r = await api(token, "GET", `/api/operator/replay?at=${encodeURIComponent(at)}`);
    if (req !== st.replayReq) return;
    if (!r.ok) { showError(r); return; }
    st.replaySeq = r.body.event ? r.body.event.seq : 0;
    $("#rp-slider").value = String(st.replaySeq);
    $("#rp-seq").value = String(st.replaySeq);
    markCurrent();
    showReplay(r.body);
  }

  function goLive() {
    stopPlay();
    st.replaySeq = null;
    st.replayReq++;
    document.body.classList.remove("replaying");
    $("#rp-info").textContent = "";
    $("#rp-picture").replaceChildren();
    $("#rp-seq").value = "";
    $("#rp-at").value = "";
    markCurrent();
    setLastSeq(st.lastSeq);
    if (st.live) renderRoom(st.live, false);
    refreshState();
  }

  function stopPlay() { st.playing = false; $("#rp-play").replaceChildren("▶ ", el("span", { class: "en" }, "play")); }

  /** Step forward one event at a time, waiting for each replay before the next. */
  async function play() {
    if (st.playing) { stopPlay(); return; }
    st.playing = true;
    $("#rp-play").replaceChildren("❚❚ ", el("span", { class: "en" }, "pause"));
    let seq = st.replaySeq === null ? 1 : st.replaySeq;
    if (seq >= st.lastSeq) seq = 1;
    while (st.playing) {
      await replayTo(seq);
      if (seq >= st.lastSeq) break;
      await new Promise(res => setTimeout(res, 600));
      seq += 1;
    }
    stopPlay();
  }

  function step(delta) {
    stopPlay();
    const from = st.replaySeq === null ? st.lastSeq : st.replaySeq;
    replayTo(from + delta);
  }

  // ---------- couriers ---------------------------------------------------------------------

  async function loadCouriers() {
    const r = await api(token, "GET", "/api/operator/couriers");
    if (!r.ok) { showError(r); return; }
    $("#couriers").replaceChildren(...r.body.map(c => el("div", {
        class: "courier-row" + (c.active === false ? " inactive" : ""), dataset: { courier: c.id } },
      el("span", { class: "who" }, `${c.id} · ${c.carrier} · ${c.name}${c.has_face ? " · 人脸 face" : ""}`),
      el("span", {},
        el("button", { onclick: () => courierAction(c.id, c.active === false ? "enable" : "disable") },
           c.active === false ? "启用 enable" : "停用 disable"),
        " ",
        el("button", { class: "danger", onclick: () => {
          if (confirm(`删除快递员 ${c.id}? Delete courier ${c.id} and their face templates?`)) courierAction(c.id, "delete");
        } }, "删除 delete")))));
  }

  async function courierAction(id, action) {
    const path = `/api/operator/couriers/${encodeURIComponent(id)}`;
    const r = action === "delete" ? await api(token, "DELETE", path) : await api(token, "POST", `${path}/${action}`);
    if (!r.ok) showError(r);
    loadCouriers();
  }

  async function addCourier(e) {
    e.preventDefault();
    const body = { courier_id: $("#c-id").value.trim(), carrier: $("#c-carrier").value.trim(),
                   name: $("#c-name").value.trim(), pin: $("#c-pin").value };
    const r = await api(token, "POST", "/api/operator/couriers", body);
    if (!r.ok) { showError(r); return; }
    $("#courier-form").reset();
    loadCouriers();
  }

  // ---------- login, sessions, kiosk pairing (admin) ------------------------------------------

  function showLogin(ended) {
    $("#console").classList.add("hidden");
    $("#logout").classList.add("hidden");
    $("#login").classList.remove("hidden");
    if (ended) $("#no-token").classList.remove("hidden");
    if (st.source) { st.source.close(); st.source = null; }
    document.body.dataset.auth = "out";
  }

  async function login(e) {
    e.preventDefault();
    const r = await api(token, "POST", "/api/operator/login",
                        { operator_id: $("#l-id").value.trim(), password: $("#l-password").value });
    $("#l-password").value = "";
    if (!r.ok) {
      const b = r.body || {};
      const box = $("#login-error");
      box.dataset.code = b.error || String(r.status);
      box.textContent = r.status === 429 ? `尝试次数过多 Too many tries: wait ${Math.ceil(b.retry_after_s || 60)} s`
                                         : `${b.error || r.status}: ${b.message || ""}`;
      box.classList.remove("hidden");
      return;
    }
    window.location.reload();  // start the console afresh with the new session
  }

  async function logout() {
    await api(token, "POST", "/api/operator/logout");
    showLogin(false);
  }

  async function loadAccess() {
    const [s, k] = await Promise.all([api(token, "GET", "/api/operator/sessions"), api(token, "GET", "/api/operator/kiosks")]);
    if (!s.ok) { showError(s); return; }
    $("#op-sessions").replaceChildren(...s.body.map(x => el("div", { class: "courier-row", dataset: { session: x.handle } },
      el("span", { class: "who" }, `${x.operator_id} · ${x.role} · ${PS.fmtTime(new Date(x.started_at * 1000).toISOString())}`),
      el("button", { class: "danger", onclick: () => revoke(`/api/operator/sessions/${encodeURIComponent(x.handle)}/revoke`) },
         "结束 end"))));
    if (k.ok) $("#kiosks").replaceChildren(...k.body.map(x => el("div", { class: "courier-row", dataset: { kiosk: x.id } },
      el("span", { class: "who" }, `${x.id} · ${x.active ? "已配对 paired" : "已撤销 revoked"}`),
      x.active ? el("button", { class: "danger", onclick: () => revoke(`/api/operator/kiosks/${encodeURIComponent(x.id)}/revoke`) },
                    "撤销 revoke") : "")));
  }

  async function revoke(path, body) {
    const r = await api(token, "POST", path, body);
    if (!r.ok) showError(r);
    loadAccess();
  }

  async function createPairing(e) {
    e.preventDefault();
    const device = encodeURIComponent($("#p-device").value.trim());
    const r = await api(token, "POST", `/api/operator/kiosks/${device}/pairing`);
    if (!r.ok) { showError(r); return; }
    // shown once, here: the station keeps only its digest
    const box = $("#pair-code");
    box.replaceChildren(el("strong", { id: "pair-code-value" }, r.body.code),
      el("span", { class: "muted" }, ` → ${r.body.device_id}, ${Math.round(r.body.expires_in_s / 60)} min`));
    box.classList.remove("hidden");
  }

  // ---------- chain and export -------------------------------------------------------------

  async function verify(background) {
    const badge = $("#chain");
    st.verifiedAt = Date.now();
    const r = await api(token, "GET", "/api/operator/verify", null, { background: background === true });
    if (!r.ok) { badge.className = "badge warn"; badge.textContent = "?"; showError(r); return; }
    const v = r.body;
    badge.dataset.ok = String(v.ok);
    if (v.ok) { badge.className = "badge ok"; badge.textContent = `✓ 完整 intact (${v.checked})`; }
    else { badge.className = "badge bad"; badge.textContent = `✗ seq ${v.first_bad_seq}: ${v.problem}`; }
  }

  async function exportLog(format) {
    const p = filterParams();
    p.delete("subject"); p.delete("actor"); p.delete("phone");  // the export takes time and type only
    p.set("format", format);
    const r = await PS.download(token, "/api/operator/events/export?" + p.toString(), `events.${format}`);
    if (!r.ok) showError(r);
  }

  // ---------- start ------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", async () => {
    PS.largeText("operator");
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    const me = await api(token, "GET", "/api/operator/me");
    if (!me.ok) { showLogin(false); return; }
    $("#who").textContent = `${me.body.operator_id} (${me.body.role})`;
    document.body.dataset.role = me.body.role;
    document.body.dataset.auth = "in";
    $("#console").classList.remove("hidden");
    $("#logout").classList.remove("hidden");
    $("#access-panel").addEventListener("toggle", e => { if (e.target.open) loadAccess(); });
    $("#revoke-all").addEventListener("click", () => {
      if (confirm("结束所有会话? End every operator session (yours too)?")) revoke("/api/operator/sessions/revoke-all", {});
    });
    $("#pair-form").addEventListener("submit", createPairing);
    $("#verify").addEventListener("click", verify);
    $("#couriers-panel").addEventListener("toggle", e => { if (e.target.open) loadCouriers(); });
    $("#courier-form").addEventListener("submit", addCourier);
    $("#export-jsonl").addEventListener("click", () => exportLog("jsonl"));
    $("#export-csv").addEventListener("click", () => exportLog("csv"));
    $("#filters").addEventListener("submit", e => { e.preventDefault(); loadEvents(); });
    $("#f-clear").addEventListener("click", () => setTimeout(loadEvents, 0));
    $("#rp-back").addEventListener("click", () => step(-1));
    $("#rp-fwd").addEventListener("click", () => step(1));
    $("#rp-play").addEventListener("click", play);
    $("#rp-live").addEventListener("click", goLive);
    $("#rp-at-go").addEventListener("click", replayAt);
    $("#rp-slider").addEventListener("input", e => {
      stopPlay();
      clearTimeout(st.sliderTimer);
      st.sliderTimer = setTimeout(() => replayTo(e.target.value), 150);
    });
    // A typed seq: jump there (a blur that changes nothing must not stop a replay that plays).
    const typedSeq = e => {
      if (Number(e.target.value) === st.replaySeq) return;
      stopPlay();
      replayTo(e.target.value);
    };
    $("#rp-seq").addEventListener("change", typedSeq);
    $("#rp-seq").addEventListener("keydown", e => { if (e.key === "Enter") { e.preventDefault(); typedSeq(e); } });
    const state = await refreshState();
    if (!state) return;
    await loadEvents();
    connect(state.seq);
    verify();
    setInterval(() => verify(true), 60000);
    setInterval(() => refreshState(true), 10000);   // light TTLs, device state: things that change without an event
  });
})();
