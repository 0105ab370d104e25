/* Kiosk: a customer enters with a pickup code, or phone + one-time code, or the QR code,
 * and sees their colour and slots. Messages are bilingual because the station serves
 * Chinese and foreign customers alike; every refusal maps to a message a person can act on. */
"use strict";

(() => {
  const { $, $all, el, api } = PS;
  // the device credential this screen got by pairing once (ADR 0130); never from the URL
  const token = PS.getToken("kiosk");
  const state = { mode: "code", phoneStep: "phone", phone: "", resetTimer: null, stream: null, lockedUntil: 0 };

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
    $all(".tabs button").forEach(b => b.classList.toggle("active", b.dataset.mode === mode));
    $("#display").value = "";
    hideMessage();
    $("#keypad").classList.toggle("hidden", mode === "qr");
    $("#display").classList.toggle("hidden", mode === "qr");
    $("#qr-pane").classList.toggle("hidden", mode !== "qr");
    $("#key-dash").style.visibility = mode === "code" ? "visible" : "hidden";
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
    if (key !== "ok") hideMessage();
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
    list.replaceChildren(...res.slots.map(s => el("li", { style: { borderColor: res.colour }, dataset: { slot: s } },
      el("span", { class: "slot-name" }, s), reportButtons(s))));
    $("#parcel-count").textContent = `共 ${res.parcels} 件包裹 · ${res.parcels} parcel${res.parcels === 1 ? "" : "s"}`;
    $("#entry").classList.add("hidden");
    $("#result").classList.remove("hidden");
    clearTimeout(state.resetTimer);
    state.resetTimer = setTimeout(reset, 90000);
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
        "aria-label": `${en}: slot ${slot}` }, zh, " ", el("span", { class: "en" }, en));
      b.addEventListener("click", () => report(slot, problem, b));
      return b;
    }));
  }

  async function report(slot, problem, button) {
    button.disabled = true;
    const r = await api(token, "POST", `/api/kiosk/sessions/${encodeURIComponent(state.sessionId)}/report`,
      { slot, problem });
    const box = $("#report-message");
    box.className = r.ok ? "msg info" : "msg error";
    if (!r.ok) {
      button.disabled = false;
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

  function reset() {
    clearTimeout(state.resetTimer);
    $("#report-message").className = "msg hidden";
    $("#result").classList.add("hidden");
    $("#entry").classList.remove("hidden");
    setMode("code");
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
    $("#display").addEventListener("keydown", e => { if (e.key === "Enter") { e.preventDefault(); submit(); } });
    $("#done").addEventListener("click", reset);
    $("#qr-scan").addEventListener("click", scanQr);
    clock(); setInterval(clock, 1000);
    setMode("code");
  });
})();
