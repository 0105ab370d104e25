/* Audible cues for the kiosk (#19.5): a short tone made with WebAudio (no sound file to ship
 * or fetch) when the door opens and when the slots light, and the slot names spoken through
 * the browser's speech synthesis where it has one. Either may be missing (a browser without
 * speech, a screen without a sound card, autoplay refused): every call is guarded and says
 * whether it did anything, and the page writes the same words into an aria-live region, so
 * a screen reader user hears them even when this file stays silent. */
"use strict";

const Cue = (() => {
  // two rising notes for a door, three for slots lit: told apart by ear, each under half a second
  const TUNES = { door: [660, 880], slots: [880, 1109, 1319] };
  const NOTE_S = 0.14;
  let ctx = null;

  /** The page's one AudioContext, made on first use (Chromium allows it to run after a key or
   * a touch, which is when the kiosk makes it: `prime` on the first input). */
  function audio() {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (typeof AC !== "function") return null;
    if (!ctx) {
      try { ctx = new AC(); } catch (_) { return null; }
    }
    if (ctx.state === "suspended" && typeof ctx.resume === "function") {
      try { const p = ctx.resume(); if (p && p.catch) p.catch(() => {}); } catch (_) { /* stays silent */ }
    }
    return ctx;
  }

  /** Play the tunes named in `kinds` one after the other ("door", "slots"). */
  function tone(kinds) {
    const a = audio();
    if (!a) return false;
    try {
      let t = (a.currentTime || 0) + 0.02;
      for (const kind of kinds) {
        for (const freq of TUNES[kind] || []) {
          const osc = a.createOscillator();
          const gain = a.createGain();
          osc.type = "sine";
          osc.frequency.setValueAtTime(freq, t);
          gain.gain.setValueAtTime(0.0001, t);
          gain.gain.exponentialRampToValueAtTime(0.25, t + 0.015);
          gain.gain.exponentialRampToValueAtTime(0.0001, t + NOTE_S);
          osc.connect(gain);
          gain.connect(a.destination);
          osc.start(t);
          osc.stop(t + NOTE_S + 0.01);
          t += NOTE_S + 0.03;
        }
        t += 0.12;
      }
      return true;
    } catch (_) {
      return false;
    }
  }

  /** Speak `parts`, a list of [lang, text], in order; what was being said is cut short. */
  function speak(parts) {
    const synth = window.speechSynthesis;
    const Utterance = window.SpeechSynthesisUtterance;
    if (!synth || typeof synth.speak !== "function" || typeof Utterance !== "function") return false;
    try {
      if (typeof synth.cancel === "function") synth.cancel();
      for (const [lang, text] of parts) {
        const u = new Utterance(text);
        u.lang = lang;
        u.rate = 0.9;
        synth.speak(u);
      }
      return true;
    } catch (_) {
      return false;
    }
  }

  return { tone, speak, prime: audio };
})();
