/* Kiosk: a customer enters with a pickup code, or phone + one-time code, or the QR code,
 * and sees their colour and slots. Messages are bilingual because the station serves
 * Chinese and foreign customers alike; every refusal maps to a message a person can act on.
 *
 * Everyone can use it (#19.5, docs/customer-care.md "Kiosk"): every control works from the
 * keyboard or a USB hardware keypad (which is a keyboard: the key map is KEYS below), a
 * large-text / high-contrast mode is a key or a touch away and lasts for one visit only
 * (the screen is shared), and the door and the lit slots are told by a tone, a voice and an
 * aria-live region as well as on screen. */
"use strict";

(() => {
  const { $, $all, el, api } = PS;
  // the device credential this screen got by pairing once (ADR 0130); never from the URL
  const token = PS.getToken("kiosk");
  const state = { mode: "code", phoneStep: "phone", phone: "", resetTimer: null, stream: null, lockedUntil: 0,
                  idleTimer: null, large: false, largeChosen: false };
  // the station's [kiosk] defaults (GET /api/kiosk/settings); these until it answers
  const settings = { large_text: false, sound: true, speech: true, idle_reset_s: 60, result_reset_s: 90 };

  const MESSAGES = {
    wrong_code: ["取件码不正确，请核对后重试。", "That code is not right. Check it and try again."],
    invalid_pickup_code: ["取件码格式不正确，例如 1-2-03-12345678。", "A pickup code looks like 1-2-03-12345678."],
    no_parcel: ["没有待取的包裹。", "No parcel is waiting for you here."],
    wrong_otp: ["验证码错误或已过期。", "That one-time code is wrong or has expired."],
    door_offline: ["入口门故障，已通知工作人员。", "The entry door is out of order. Staff have been alerted."],
    door_failed: ["门未能打开，已通知工作人员。", "The door did not open. Staff have been alerted."],
    room_busy: ["室内取件人数已满，请稍候一分钟再试。", "Every colour is in use by people inside. Please try again in a minute."],
    dropoff_busy: ["其他顾客正在寄件，请稍候一分钟再试。", "Another drop-off is in progress. Please wait a minute and try again."],
    storage_full: ["系统暂时无法服务，已通知工作人员。", "The station cannot take this now. Staff have been alerted."],
    invalid_phone: ["手机号码不正确。", "That phone number is not valid."],
    nothing_read: ["未识别到二维码，请再试一次。", "No QR code was read. Please try again."],
    unauthenticated: ["此终端未授权，请联系工作人员。", "This kiosk is not authorised. Please call staff."],
    invalid_token: ["此终端授权已失效，请联系工作人员。", "This kiosk's access has expired. Please call staff."],
    network: ["网络故障，请稍后再试。", "The station cannot be reached. Please try again."],
  };

  function show(kind, zh, en) {
    const box = $("#message");
    box.className = "msg " + kind;
    box.replaceChildren(el("div", {}, zh), el("div", { class: "en" }, en));
    box.dataset.kind = kind;
  }
  function hideMessage() { $("#message").className = "msg hidden"; $("#message").removeAttribute("data-code"); }

  /** Turn a refused call into a message; 429 counts down retry_after_s. */
  function showError(r) {
    const b = r.body || {};
    $("#message").dataset.code = b.error || String(r.status);
    if (r.status === 429) {
      const secs = Math.ceil(Number(b.retry_after_s || r.headers.get("Retry-After") || 60));
      show("error", `尝试次数过多，已锁定。请 ${secs} 秒后再试。`,
           `Too many wrong tries: locked. Try again in ${secs} s.`);
      $("#message").dataset.code = "locked_out";
      lockKeypad(secs);
      return;
    }
    if (r.status === 401 && b.error === "invalid_token") { PS.setToken("kiosk", ""); showPairing(); }
    const known = MESSAGES[b.error];
    if (known) { show("error", known[0], known[1]); return; }
    if (r.status === 503) { show("error", "设备故障，已通知工作人员。", (b.message || "A device is out of order.") + " Staff have been alerted."); return; }
    if (r.status === 422) { show("error", "输入不正确，请检查。", b.message || "That entry is not valid."); return; }
    show("error", "无法完成，请重试或联系工作人员。", b.message || `The station refused (${r.status}).`);
  }

  function lockKeypad(secs) {
    const buttons = $all("#keypad button");
    buttons.forEach(b => { b.disabled = true; });
    const until = Date.now() + secs * 1000;
    state.lockedUntil = until;
    const tick = () => {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0) { buttons.forEach(b => { b.disabled = false; }); hideMessage(); return; }
      const box = $("#message");
      if (box.dataset.code === "locked_out") {
        box.replaceChildren(el("div", {}, `尝试次数过多，已锁定。请 ${left} 秒后再试。`),
                            el("div", { class: "en" }, `Too many wrong tries: locked. Try again in ${left} s.`));
      }
      setTimeout(tick, 1000);
    };
    setTimeout(tick, 1000);
  }

  function setMode(mode) {
    state.mode = mode;
    state.phoneStep = "phone";
    $all(".tabs button").forEach(b => {
      b.classList.toggle("active", b.dataset.mode === mode);
      b.setAttribute("aria-pressed", String(b.dataset.mode === mode));
    });
    $("#display").value = "";
    hideMessage();
    $("#keypad").classList.toggle("hidden", mode === "qr");
    $("#display").classList.toggle("hidden", mode === "qr");
    $("#qr-pane").classList.toggle("hidden", mode !== "qr");
    $("#key-dash").style.visibility = mode === "code" ? "visible" : "hidden";
    $("#key-dash").disabled = mode !== "code";   // hidden is not focusable either
    const label = $("#step-label");
    if (mode === "code") label.replaceChildren("请输入取件码 ", el("span", { class: "en" }, "Enter your pickup code"));
    if (mode === "phone") label.replaceChildren("请输入手机号 ", el("span", { class: "en" }, "Enter your phone number"));
    if (mode === "qr") { label.replaceChildren("扫描二维码 ", el("span", { class: "en" }, "Scan your QR code")); startCamera(); }
    else stopCamera();
    $("#display").focus();
  }

  function press(key) {
    const d = $("#display");
    if (key === "back") d.value = d.value.slice(0, -1);
    else if (key === "clear") d.value = "";
    else if (key === "ok") submit();
    else if (d.value.length < 24) d.value += key;
    if (key !== "ok" && $("#message").dataset.code !== "locked_out") hideMessage();
  }

  async function submit() {
    const value = $("#display").value.trim();
    if (!value || Date.now() < state.lockedUntil) return;
    setBusy(true);
    try {
      if (state.mode === "code") {
        const r = await api(token, "POST", "/api/kiosk/code", { code: value });
        r.ok ? showResult(r.body) : showError(r);
      } else if (state.phoneStep === "phone") {
        const r = await api(token, "POST", "/api/kiosk/otp/request", { phone: value });
        if (!r.ok) { showError(r); return; }
        state.phone = value;
        state.phoneStep = "otp";
        $("#display").value = "";
        $("#step-label").replaceChildren(`请输入发送到 ${r.body.phone_masked} 的验证码 `,
          el("span", { class: "en" }, `Enter the one-time code sent to ${r.body.phone_masked}`));
        show("info", "如有包裹等待此号码，验证码已发送。", "If a parcel is waiting for this number, a code is on its way.");
        touched();
      } else {
        const r = await api(token, "POST", "/api/kiosk/otp/verify", { phone: state.phone, otp: value });
        r.ok ? showResult(r.body) : showError(r);
      }
    } finally { setBusy(false); }
  }

  function setBusy(busy) {
    $("#key-ok").disabled = busy || Date.now() < state.lockedUntil;
    document.body.classList.toggle("busy", busy);
  }

  /** "1-2-03" said the way a person finds it: shelf, row (from the top), column. */
  function slotWords(slot) {
    const m = /^(\d+)-(\d+)-(\d+)$/.exec(slot);
    if (!m) return [slot, slot];
    const [shelf, row, col] = m.slice(1).map(Number);
    return [`${shelf}号货架 第${row}层 第${col}格`, `shelf ${shelf}, row ${row}, column ${col}`];
  }

  /** The answer a customer came for: their colour, big, and the slots as text. */
  function showResult(res) {
    stopCamera();
    const sw = $("#colour-swatch");
    sw.style.background = res.colour;
    sw.style.color = PS.inkFor(res.colour);
    sw.dataset.colour = res.colour;
    $("#colour-zh").textContent = res.colour_name_zh;
    $("#colour-en").textContent = res.colour_name_en;
    const list = $("#slot-list");
    state.sessionId = res.session_id;
    // each slot as text beside the colour (its border): the name, then where it is in words
    list.replaceChildren(...res.slots.map((s, i) => el("li", { style: { borderColor: res.colour }, dataset: { slot: s, n: i + 1 } },
      el("span", { class: "slot-name" }, s),
      el("span", { class: "slot-where" }, slotWords(s)[0], " · ", el("span", { lang: "en" }, slotWords(s)[1])),
      reportButtons(s))));
    $("#parcel-count").textContent = `共 ${res.parcels} 件包裹 · ${res.parcels} parcel${res.parcels === 1 ? "" : "s"}`;
    $("#entry").classList.add("hidden");
    $("#leave-message").className = "msg hidden";
    $("#leave").disabled = false;
    $("#result").classList.remove("hidden");
    $("#result-title").focus();
    clearTimeout(state.idleTimer);
    clearTimeout(state.resetTimer);
    state.resetTimer = setTimeout(reset, settings.result_reset_s * 1000);
    doorCue(res);
  }

  /** The door is open and the slots are lit: a tone for each, the slot names spoken, and the
   * same words in the live region for a screen reader (which speaks them in its own voice). */
  function doorCue(res) {
    const where = res.slots.map(slotWords);
    const zh = `门已打开，请进。您的格口：${where.map(w => w[0]).join("；")}。灯光颜色：${res.colour_name_zh}。`;
    const en = `The door is open. Your parcels are in ${where.map(w => w[1]).join("; ")}. Your colour is ${res.colour_name_en}.`;
    announce(`${zh} ${res.slots.join(", ")}. ${en}`, ["door", "slots"]);
    if (settings.sound) Cue.tone(["door", "slots"]);
    if (settings.speech) Cue.speak([["zh-CN", zh], ["en-US", en]]);
  }

  /** Write `text` into the aria-live region (and name the tones played, for tests and logs). */
  function announce(text, cues) {
    const box = $("#announce");
    box.textContent = text;
    box.dataset.cue = (cues || []).join(",");
  }

  /** Say a short hint aloud and in the live region (keypad users may not see the screen). */
  function hint(zh, en) {
    announce(`${zh} ${en}`);
    if (settings.speech) Cue.speak([["zh-CN", zh], ["en-US", en]]);
  }

  // what a customer inside can report about one slot (#19.4, docs/customer-care.md)
  const PROBLEMS = [
    ["slot_empty", "格口是空的", "The slot is empty"],
    ["not_mine", "不是我的包裹", "Not my parcel"],
    ["damaged", "包裹破损，拒收", "Damaged, I refuse it"],
  ];

  function reportButtons(slot) {
    return el("span", { class: "report" }, ...PROBLEMS.map(([problem, zh, en]) => {
      const b = el("button", { class: "secondary", dataset: { problem, slot },
        "aria-label": `${zh} ${en}: slot ${slot}` }, zh, " ", el("span", { class: "en" }, en));
      b.addEventListener("click", () => report(slot, problem, b));
      return b;
    }));
  }

  async function report(slot, problem, button) {
    if (button.disabled) return;
    button.disabled = true;
    const r = await api(token, "POST", `/api/kiosk/sessions/${encodeURIComponent(state.sessionId)}/report`,
      { slot, problem });
    const box = $("#report-message");
    box.className = r.ok ? "msg info" : "msg error";
    if (!r.ok) {
      button.disabled = false;
      if (r.body && r.body.error === "which_parcel") {
        // two of theirs in that slot: the station will not guess which one is damaged
        box.replaceChildren("此格口有您的两件包裹，请联系工作人员指明破损的一件。 ",
          el("span", { class: "en" }, "Two of your parcels are in this slot: please ask staff which one to refuse."));
        return;
      }
      box.replaceChildren("未能提交，请联系工作人员。 ", el("span", { class: "en" }, "Could not report; please call staff."));
      return;
    }
    const [zh, en] = problem === "damaged"
      ? ["已拒收，请将包裹放回原格口；工作人员已收到通知。其余包裹可照常取走。",
         "Refused: please put it back in its slot; staff have been told. Take the rest as usual."]
      : ["已通知工作人员。", "Staff have been told."];
    box.replaceChildren(zh + " ", el("span", { class: "en" }, en));
    box.dataset.reported = problem;
  }

  /** "Leave without parcels" (POST /api/exit/leave): the station decides from what the
   * shelves sensed (ADR 0075) and may say no, with the reason shown and spoken. */
  async function leave() {
    const button = $("#leave");
    if (button.disabled || !state.sessionId) return;
    button.disabled = true;
    const r = await api(token, "POST", "/api/exit/leave", { session_id: state.sessionId });
    const box = $("#leave-message");
    if (r.ok && r.body && r.body.allowed) {
      box.className = "msg ok";
      box.dataset.left = "1";
      box.replaceChildren("出口门已打开，再见。 ", el("span", { class: "en" }, "The exit door is open. Goodbye."));
      announce("出口门已打开，再见。 The exit door is open. Goodbye.", ["door"]);
      if (settings.sound) Cue.tone(["door"]);
      if (settings.speech) Cue.speak([["zh-CN", "出口门已打开，再见。"], ["en-US", "The exit door is open. Goodbye."]]);
      $("#done").focus();
      return;
    }
    button.disabled = false;
    box.className = "msg error";
    box.dataset.left = "0";
    const en = (r.body && r.body.message) || "The exit cannot open now. Please call staff.";
    box.replaceChildren("出口暂不能打开。 ", el("span", { class: "en" }, en));
    hint("出口暂不能打开。", en);
  }

  /** The visit is over (done, left, or the result timed out): the next person gets the
   * station's defaults, large text included. */
  function reset() {
    clearTimeout(state.resetTimer);
    state.sessionId = null;
    $("#report-message").className = "msg hidden";
    $("#leave-message").className = "msg hidden";
    $("#result").classList.add("hidden");
    $("#entry").classList.remove("hidden");
    setLarge(settings.large_text);
    announce("");
    setMode("code");
  }

  // ---- large text / high contrast, for this visit only ---------------------------------------

  /** `chosen`: the person at the screen switched it for this visit, so the station's default
   * arriving late (loadSettings answers after the page is up) must not switch it back. */
  function setLarge(on, chosen = false) {
    state.large = on;
    state.largeChosen = chosen;
    document.documentElement.classList.toggle("large-text", on);
    $("#large-text").setAttribute("aria-pressed", String(on));
  }

  function toggleLarge() {
    setLarge(!state.large, true);
    if (state.large) hint("大字高对比已打开。按星号键关闭，按加号键到下一项，按确定键确认。",
                          "Large text and high contrast on. Star turns it off, plus moves to the next control, Enter presses it.");
    else hint("大字已关闭。", "Large text off.");
  }

  // ---- keyboard and hardware keypad ----------------------------------------------------------

  // A numeric keypad's keys by their position (e.code), so NumLock off still types digits;
  // everything else by the character it gives (e.key). docs/customer-care.md has the table.
  const NUMPAD = { Numpad0: "0", Numpad1: "1", Numpad2: "2", Numpad3: "3", Numpad4: "4", Numpad5: "5",
                   Numpad6: "6", Numpad7: "7", Numpad8: "8", Numpad9: "9", NumpadDecimal: ".",
                   NumpadEnter: "Enter", NumpadAdd: "+", NumpadSubtract: "-", NumpadMultiply: "*",
                   NumpadDivide: "/" };
  const KEYS = { "*": "large", F1: "large", Help: "large", "+": "next", "/": "alt", F2: "alt",
                 Enter: "enter", Escape: "escape", Backspace: "delete", ".": "delete" };

  function visible(node) { return node.getClientRects().length > 0; }

  /** The controls in tab order (the DOM's: no positive tabindex on these pages). */
  function focusables() {
    return $all("button, input, select, a[href], [tabindex]:not([tabindex='-1'])")
      .filter(n => !n.disabled && visible(n));
  }

  /** "+" on the keypad: Tab for a keypad with no Tab key, wrapping round. */
  function moveFocus(step) {
    const list = focusables();
    if (!list.length) return;
    const at = document.activeElement;
    const i = list.indexOf(at);
    if (i >= 0) { list[(i + step + list.length) % list.length].focus(); return; }
    // on a heading or on nothing: the first control after it (or the last one before it)
    const after = at && at !== document.body
      ? list.findIndex(n => at.compareDocumentPosition(n) & Node.DOCUMENT_POSITION_FOLLOWING) : 0;
    const j = after < 0 ? 0 : after;
    list[step > 0 ? j : (j - 1 + list.length) % list.length].focus();
  }

  function focusSlot(n) {
    const li = $(`#slot-list li[data-n="${n}"]`);
    if (!li) return;
    const first = $("button:not(:disabled)", li);
    if (first) first.focus();
    const slot = li.dataset.slot;
    hint(`格口 ${slot}，${slotWords(slot)[0]}。按加号键选择问题，按确定键报告。`,
         `Slot ${slot}, ${slotWords(slot)[1]}. Plus for the next choice, Enter to report it.`);
  }

  function nextMode() {
    const modes = ["code", "phone", "qr"];
    setMode(modes[(modes.indexOf(state.mode) + 1) % modes.length]);
    const names = { code: ["输入取件码", "Pickup code"], phone: ["手机号取件", "Phone number"],
                    qr: ["扫二维码", "Show your QR code to the camera"] };
    hint(...names[state.mode]);
  }

  /** Escape: one step back. Clears what was typed; on an empty field, back to the first
   * step (the phone number) or to the pickup code. */
  function escape() {
    const d = $("#display");
    if (d.value) { press("clear"); return; }
    if (state.mode === "phone" && state.phoneStep === "otp") { setMode("phone"); return; }
    if (state.mode !== "code") setMode("code");
  }

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    Cue.prime();   // a key is a user gesture: the tone may play from now on
    touched();
    // pairing is staff with a keyboard, typing letters: leave the form to the browser
    if (!$("#pair").classList.contains("hidden") || !token) return;
    const key = NUMPAD[e.code] || e.key;
    const action = KEYS[key];
    const onButton = document.activeElement && document.activeElement.tagName === "BUTTON";
    if (action === "large") { e.preventDefault(); toggleLarge(); return; }
    if (action === "next") { e.preventDefault(); moveFocus(e.shiftKey ? -1 : 1); return; }
    if (!$("#result").classList.contains("hidden")) {
      if (/^[1-9]$/.test(key)) { e.preventDefault(); focusSlot(Number(key)); return; }
      if (action === "alt") {
        e.preventDefault();
        $("#leave").focus();
        hint("按确定键空手离开。", "Press Enter to leave without parcels.");
        return;
      }
      if (action === "escape") { e.preventDefault(); $("#done").focus(); hint("按确定键完成。", "Press Enter when you are done."); }
      return;   // Enter on the focused button: the browser presses it
    }
    if (action === "alt") { e.preventDefault(); nextMode(); return; }
    if (action === "enter") {
      if (onButton) return;   // the focused button is pressed by the browser
      e.preventDefault();
      press("ok");
      return;
    }
    if (action === "escape") { e.preventDefault(); escape(); return; }
    if (state.mode === "qr") return;
    if (action === "delete" || /^[0-9]$/.test(key) || (key === "-" && state.mode === "code")) {
      e.preventDefault();
      if ($("#key-ok").disabled && state.lockedUntil > Date.now()) return;   // locked out: the keypad is too
      press(action === "delete" ? "back" : key);
      $("#display").focus();
    }
  }

  /** A key or a touch: the entry screen forgets what was typed (and this visit's large text)
   * after `idle_reset_s` without one, so the next person does not find it. */
  function touched() {
    clearTimeout(state.idleTimer);
    if ($("#entry").classList.contains("hidden")) return;
    // waiting for a one-time code to arrive by message: as long as such a code lives (5 min)
    const otp = state.mode === "phone" && state.phoneStep === "otp";
    state.idleTimer = setTimeout(idle, (otp ? Math.max(settings.idle_reset_s, 300) : settings.idle_reset_s) * 1000);
  }

  function idle() {
    if ($("#entry").classList.contains("hidden")) return;
    setLarge(settings.large_text);
    if (Date.now() < state.lockedUntil) { $("#display").value = ""; return; }   // keep the countdown
    setMode("code");
  }

  async function loadSettings() {
    const r = await api(token, "GET", "/api/kiosk/settings");
    if (!r.ok || !r.body) return;   // an older station: the built-in defaults
    Object.assign(settings, r.body);
    if (!state.largeChosen) setLarge(settings.large_text);
  }

  async function startCamera() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) return;
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: true });
      $("#qr-video").srcObject = state.stream;
    } catch (_) { /* no camera on this screen: the station's kiosk camera may still be used */ }
  }
  function stopCamera() {
    if (state.stream) { state.stream.getTracks().forEach(t => t.stop()); state.stream = null; }
  }

  async function scanQr() {
    const video = $("#qr-video");
    if (!state.stream || !video.videoWidth) {
      show("error", "此终端没有摄像头，请输入取件码。", "No camera on this screen: please type your code.");
      return;
    }
    const canvas = el("canvas", { width: video.videoWidth, height: video.videoHeight });
    canvas.getContext("2d").drawImage(video, 0, 0);
    const blob = await new Promise(res => canvas.toBlob(res, "image/jpeg", 0.9));
    const r = await api(token, "POST", "/api/kiosk/qr-frame", blob);
    r.ok ? showResult(r.body) : showError(r);
  }

  function showPairing() {
    $("#no-token").classList.remove("hidden");
    $("#pair").classList.remove("hidden");
    $("#entry").classList.add("hidden");
  }

  async function pair(e) {
    e.preventDefault();
    const r = await api("", "POST", "/api/kiosk/pair", { code: $("#pair-code").value.trim() });
    if (!r.ok) {
      const b = r.body || {};
      const box = $("#pair-error");
      box.dataset.code = b.error || String(r.status);
      box.textContent = r.status === 429 ? `尝试次数过多 Too many tries: wait ${Math.ceil(b.retry_after_s || 60)} s`
                                         : (b.message || `refused (${r.status})`);
      box.classList.remove("hidden");
      return;
    }
    PS.setToken("kiosk", r.body.credential);
    window.location.reload();
  }

  function clock() { $("#clock").textContent = new Date().toLocaleTimeString(); }

  document.addEventListener("DOMContentLoaded", () => {
    $("#pair").addEventListener("submit", pair);
    if (!token) showPairing();
    $all(".tabs button").forEach(b => b.addEventListener("click", () => setMode(b.dataset.mode)));
    $all("#keypad button").forEach(b => b.addEventListener("click", () => press(b.dataset.key)));
    document.addEventListener("keydown", onKey);
    document.addEventListener("pointerdown", () => { Cue.prime(); touched(); });
    $("#large-text").addEventListener("click", toggleLarge);
    $("#done").addEventListener("click", reset);
    $("#leave").addEventListener("click", leave);
    $("#qr-scan").addEventListener("click", scanQr);
    clock(); setInterval(clock, 1000);
    setMode("code");
    if (token) loadSettings();
  });
})();
