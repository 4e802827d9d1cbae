// rtcbox test call: joins a throwaway room through the SFU's public URL with livekit-client and
// reports what the media did. Used by the verification page (a sender and a viewer in one page:
// the admin sees the test pattern come back through the SFU) and by the phone page (one
// participant with the camera, or the test pattern). Both show the same facts: the state ("media
// received" once video frames are decoded), the path the media takes (UDP, TCP or a TURN relay,
// from the selected ICE candidate pair), the round-trip time and the packet loss.
"use strict";

window.RtcboxTestCall = (() => {
  // Loads livekit-client (vendored, served by rtcbox) once.
  function loadClient(src) {
    if (window.LivekitClient) return Promise.resolve(window.LivekitClient);
    return new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = src;
      script.onload = () => resolve(window.LivekitClient);
      script.onerror = () => reject(new Error("livekit-client could not be loaded from " + src));
      document.head.append(script);
    });
  }

  // A moving test pattern (canvas) and a quiet 440 Hz tone (WebAudio): needs no camera, no
  // microphone and no permission.
  function testPattern(label) {
    const canvas = document.createElement("canvas");
    canvas.width = 640;
    canvas.height = 360;
    const g = canvas.getContext("2d");
    let frame = 0;
    const draw = () => {
      frame += 1;
      const hue = (frame * 2) % 360;
      g.fillStyle = `hsl(${hue} 60% 35%)`;
      g.fillRect(0, 0, canvas.width, canvas.height);
      g.fillStyle = "#fff";
      g.fillRect((frame * 6) % canvas.width, 0, 40, canvas.height);
      g.font = "bold 40px system-ui, sans-serif";
      g.fillText(label, 24, 64);
      g.font = "28px ui-monospace, monospace";
      g.fillText(new Date().toISOString().slice(11, 23), 24, canvas.height - 28);
    };
    draw();
    // A timer, not requestAnimationFrame: it keeps running in a background tab.
    const timer = setInterval(draw, 1000 / 30);
    const video = canvas.captureStream(30).getVideoTracks()[0];
    const AudioContext = window.AudioContext || window.webkitAudioContext;
    const audioContext = new AudioContext();
    const oscillator = audioContext.createOscillator();
    const gain = audioContext.createGain();
    const sink = audioContext.createMediaStreamDestination();
    oscillator.frequency.value = 440;
    gain.gain.value = 0.05;
    oscillator.connect(gain).connect(sink);
    oscillator.start();
    const audio = sink.stream.getAudioTracks()[0];
    return {
      video,
      audio,
      stop() {
        clearInterval(timer);
        video.stop();
        audio.stop();
        oscillator.stop();
        audioContext.close();
      },
    };
  }

  // The camera and microphone, when the browser allows them (a secure context and the user's
  // permission); null otherwise.
  async function camera() {
    if (!navigator.mediaDevices?.getUserMedia) return null;
    try {
      const stream = await navigator.mediaDevices.getUserMedia({
        video: { width: 640, height: 360 }, audio: true,
      });
      const [video] = stream.getVideoTracks();
      const [audio] = stream.getAudioTracks();
      return { video, audio, stop() { stream.getTracks().forEach((t) => t.stop()); } };
    } catch {
      return null;
    }
  }

  // What a received track's stats say: frames decoded, the path, the RTT and the loss.
  async function measure(tracks) {
    const out = { framesDecoded: 0, packetsReceived: 0, packetsLost: 0 };
    for (const track of tracks) {
      let report;
      try { report = await track.getRTCStatsReport(); } catch { continue; }
      if (!report) continue;
      let pair = null;
      report.forEach((s) => {
        if (s.type === "transport" && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId) ?? pair;
      });
      if (!pair) report.forEach((s) => { if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") pair = s; });
      report.forEach((s) => {
        if (s.type !== "inbound-rtp") return;
        out.framesDecoded += s.framesDecoded ?? 0;
        out.packetsReceived += s.packetsReceived ?? 0;
        out.packetsLost += Math.max(0, s.packetsLost ?? 0);
      });
      if (pair && !out.path) {
        const local = report.get(pair.localCandidateId) ?? {};
        const remote = report.get(pair.remoteCandidateId) ?? {};
        const where = remote.address ? ` to ${remote.address}:${remote.port}` : "";
        if (local.candidateType === "relay") {
          out.path = `TURN relay (${(local.relayProtocol ?? "udp").toUpperCase()})${where}`;
        } else if ((remote.protocol ?? local.protocol) === "tcp") {
          out.path = `TCP (ICE-TCP)${where}`;
        } else {
          out.path = `UDP${where}`;
        }
        if (typeof pair.currentRoundTripTime === "number") {
          out.rttMs = Math.round(pair.currentRoundTripTime * 1000);
        } else if (pair.responsesReceived > 0 && typeof pair.totalRoundTripTime === "number") {
          out.rttMs = Math.round((pair.totalRoundTripTime / pair.responsesReceived) * 1000);
        }
      }
    }
    const total = out.packetsReceived + out.packetsLost;
    out.lossPercent = total > 0 ? (100 * out.packetsLost) / total : null;
    out.received = out.framesDecoded > 0;
    return out;
  }

  // Writes a measurement into the elements of `panel` marked data-call="state|path|rtt|loss".
  function show(panel, facts) {
    const set = (name, text) => {
      const el = panel.querySelector(`[data-call="${name}"]`);
      if (el) el.textContent = text;
    };
    if (facts.state) set("state", facts.state);
    if (facts.path !== undefined) set("path", facts.path ?? "—");
    if (facts.rttMs !== undefined) set("rtt", facts.rttMs == null ? "—" : `${facts.rttMs} ms`);
    if (facts.lossPercent !== undefined) {
      set("loss", facts.lossPercent == null ? "—" : `${facts.lossPercent.toFixed(1)} % of ${facts.packets} packets`);
    }
  }

  function factsOf(m) {
    return {
      state: m.received ? "media received" : "waiting for media…",
      path: m.path ?? null,
      rttMs: m.rttMs ?? null,
      lossPercent: m.lossPercent,
      packets: m.packetsReceived + m.packetsLost,
    };
  }

  // Puts a received video track in `tiles` (one <figure> per participant).
  function attach(tiles, track, caption) {
    let figure = tiles.querySelector(`figure[data-who="${caption}"]`);
    if (!figure) {
      figure = document.createElement("figure");
      figure.dataset.who = caption;
      const label = document.createElement("figcaption");
      label.textContent = caption;
      figure.append(label);
      tiles.append(figure);
    }
    const element = track.attach();
    element.muted = true;
    element.playsInline = true;
    figure.prepend(element);
  }

  // Joins `url` with `token`, publishing `source` when given, subscribing when `tiles` is given
  // (each participant's video in a tile captioned `captions[identity]`, else the identity).
  // `onData(identity, bytes)` gets the test call's data messages; `relayOnly` allows only TURN
  // relay candidates. Returns the room and the
  // remote tracks by participant identity.
  async function join(LK, url, token, { source, tiles, captions = {}, onData, relayOnly = false } = {}) {
    // Two peer connections (LiveKit's v0 signaling, what rtcbox speaks) from the start: the
    // SDK's default first tries /rtc/v1 and falls back after a 404, which only adds noise here.
    const room = new LK.Room({ adaptiveStream: false, dynacast: false, singlePeerConnection: false });
    const remote = new Map();
    room.on(LK.RoomEvent.TrackSubscribed, (track, publication, participant) => {
      const who = participant.identity;
      if (!remote.has(who)) remote.set(who, []);
      remote.get(who).push(track);
      if (track.kind === "video" && tiles) attach(tiles, track, captions[who] ?? who);
      if (track.kind === "audio") track.attach();
    });
    if (onData) {
      room.on(LK.RoomEvent.DataReceived, (payload, participant, kind, topic) => {
        if (topic === "rtcbox-test-call") onData(participant?.identity, payload);
      });
    }
    // relayOnly: only rtcbox's TURN relay (the ICE servers the JoinResponse lists) may carry
    // the media, which tests TURN the way a caller behind a strict firewall uses it.
    await room.connect(url, token, {
      autoSubscribe: Boolean(tiles),
      ...(relayOnly ? { rtcConfig: { iceTransportPolicy: "relay" } } : {}),
    });
    if (source) {
      await room.localParticipant.publishTrack(source.video, { name: "test-video", source: LK.Track.Source.Camera, simulcast: false });
      if (source.audio) await room.localParticipant.publishTrack(source.audio, { name: "test-audio", source: LK.Track.Source.Microphone });
    }
    return { room, remote };
  }

  return { loadClient, testPattern, camera, measure, factsOf, show, join };
})();

// The phone's page (test-call.html on the public listener): its token is the link's fragment;
// the SFU is this page's own origin.
(() => {
  const panel = document.getElementById("phone-call");
  if (!panel) return;
  const T = window.RtcboxTestCall;
  const token = location.hash.slice(1);
  const base = location.pathname.replace(/\/test-call\/?$/, "");
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${base}`;
  const start = panel.querySelector("button");
  if (!token) {
    T.show(panel, { state: "This link has no test-call token. Scan the QR code on the verification page again." });
    start.hidden = true;
    return;
  }
  start.addEventListener("click", async () => {
    start.disabled = true;
    T.show(panel, { state: "connecting…" });
    try {
      const LK = await T.loadClient("test-call/livekit-client.umd.js");
      const source = (await T.camera()) ?? T.testPattern("phone");
      const { room, remote } = await T.join(LK, url, token, {
        source, tiles: panel.querySelector(".tiles"), captions: { "test-pattern": "the admin's test pattern" },
      });
      start.hidden = true;
      T.show(panel, { state: "connected, waiting for media…" });
      const timer = setInterval(async () => {
        const tracks = [...remote.values()].flat();
        const facts = T.factsOf(await T.measure(tracks));
        T.show(panel, facts);
        // The admin's page shows what the phone sees.
        const data = new TextEncoder().encode(JSON.stringify(facts));
        room.localParticipant.publishData(data, { reliable: true, topic: "rtcbox-test-call" }).catch(() => {});
      }, 1000);
      room.on(LK.RoomEvent.Disconnected, () => {
        clearInterval(timer);
        source.stop();
        T.show(panel, { state: "the call ended (the test room is gone or the link expired)" });
      });
    } catch (e) {
      T.show(panel, { state: `could not join: ${e.message}` });
      start.disabled = false;
    }
  });
})();
