// rtcbox admin panel: progressive enhancement only. Every page works without this file.
"use strict";

// Fields that matter only for one choice of a radio group or select ("mode=acme").
function updateConditionalFields() {
  document.querySelectorAll("[data-show-when]").forEach((el) => {
    const [name, value] = el.dataset.showWhen.split("=");
    const form = el.closest("form");
    if (!form) return;
    const control = form.elements[name];
    if (!control) return;
    const current = control instanceof RadioNodeList ? control.value : control.value;
    el.hidden = current !== value;
  });
}

// "Copy" buttons next to generated files.
function setUpCopyButtons() {
  if (!navigator.clipboard) return;
  document.querySelectorAll("button.copy").forEach((button) => {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const pre = document.getElementById(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(pre.innerText);
        const label = button.textContent;
        button.textContent = "Copied";
        setTimeout(() => { button.textContent = label; }, 1500);
      } catch {
        button.textContent = "Select the text and copy it";
      }
    });
  });
}

// The verification page: run the checks in place (the access token stays in its field) and
// show each result as it comes in. /verify/run answers with server-sent events whose data is
// HTML: "start" (every check, waiting), "check" (one finished check), "done" (every result, with
// the root causes several checks share). Without JavaScript the form posts to /verify and the
// page comes back with every result at once.
function setUpLiveChecks() {
  const form = document.getElementById("verify-form");
  if (!form) return;
  const results = () => document.getElementById("results");
  const say = (text) => { document.getElementById("check-status").textContent = text; };
  const fragment = (html) => {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content.firstElementChild;
  };
  const handle = (event, html) => {
    const element = fragment(html);
    if (!element) return;
    if (event === "start" || event === "done") {
      results().replaceWith(element);
    } else if (event === "check") {
      const placeholder = document.getElementById(element.id);
      if (placeholder) placeholder.replaceWith(element);
      else document.getElementById("checks").append(element);
      const waiting = document.querySelectorAll("#checks li.running").length;
      say(waiting ? `Running the checks… ${waiting} still running.` : "Grouping the results…");
    }
  };
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    say("Running the checks…");
    let finished = false;
    try {
      const response = await fetch("/verify/run", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "text/event-stream" },
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
      });
      if (!response.ok || !response.body) throw new Error("the panel answered " + response.status);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data.push(line.slice(6));
          }
          handle(name, data.join("\n"));
          if (name === "done") finished = true;
        }
      }
      if (!finished) throw new Error("the answer ended early");
    } catch (e) {
      say("The checks could not be run: " + e.message + ". Reload the page and try again.");
    } finally {
      button.disabled = false;
    }
  });
}

// The verification page's test call (test-call.js does the call): the server opens a
// throwaway room and hands out its tokens; a sender publishes a test pattern (or the camera),
// a hidden viewer in the same page receives it back through the SFU; a phone can join with the
// link or QR code and reports what it sees over the room's data channel.
function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new Error(src + " could not be loaded"));
    document.head.append(script);
  });
}

function setUpTestCall() {
  const start = document.getElementById("call-start");
  if (!start) return;
  const stop = document.getElementById("call-stop");
  const panel = document.getElementById("call-panel");
  const phone = document.getElementById("call-phone");
  const phoneFacts = document.getElementById("call-phone-facts");
  const csrf = document.querySelector("#verify-form input[name=csrf]").value;
  let call = null;
  const show = (facts) => window.RtcboxTestCall.show(panel, facts);
  const end = async (state) => {
    const current = call;
    call = null;
    if (current) {
      clearInterval(current.timer);
      await Promise.all(current.rooms.map((r) => r.disconnect().catch(() => {})));
      current.source.stop();
    }
    panel.querySelector(".tiles").replaceChildren();
    stop.hidden = true;
    start.disabled = false;
    if (state) show({ state });
  };
  stop.addEventListener("click", () => end("ended"));
  start.addEventListener("click", async () => {
    start.disabled = true;
    try {
      if (!window.RtcboxTestCall) await loadScript("/static/test-call.js");
      const T = window.RtcboxTestCall;
      T.show(panel, { state: "opening a test room…", path: null, rttMs: null, lossPercent: null });
      const response = await fetch("/verify/test-call", {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ csrf }),
        credentials: "same-origin",
      });
      const answer = await response.json().catch(() => ({ error: "the panel answered " + response.status }));
      if (!response.ok) throw new Error(answer.error ?? "the panel answered " + response.status);
      document.getElementById("call-qr").innerHTML = answer.phone_qr;
      const link = document.getElementById("call-link");
      link.href = answer.phone_link;
      link.textContent = answer.phone_link.split("#")[0] + " (with the test call's token)";
      phone.hidden = false;
      T.show(phoneFacts, { state: "not joined", path: null, rttMs: null, lossPercent: null });
      show({ state: "loading livekit-client…" });
      const LK = await T.loadClient("/static/vendor/livekit-client.umd.js");
      const wantsCamera = document.getElementById("call-camera").checked;
      const relayOnly = document.getElementById("call-relay").checked;
      const source = (wantsCamera && (await T.camera())) || T.testPattern("rtcbox test call");
      call = { rooms: [], source, timer: null };
      show({ state: `connecting to ${answer.url}…` });
      const viewer = await T.join(LK, answer.url, answer.viewer, {
        relayOnly,
        tiles: panel.querySelector(".tiles"),
        captions: { "test-pattern": "test pattern, back through the SFU", phone: "the phone" },
        onData: (who, payload) => {
          try { T.show(phoneFacts, JSON.parse(new TextDecoder().decode(payload))); } catch { /* not ours */ }
        },
      });
      call.rooms.push(viewer.room);
      const sender = await T.join(LK, answer.url, answer.sender, { source, relayOnly });
      call.rooms.push(sender.room);
      stop.hidden = false;
      show({ state: "connected, waiting for media…" });
      viewer.room.on(LK.RoomEvent.Disconnected, () => { if (call) end("the call ended: the SFU closed the connection"); });
      call.timer = setInterval(async () => {
        const facts = T.factsOf(await T.measure(viewer.remote.get("test-pattern") ?? []));
        if (call) show(facts);
      }, 1000);
    } catch (e) {
      await end();
      show({ state: "could not start: " + e.message });
    }
  });
}

// The phone menu (a <details>): Escape or a tap elsewhere closes it, as menus do.
function setUpMenu() {
  const menu = document.querySelector("details.nav-menu");
  if (!menu) return;
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && menu.open) {
      menu.open = false;
      menu.querySelector("summary").focus();
    }
  });
  document.addEventListener("click", (event) => {
    if (menu.open && !menu.contains(event.target)) menu.open = false;
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpMenu();
  updateConditionalFields();
  document.querySelectorAll("form").forEach((f) => f.addEventListener("change", updateConditionalFields));
  setUpCopyButtons();
  setUpLiveChecks();
  setUpTestCall();
});
