// The ColorGAN human-study page: a two-alternative forced choice, one pair per screen.
//
// The server plans each session and alone knows which photo is real; this page only shows the
// two opaque image URLs of the next trial, measures the response time (from the moment both
// photos are on screen to the key press or click) and posts the choice. Practice trials come
// first and return feedback; scored trials return none.
"use strict";

(() => {
  const API = "/api/study";
  const BLANK_MS = 300; // a blank screen between pairs, so one pair's after-image does not meet the next
  const INTRO = {
    real:
      "<p>Each screen shows two versions of the same photo. One is a real colour photograph. " +
      "The other was coloured by a computer from a black-and-white version of it.</p>" +
      "<p>Pick the one you think is the <strong>real</strong> photo. The first few pairs are " +
      "practice: after them you are told which one was real. After the practice you get no feedback.</p>",
    natural:
      "<p>Each screen shows two colour versions of the same photo.</p>" +
      "<p>Pick the one whose colours look <strong>more natural</strong> to you. There is no right " +
      "or wrong answer. The first few pairs are practice.</p>",
  };

  const $ = (id) => document.getElementById(id);
  const state = {
    info: null,
    mode: null,
    session: null, // {session_id, n_practice, n_trials, ...}
    trials: [],
    trial: null,
    shownAt: 0,
    accepting: false, // keys/clicks answer the trial only while true
    afterFeedback: null, // set while practice feedback waits for "continue"
    exposureTimer: null,
    retry: null,
  };

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const options = { method, cache: "no-store", headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, options);
    } catch (e) {
      throw new ApiError("The study server cannot be reached. Is it still running?", 0);
    }
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (!res.ok) {
      let detail = data && data.detail;
      if (typeof detail !== "string") detail = `HTTP ${res.status}`;
      throw new ApiError(detail, res.status);
    }
    return data;
  }

  function show(id) {
    for (const s of ["loading", "intro", "trial", "done", "error"]) $(s).hidden = s !== id;
  }

  function fail(err, retry) {
    state.accepting = false;
    $("error-text").textContent = err && err.message ? err.message : String(err);
    state.retry = retry;
    show("error");
  }

  function storageKey() {
    return `colorgan-study:${state.info.study_id}:${state.mode}`;
  }

  function storage(op, key, value) {
    // localStorage can be unavailable (private windows, file policies): resuming is a nicety.
    try {
      if (op === "get") return window.localStorage.getItem(key);
      if (op === "set") window.localStorage.setItem(key, value);
      if (op === "del") window.localStorage.removeItem(key);
    } catch (e) {
      return null;
    }
    return null;
  }

  function anonymousId() {
    const key = "colorgan-study:participant";
    let id = storage("get", key);
    if (!id) {
      const bytes = new Uint8Array(8);
      window.crypto.getRandomValues(bytes);
      id = "anon-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
      storage("set", key, id);
    }
    return id;
  }

  async function init() {
    state.info = await api("GET", `${API}/info`);
    state.mode = state.info.default_mode;
    $("intro-question").textContent = state.info.questions[state.mode];
    $("intro-text").innerHTML = INTRO[state.mode]; // fixed strings above, never server data
    const n = state.info.n_trials;
    const p = state.info.n_practice;
    $("intro-counts").textContent =
      `${p ? p + " practice pair" + (p === 1 ? "" : "s") + ", then " : ""}${n} pair${n === 1 ? "" : "s"}.` +
      (state.info.exposure_ms > 0 ? ` Each pair is shown for ${(state.info.exposure_ms / 1000).toFixed(1)} s; you can answer after it disappears.` : "");
    const saved = storage("get", storageKey());
    if (saved) {
      try {
        const s = await api("GET", `${API}/sessions/${encodeURIComponent(saved)}`);
        if (!s.done) {
          state.session = s;
          state.trials = s.trials;
          $("start").textContent = "Continue where you left off";
          $("participant").value = s.participant.startsWith("anon-") ? "" : s.participant;
          $("participant").disabled = true;
        } else {
          storage("del", storageKey());
        }
      } catch (e) {
        if (e.status !== 404) throw e;
        storage("del", storageKey());
      }
    }
    show("intro");
    $("start").focus();
  }

  async function start() {
    $("start").disabled = true;
    try {
      if (!state.session) {
        const code = $("participant").value.trim();
        const s = await api("POST", `${API}/sessions`, { mode: state.mode, participant: code || anonymousId() });
        state.session = s;
        state.trials = s.trials;
        storage("set", storageKey(), s.session_id);
      }
      $("question").textContent = state.session.question;
      show("trial");
      await nextTrial();
    } finally {
      $("start").disabled = false;
    }
  }

  function loadImage(img, url) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve();
      img.onerror = () => reject(new ApiError("A photo could not be loaded.", 0));
      img.src = url;
    });
  }

  function preload(position) {
    const t = state.trials.find((x) => x.position === position);
    if (t) for (const url of [t.left, t.right]) new Image().src = url;
  }

  function setProgress(trial, s) {
    const practice = trial.practice;
    const done = practice ? trial.position : trial.position - s.n_practice;
    const total = practice ? s.n_practice : s.n_trials;
    $("phase").textContent = practice ? "Practice" : "Photo";
    $("count").textContent = `${done + 1} of ${total}`;
    $("progress").max = total;
    $("progress").value = done;
  }

  async function nextTrial() {
    state.accepting = false;
    clearTimeout(state.exposureTimer);
    const pair = $("pair");
    pair.classList.add("waiting");
    pair.classList.remove("masked");
    for (const side of ["left", "right"]) $(`choose-${side}`).classList.remove("picked", "real");
    $("feedback").textContent = "";
    $("continue").hidden = true;
    const r = await api("GET", `${API}/sessions/${encodeURIComponent(state.session.session_id)}/next`);
    if (r.done) return finish();
    state.trial = r.trial;
    state.session = Object.assign(state.session, r.session);
    setProgress(r.trial, r.session);
    // Both photos are decoded before either is shown: the response time starts when both are visible.
    await Promise.all([loadImage($("img-left"), r.trial.left), loadImage($("img-right"), r.trial.right)]);
    pair.classList.remove("waiting");
    state.shownAt = performance.now();
    state.accepting = true;
    preload(r.trial.position + 1);
    const exposure = state.info.exposure_ms;
    if (exposure > 0) state.exposureTimer = setTimeout(() => pair.classList.add("masked"), exposure);
  }

  async function answer(side) {
    if (!state.accepting || !state.trial) return;
    state.accepting = false;
    const rt = performance.now() - state.shownAt;
    const trial = state.trial;
    $(`choose-${side}`).classList.add("picked");
    // Scored trials: the pair disappears at once (the blank interval starts with the answer);
    // practice pairs stay up for the feedback.
    if (!trial.practice) $("pair").classList.add("waiting");
    let r;
    try {
      r = await api("POST", `${API}/sessions/${encodeURIComponent(state.session.session_id)}/answers`, {
        trial_id: trial.id,
        choice: side,
        rt_ms: Math.round(rt * 10) / 10,
      });
    } catch (e) {
      // Already answered (a second tab, a double submit): the server has it, move on.
      if (e.status === 409) return nextTrial().catch((err) => fail(err, nextTrial));
      throw e;
    }
    if (r.practice) return practiceFeedback(r, side);
    if (r.done) return finish();
    await new Promise((resolve) => setTimeout(resolve, BLANK_MS));
    return nextTrial();
  }

  function practiceFeedback(r, side) {
    const fb = r.feedback || {};
    let text;
    if (fb.real_side) {
      $(`choose-${fb.real_side}`).classList.add("real");
      text = (fb.correct ? "Right: " : "Not this time: ") + `the real photo was the one on the ${fb.real_side} (outlined).`;
    } else {
      text = "Practice: there is no right answer; choose what looks more natural to you.";
    }
    const next = state.trials.find((x) => x.position === state.trial.position + 1);
    if (next && !next.practice) text += " The practice is over: from now on there is no feedback.";
    $("pair").classList.remove("masked");
    $("feedback").textContent = text;
    $("continue").hidden = false;
    $("continue").focus();
    state.afterFeedback = r.done ? finish : nextTrial;
  }

  function continueAfterFeedback() {
    const go = state.afterFeedback;
    if (!go) return;
    state.afterFeedback = null;
    $("continue").hidden = true;
    Promise.resolve(go()).catch((err) => fail(err, nextTrial));
  }

  function finish() {
    state.accepting = false;
    clearTimeout(state.exposureTimer);
    storage("del", storageKey());
    show("done");
  }

  document.addEventListener("keydown", (e) => {
    if (e.repeat || e.altKey || e.ctrlKey || e.metaKey) return;
    if ($("trial").hidden) return; // typing a participant code must not answer anything
    if (e.key === " " || e.key === "Enter") {
      // Space/Enter only ever continue after practice feedback; they must not "click" a photo
      // button that kept the focus after a mouse answer.
      e.preventDefault();
      if (state.afterFeedback) continueAfterFeedback();
      return;
    }
    let side = null;
    if (e.key === "ArrowLeft" || e.key === "f" || e.key === "F") side = "left";
    if (e.key === "ArrowRight" || e.key === "j" || e.key === "J") side = "right";
    if (side) {
      e.preventDefault();
      answer(side).catch((err) => fail(err, nextTrial));
    }
  });

  for (const side of ["left", "right"]) {
    $(`choose-${side}`).addEventListener("click", (e) => {
      e.currentTarget.blur();
      answer(side).catch((err) => fail(err, nextTrial));
    });
  }
  $("continue").addEventListener("click", continueAfterFeedback);
  $("start").addEventListener("click", () => start().catch((err) => fail(err, start)));
  $("retry").addEventListener("click", () => {
    const again = state.retry || init;
    show(again === init ? "loading" : "trial");
    again().catch((err) => fail(err, again));
  });

  init().catch((err) => fail(err, init));
})();
